"""Outputs written whole or not at all (:class:`m3_memory.outputs.Staged`, :func:`write_atomic`)."""

import pytest

from m3_memory.outputs import Staged, write_atomic


def test_a_file_replaces_the_old_one_and_leaves_nothing_beside_it(tmp_path):
    out = tmp_path / "a.json"
    out.write_text("old")
    write_atomic(out, lambda tmp: tmp.write_text("new"))
    assert out.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_a_folder_replaces_the_old_one(tmp_path):
    out = tmp_path / "scene.m3"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with Staged(out) as tmp:
        tmp.mkdir()
        (tmp / "meta.json").write_text("{}")
    assert sorted(p.name for p in out.iterdir()) == ["meta.json"] and [p.name for p in tmp_path.iterdir()] == ["scene.m3"]


def test_a_failed_write_leaves_the_old_output_untouched(tmp_path):
    out = tmp_path / "scene.m3"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError, match="disk"):
        with Staged(out) as tmp:
            tmp.mkdir()
            (tmp / "half.ply").write_text("partial")
            raise RuntimeError("disk full")
    assert [p.name for p in out.iterdir()] == ["old.txt"] and [p.name for p in tmp_path.iterdir()] == ["scene.m3"]


def test_without_replace_an_existing_output_is_refused(tmp_path):
    out = tmp_path / "scan.bag"
    staging = Staged(out, replace=False)
    staging.tmp.mkdir()
    out.mkdir()  # appeared while writing
    (out / "other.db3").write_text("someone else's")
    with pytest.raises(FileExistsError):
        staging.commit()
    assert [p.name for p in out.iterdir()] == ["other.db3"] and [p.name for p in tmp_path.iterdir()] == ["scan.bag"]


def test_a_block_that_wrote_nothing_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing was written"):
        with Staged(tmp_path / "a.png"):
            pass
    assert list(tmp_path.iterdir()) == []
