"""The README's Python snippets run as written."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_snippets(section: str) -> list[str]:
    """The ```python blocks of the README section titled ``section``."""
    text = README.read_text()
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", body, flags=re.S)


def test_from_python_is_short():
    (snippet,) = python_snippets("From Python")
    assert len(snippet.strip().splitlines()) < 15


@pytest.mark.slow
def test_from_python_runs(tmp_path, monkeypatch, capsys):
    """Build, load, query and plan a grasp, exactly as the README shows."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("M3_CACHE", str(tmp_path / "cache"))
    namespace: dict = {}
    exec(compile(python_snippets("From Python")[0], "README.md", "exec"), namespace)
    assert namespace["duck"].found and namespace["plan"].found, capsys.readouterr().out
    assert (tmp_path / "py_demo" / "scene.m3" / "meta.json").is_file()
