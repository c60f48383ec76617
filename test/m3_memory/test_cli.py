"""The `m3` command: subcommands work, and bad input gives one line and exit code 2."""

import json
import subprocess
import sys

import pytest

from m3_memory.cli import main


def run_bad(capsys, argv, *words):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    for w in words:
        assert w in err
    return err


def test_inspect_path_that_does_not_exist(capsys, tmp_path):
    run_bad(capsys, ["inspect", str(tmp_path / "nope.bag")], "nope.bag", "does not exist")


def test_inspect_empty_folder(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    run_bad(capsys, ["inspect", str(tmp_path / "empty")], "empty", "empty folder")


def test_inspect_unknown_thing_lists_supported_formats(capsys, tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "notes.txt").write_text("hello")
    err = run_bad(capsys, ["inspect", str(tmp_path / "x")], "not a recognised recording")
    for name in ("realsense", "rosbag2", "3dmatch", "apc2016", "nerfstudio", "colmap"):
        assert name in err


def test_inspect_unknown_format_name(capsys, synth):
    run_bad(capsys, ["inspect", str(synth.folder), "--format", "kinect"], "kinect", "unknown recording format")


def test_inspect_corrupt_json(capsys, tmp_path, synth):
    folder = tmp_path / "scene"
    folder.mkdir()
    text = (synth.folder / "transforms.json").read_text()
    (folder / "transforms.json").write_text(text[: len(text) // 2])
    run_bad(capsys, ["inspect", str(folder)], "transforms.json")


def test_inspect_truncated_png(capsys, tmp_path, synth):
    import shutil

    folder = tmp_path / "scene"
    shutil.copytree(synth.folder, folder)
    png = folder / "images" / "frame_00002.png"
    png.write_bytes(png.read_bytes()[:300])
    run_bad(capsys, ["inspect", str(folder), "--sheet", str(tmp_path / "s.png")], "frame_00002.png")
    assert not (tmp_path / "s.png").exists()  # no half-written output


def test_inspect_nan_pose(capsys, tmp_path, synth):
    import shutil

    folder = tmp_path / "scene"
    shutil.copytree(synth.folder, folder)
    meta = json.loads((folder / "transforms.json").read_text())
    meta["frames"][1]["transform_matrix"][0][3] = float("nan")
    (folder / "transforms.json").write_text(json.dumps(meta))
    run_bad(capsys, ["inspect", str(folder), "--sheet", str(tmp_path / "s.png")], "scene", "NaN")


def test_inspect_truncated_db3(capsys, tmp_path, synth):
    cut = tmp_path / "cut.db3"
    cut.write_bytes(synth.realsense.read_bytes()[:50_000])
    run_bad(capsys, ["inspect", str(cut)], "cut.db3")


@pytest.mark.parametrize("which", ["folder", "realsense", "rosbag2"])
def test_inspect_synthetic_copies(capsys, tmp_path, synth, which):
    path = getattr(synth, which)
    sheet = tmp_path / "sheet.png"
    assert main(["inspect", str(path), "--sheet", str(sheet), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["frames"] == 10 and summary["resolution"] == [160, 120]
    assert summary["frames_with_pose"] == 10
    assert 0.6 < summary["depth_valid_fraction"] < 0.95  # the sky above the horizon has no depth
    if which == "folder":
        assert "yellow bath duck" in summary["objects"]
    from PIL import Image

    assert Image.open(sheet).size[0] > 400


def test_synth_writes_every_copy(tmp_path, capsys):
    assert main(["synth", str(tmp_path / "s"), "--frames", "3", "--width", "64", "--height", "48"]) == 0
    out = capsys.readouterr().out
    assert "scene_realsense.db3" in out and "scene_rosbag2" in out
    assert (tmp_path / "s" / "scene" / "transforms.json").exists()


def test_synth_rejects_bad_sizes(capsys, tmp_path):
    run_bad(capsys, ["synth", str(tmp_path / "s"), "--frames", "1"], "--frames")


def test_debug_flag_shows_traceback(capsys, tmp_path):
    assert main(["--debug", "inspect", str(tmp_path / "nope")]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_console_script_exit_code(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "m3_memory.cli", "inspect", str(tmp_path / "missing.db3")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("m3: error:") and "missing.db3" in proc.stderr


@pytest.mark.slow
def test_demo_end_to_end(tmp_path, capsys):
    """The README's demo as a user runs it (48 frames, the fast preset): a shortened demo of
    8-12 frames and 150 iterations no longer reliably finds and grasps the duck."""
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert out.count("identical") == 2
    assert len(list((tmp_path / "demo" / "sheets").glob("*.png"))) == 3
    assert "principal scene components" in out and (tmp_path / "demo" / "features" / "features_clip.png").exists()
    assert (tmp_path / "demo" / "tabletop.m3" / "report" / "heldout.png").exists()
    assert "found 'yellow bath duck'" in out and (tmp_path / "demo" / "query" / "heatmap.png").exists()
    assert (tmp_path / "demo" / "grasp" / "sim.png").exists() and "demo finished" in out


@pytest.mark.parametrize("relpath, fmt, frames, options", [
    ("librealsense_d435_bag/single_depth_color_640x480.bag", "realsense", 1, ["--max-dt", "0.3"]),
    ("apc2016_realsense_shelf/data/sample/scene-0000", "apc2016", 15, []),
    ("nvblox_3dmatch_sun3d/nvblox/tests/data/3dmatch", "3dmatch", 5, []),
])
def test_inspect_every_real_recording(capsys, tmp_path, realdata, relpath, fmt, frames, options):
    sheet = tmp_path / "sheet.png"
    assert main(["inspect", str(realdata / relpath), "--sheet", str(sheet), "--json", *options]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["format"] == fmt and summary["frames"] == frames
    assert summary["resolution"] == [640, 480]
    assert sheet.stat().st_size > 10_000


def test_help_imports_no_heavy_library():
    """``m3 --help`` and ``m3 <cmd> --help`` build the whole parser without torch, open3d,
    open_clip or numpy (each costs seconds on a loaded robot computer)."""
    code = ("import sys\nfrom m3_memory.cli import build_parser\nbuild_parser()\nimport m3_memory\n"
            "print(sorted(m for m in ('torch', 'open3d', 'open_clip', 'numpy', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_version(capsys):
    from m3_memory import __version__

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"m3 {__version__}"


def test_global_options_after_the_subcommand(capsys, tmp_path):
    assert main(["inspect", str(tmp_path / "nope"), "--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err
    assert main(["--debug", "inspect", str(tmp_path / "nope"), "--quiet"]) == 2  # given before, kept
    assert "Traceback" in capsys.readouterr().err


def test_help_documents_the_exit_codes():
    out = subprocess.run([sys.executable, "-m", "m3_memory.cli", "build", "--help"], capture_output=True, text=True,
                         check=True).stdout
    assert "3 build failed" in " ".join(out.split()) and "--verbose" in out and "--quiet" in out


@pytest.mark.slow
def test_redirected_fast_build_logs_progress(tmp_path, synth):
    """A fast build with stderr in a file (no terminal) says how each long stage goes (reading,
    features, training with the loss) and, on a machine without CUDA, once that auto chose the CPU."""
    import torch

    log = tmp_path / "build.log"
    with log.open("w") as f:
        done = subprocess.run([sys.executable, "-m", "m3_memory.cli", "build", str(synth.folder), "--model", "clip-fixture",
                               "--fast", "--iterations", "30", "--out", str(tmp_path / "scene.m3")], stdout=f, stderr=f,
                              env={**__import__("os").environ, "M3_PROGRESS_EVERY_S": "0", "M3_CACHE": str(tmp_path)})
    text = log.read_text()
    assert done.returncode == 0, text
    lines = [line for line in text.splitlines() if line.startswith("m3: training: ")]
    assert lines and all("loss" in line for line in lines), text
    assert lines[-1].startswith("m3: training: 30/30 it (100%)")
    for stage in (f"read {synth.folder.name}: 10/10 frame", "features clip: 10/10 frame"):
        assert f"m3: {stage} (100%)" in text, text
    assert text.count("--device auto computes on the CPU") == (not torch.cuda.is_available()), text


def test_doctor_reports_the_environment(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("M3_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", "no-such-compiler")
    import m3_memory.render.cpu as cpu

    cpu.library.cache_clear()
    try:
        assert main(["doctor"]) == 0
    finally:
        cpu.library.cache_clear()
    out = capsys.readouterr().out
    for what in ("C++ compiler", "CUDA", "gsplat", "ROS 2", "RealSense", "weights clip", "feature cache"):
        assert what in out
    assert "no-such-compiler not on PATH" in out and "reference rasterizer" in out and str(tmp_path) in out


def test_synth_room_preset(capsys, tmp_path):
    code = main(["synth", str(tmp_path / "room"), "--preset", "room", "--tables", "2", "--frames", "6", "--width", "32",
                 "--height", "24", "--no-realsense", "--no-rosbag2"])
    assert code == 0 and "synthetic room scene of 2 tables, 6 frames 32x24" in capsys.readouterr().out
    meta = json.loads((tmp_path / "room" / "scene" / "transforms.json").read_text())
    assert len(meta["frames"]) == 6 and meta["m3_synth_config"]["preset"] == "room"
    assert any("(table 2)" in o["name"] for o in meta["m3_objects"])
    run_bad(capsys, ["synth", str(tmp_path / "r2"), "--preset", "room", "--tables", "0"], "--tables", "must be 1 to 40")
    assert not (tmp_path / "r2").exists()
