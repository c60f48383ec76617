"""Builds that cannot clobber each other or lose their work: exclusive outputs, full disks,
a memory that appears during the build, kill -9 and --resume."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from memories import TINY_BUILD

import m3_memory.memory.artifact as artifact
import m3_memory.training.build as build
from m3_memory.cli import main
from m3_memory.errors import EXIT_BUILD_FAILED, BuildFailed, InputError
from m3_memory.memory.artifact import load_memory, save_memory
from m3_memory.outputs import lock_path
from m3_memory.training.build import build_memory, checkpoint_path
from m3_memory.training.config import TrainConfig

REPO = Path(__file__).resolve().parents[3]
QUICK = {**TINY_BUILD, "iterations": 4, "checkpoint_every": 2, "eval_every": 4, "densify_start": 100,
         "densify_stop": 100}  # a few iterations: what is tested here is the bookkeeping, not the quality


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """A feature cache shared by the builds of this module."""
    return tmp_path_factory.mktemp("cache")


def quick_build(recording, out, cache, **kwargs):
    return build_memory(recording, out, model="clip-fixture", config=TrainConfig.fast(**QUICK), cache_root=cache,
                        show_progress=False, **kwargs)


def leftovers(folder: Path) -> list[str]:
    """Temporaries, probes and locks in ``folder`` (hidden files and *.lock)."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") or p.name.endswith(".lock"))


def enospc(err_path: str = "") -> OSError:
    return OSError(errno.ENOSPC, "No space left on device", err_path or None)


def test_failed_checkpoint_write_removes_its_temporary_and_training_goes_on(synth, tmp_path, cache, monkeypatch, caplog):
    """A full disk during a checkpoint: a warning, no partial temporary, the build finishes. The
    recording is given relative and meta.json stores it absolute (m3 eval works from anywhere)."""
    real_save = build.torch.save
    names = []

    def full_disk(obj, f):
        names.append(Path(f"/proc/self/fd/{f.fileno()}").resolve().parent.name)  # the private folder beside it
        f.write(b"x" * 4096)  # a partial file, as a real full disk leaves
        raise enospc(f.name)

    monkeypatch.setattr(build.torch, "save", full_disk)
    monkeypatch.chdir(synth.folder.parent)
    out = tmp_path / "scene.m3"
    with caplog.at_level("WARNING", logger="m3"):
        report = quick_build(synth.folder.name, out, cache)
    monkeypatch.setattr(build.torch, "save", real_save)
    assert report.iterations == QUICK["iterations"] and out.is_dir()
    assert "checkpoint at iteration 2 not written (no space left on the device); training goes on" in caplog.text
    assert leftovers(tmp_path) == [] and not checkpoint_path(out).exists()
    assert all(n.startswith(f".scene.m3.ckpt.{os.getpid()}.") and n.endswith(".tmp") for n in names)  # unique per process
    assert load_memory(out).source == str(synth.folder.resolve())


def test_failed_final_write_keeps_the_checkpoint_and_says_how_to_resume(synth, tmp_path, cache, monkeypatch, capsys):
    out = tmp_path / "scene.m3"
    real_write_ply = artifact.write_ply

    def full_disk(path, gaussians):
        Path(path).write_bytes(b"ply\n" + b"\0" * 4096)
        raise enospc(str(path))

    monkeypatch.setattr(artifact, "write_ply", full_disk)
    code = main(["build", str(synth.folder), "--model", "clip-fixture", "--fast", "--iterations", "3", "--out", str(out),
                 "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == EXIT_BUILD_FAILED and len(err.splitlines()) == 1, err
    assert err.startswith(f"m3: error: {out}: the memory could not be written (no space left on the device); training "
                          f"is kept in {checkpoint_path(out)} (iteration 3): fix that and run again with --resume")
    assert not out.exists() and checkpoint_path(out).is_file() and leftovers(tmp_path) == []
    monkeypatch.setattr(artifact, "write_ply", real_write_ply)
    code = main(["build", str(synth.folder), "--model", "clip-fixture", "--fast", "--iterations", "3", "--out", str(out),
                 "--resume"])
    assert code == 0 and load_memory(out).training["iterations"] == 3
    assert not checkpoint_path(out).exists() and leftovers(tmp_path) == []


def test_a_memory_that_appears_during_the_build_is_not_replaced(synth, built_memory, tmp_path, cache):
    out = tmp_path / "scene.m3"

    def appear(stage, fraction, message):
        if stage == "write" and not out.exists():
            shutil.copytree(built_memory[0], out)  # another process wrote it meanwhile

    with pytest.raises(BuildFailed, match="another memory appeared there during the build and was not replaced") as err:
        quick_build(synth.folder, out, cache, progress=appear)
    assert err.value.exit_code == EXIT_BUILD_FAILED and "--resume" in str(err.value)
    assert load_memory(out).training == load_memory(built_memory[0]).training  # untouched
    assert checkpoint_path(out).is_file()
    report = quick_build(synth.folder, out, cache, resume=True, overwrite=True)  # asked for: replaced
    assert load_memory(out).training["iterations"] == report.iterations == QUICK["iterations"]
    assert leftovers(tmp_path) == []


def test_save_memory_refuses_to_replace_unless_asked(built_memory, tmp_path):
    memory = load_memory(built_memory[0])
    out = save_memory(tmp_path / "a.m3", memory)
    with pytest.raises(FileExistsError):
        save_memory(out, memory, replace=False)
    save_memory(out, memory, replace=True)
    assert leftovers(tmp_path) == []


def test_two_concurrent_builds_on_one_out_cannot_both_succeed(synth, tmp_path, cache):
    """The second build refuses at start, naming the first one's PID, while the first runs on."""
    out = tmp_path / "scene.m3"
    training, second_tried = threading.Event(), threading.Event()
    outcome: dict[str, object] = {}

    def hold(stage, fraction, message):
        if stage == "train":
            training.set()
            second_tried.wait(60)

    def first():
        try:
            outcome["first"] = quick_build(synth.folder, out, cache, progress=hold)
        except BaseException as err:  # noqa: BLE001 - asserted below
            outcome["first"] = err

    thread = threading.Thread(target=first)
    thread.start()
    assert training.wait(120)
    try:
        with pytest.raises(InputError, match=rf"another build \(PID {os.getpid()}\) is writing it"):
            quick_build(synth.folder, out, cache)
    finally:
        second_tried.set()
        thread.join()
    assert not isinstance(outcome["first"], BaseException), outcome["first"]
    assert out.is_dir() and not lock_path(out).exists()


@pytest.mark.slow
def test_kill_9_then_resume(synth, built_memory, tmp_path, cache, caplog):
    """kill -9 mid-build leaves a lock and temporaries behind; --resume takes the lock over with
    a warning, removes what the dead build left and finishes with the quality of the same build
    never interrupted (``built_memory``: the same options; checkpoint_every changes no training)."""
    out = tmp_path / "scene.m3"
    config = {**TINY_BUILD, "checkpoint_every": 5}
    script = (f"from m3_memory.training.build import build_memory\nfrom m3_memory.training.config import TrainConfig\n"
              f"build_memory({str(synth.folder)!r}, {str(out)!r}, model='clip-fixture', show_progress=False, "
              f"config=TrainConfig.fast(**{config!r}), cache_root={str(cache)!r})\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    deadline = time.monotonic() + 600
    while not checkpoint_path(out).is_file():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert lock_path(out).read_text().strip() == str(proc.pid) and not out.exists()
    (tmp_path / f".scene.m3.ckpt.{proc.pid}.abc.tmp").write_bytes(b"partial")  # as a kill during a checkpoint leaves
    with caplog.at_level("WARNING", logger="m3"):
        resumed = build_memory(synth.folder, out, model="clip-fixture", config=TrainConfig.fast(**config),
                               cache_root=cache, show_progress=False, resume=True)
    assert f"PID {proc.pid}, which is no longer running" in caplog.text
    assert resumed.iterations == TINY_BUILD["iterations"] and leftovers(tmp_path) == []
    assert abs(resumed.final["psnr"] - built_memory[1].final["psnr"]) < 1.0
