"""Without ``--out`` (``--sheet``) every command writes beside its input and prints where; nothing
appears in the working directory."""

import shutil

import pytest

from m3_memory.cli import main
from m3_memory.outputs import beside

COMMANDS = {  # argv (REC: the recording, MEM: the memory) -> what appears beside the input
    "inspect": (["inspect", "REC"], "REC", "sheet.png"),
    "features": (["features", "REC", "--model", "clip-fixture", "--device", "cpu"], "REC", "features"),
    "query": (["query", "MEM", "yellow bath duck", "--view", "0", "--device", "cpu"], "MEM", "query"),
    "eval": (["eval", "MEM", "--device", "cpu"], "MEM", "eval"),
    "grasp": (["grasp", "MEM", "yellow bath duck", "--backend", "sim", "--no-gif", "--device", "cpu"], "MEM", "grasp"),
}


def test_beside_names_the_output_after_the_input(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert beside("scene.m3", "query") == tmp_path / "scene_query"
    assert beside("data/scan.bag/", "sheet", ".png") == tmp_path / "data" / "scan_sheet.png"
    assert beside(".", "features") == tmp_path.parent / f"{tmp_path.name}_features"  # never into the folder itself


@pytest.mark.slow
@pytest.mark.parametrize("name", list(COMMANDS))
def test_default_output_is_beside_the_input_not_in_the_working_directory(name, synth, built_memory, tmp_path,
                                                                          capsys, monkeypatch):
    argv, source, what = COMMANDS[name]
    inputs = {"REC": tmp_path / "data" / synth.folder.name, "MEM": tmp_path / "memories" / "scene.m3"}
    shutil.copytree(synth.folder, inputs["REC"])
    shutil.copytree(built_memory[0], inputs["MEM"])
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    code = main([str(inputs[a]) if a in inputs else a for a in argv])
    out = capsys.readouterr().out
    assert code in (0, 1), out  # 1: ran, nothing found or no grasp (like grep)
    assert list(cwd.iterdir()) == []
    stem, _, suffix = what.partition(".")
    expected = beside(inputs[source], stem, f".{suffix}" if suffix else "")
    assert expected.exists() and str(expected) in out, out


def test_view_saves_beside_the_memory(built_memory, tmp_path, capsys, monkeypatch):
    """``m3 view`` (its server stubbed: viser is optional) checks and prints the folder "save"
    writes into, beside the memory."""
    import types

    import m3_memory.view.cli as view_cli

    memory = tmp_path / "memories" / "scene.m3"
    shutil.copytree(built_memory[0], memory)
    seen = {}

    class Viewer:  # what cmd_view uses of m3_memory.view.app.Viewer
        url = "http://127.0.0.1:0"
        server = types.SimpleNamespace(stop=lambda: None)

        def __init__(self, session, host, port, out, robot=False):
            seen["out"] = out

    def interrupt(seconds):
        raise KeyboardInterrupt

    monkeypatch.setitem(__import__("sys").modules, "m3_memory.view.app", types.SimpleNamespace(Viewer=Viewer))
    monkeypatch.setattr(view_cli, "_require", lambda module: None)
    monkeypatch.setattr(view_cli.time, "sleep", interrupt)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    assert main(["view", str(memory)]) == 130  # Ctrl-C ends it
    expected = str(beside(memory, "view"))
    assert seen["out"] == expected and f"'save' writes into {expected}" in capsys.readouterr().out
    assert list(cwd.iterdir()) == []
