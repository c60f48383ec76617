"""The bad-input catalogue: every command, every bad input or fault we know of.

Each case runs ``m3`` in-process and asserts the exit code of the taxonomy
(:mod:`m3_memory.errors`), exactly one line on stderr naming the input and the problem, and no
partial output: no file appears anywhere under the case's folders (no output, temporary, probe
or lock file). Faults that need a real process (SIGTERM, kill -9) run ``m3`` as a subprocess.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from m3_memory.cli import main
from m3_memory.errors import (
    EXIT_BAD_INPUT,
    EXIT_BUILD_FAILED,
    EXIT_INTERRUPTED,
    EXIT_MISSING_DEPENDENCY,
    EXIT_SAFETY_REFUSAL,
    EXIT_TERMINATED,
)
from m3_memory.outputs import OutputLock, lock_path

REPO = Path(__file__).resolve().parents[1]
UNWRITABLE = Path("/sys/m3-catalogue")  # sysfs refuses new files even to root (chmod does not stop root)


@dataclass
class Ctx:
    """The inputs of the catalogue, made once: ``root`` holds everything a case may write into."""

    root: Path
    scene: Path  # the small synthetic scan (nerfstudio folder)
    memory: Path  # a memory built from it with the fixture CLIP
    files: dict[str, Path] = field(default_factory=dict)

    def __getitem__(self, name: str) -> str:
        return str(self.files[name])

    def out(self, name: str) -> str:
        """An output path under ``root`` that does not exist."""
        return str(self.root / "out" / name)


def _scene_variant(ctx_root: Path, scene: Path, name: str, edit: Callable[[Path, dict], None]) -> Path:
    """A copy of the synthetic scan with ``edit(folder, transforms)`` applied."""
    folder = ctx_root / name
    shutil.copytree(scene, folder)
    meta = json.loads((folder / "transforms.json").read_text())
    edit(folder, meta)
    (folder / "transforms.json").write_text(json.dumps(meta))
    return folder


def _eight_bit_depth(folder: Path, meta: dict) -> None:
    meta.pop("depth_unit_scale_factor")
    for png in (folder / "depth").glob("*.png"):
        mm = np.asarray(Image.open(png))
        Image.fromarray(np.clip(mm // 10, 0, 255).astype(np.uint8)).save(png)  # centimetres in 8 bits


def _zero_depth(folder: Path, meta: dict) -> None:
    for png in (folder / "depth").glob("*.png"):
        Image.fromarray(np.zeros_like(np.asarray(Image.open(png)))).save(png)


def _other_resolution(folder: Path, meta: dict) -> None:
    meta.update(fl_x=692.8, fl_y=692.8, cx=400.0, cy=300.0)  # the intrinsics of an 800 x 600 image


def _corrupt_memory(root: Path, memory: Path, name: str, edit: Callable[[Path], None]) -> Path:
    copy = root / name
    shutil.copytree(memory, copy)
    edit(copy)
    return copy


def _flip_byte(m: Path) -> None:
    with open(m / "gaussians.ply", "r+b") as f:
        f.seek(-100, 2)
        byte = f.read(1)
        f.seek(-100, 2)
        f.write(bytes([byte[0] ^ 0xFF]))


def _version_99(m: Path) -> None:
    meta = json.loads((m / "meta.json").read_text())
    meta["version"] = 99
    (m / "meta.json").write_text(json.dumps(meta))


@pytest.fixture(scope="module")
def ctx(tmp_path_factory, synth, built_memory) -> Ctx:
    root = tmp_path_factory.mktemp("catalogue")
    c = Ctx(root, synth.folder, built_memory[0])
    f = c.files
    f["file"] = root / "a_file"
    f["file"].write_text("not a folder")
    f["empty"] = root / "empty_folder"
    f["empty"].mkdir()
    f["notes"] = root / "notes"
    f["notes"].mkdir()
    (f["notes"] / "notes.txt").write_text("hello")
    f["loop"] = root / "loop_a"
    os.symlink(root / "loop_b", root / "loop_a")
    os.symlink(root / "loop_a", root / "loop_b")
    f["dangling"] = root / "dangling"
    os.symlink(root / "nowhere", f["dangling"])
    f["garbage_weights"] = root / "garbage.safetensors"
    f["garbage_weights"].write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    f["garbage_bag"] = root / "garbage.bag"
    f["garbage_bag"].write_bytes(b"#ROSBAG V2.0\n" + bytes(2000))
    f["cut_db3"] = root / "cut.db3"
    f["cut_db3"].write_bytes(synth.realsense.read_bytes()[:50_000])
    f["garbage_ckpt_out"] = root / "resume.m3"
    (root / "resume.m3.ckpt").write_bytes(b"not a checkpoint")
    f["eight_bit"] = _scene_variant(root, synth.folder, "eight_bit", _eight_bit_depth)
    f["zero_depth"] = _scene_variant(root, synth.folder, "zero_depth", _zero_depth)
    f["other_resolution"] = _scene_variant(root, synth.folder, "other_resolution", _other_resolution)
    f["half_json"] = _scene_variant(root, synth.folder, "half_json", lambda folder, meta: None)
    text = (f["half_json"] / "transforms.json").read_text()
    (f["half_json"] / "transforms.json").write_text(text[: len(text) // 2])
    f["nan_pose"] = _scene_variant(root, synth.folder, "nan_pose", lambda folder, meta: meta["frames"][1][
        "transform_matrix"][0].__setitem__(3, float("nan")))
    f["bad_scale"] = _scene_variant(root, synth.folder, "bad_scale",
                                    lambda folder, meta: meta.update(depth_unit_scale_factor="cm"))
    f["cut_png"] = _scene_variant(root, synth.folder, "cut_png", lambda folder, meta: None)
    png = f["cut_png"] / "images" / "frame_00002.png"
    png.write_bytes(png.read_bytes()[:300])
    f["flipped"] = _corrupt_memory(root, built_memory[0], "flipped.m3", _flip_byte)
    f["no_meta"] = _corrupt_memory(root, built_memory[0], "no_meta.m3", lambda m: (m / "meta.json").unlink())
    f["garbage_meta"] = _corrupt_memory(root, built_memory[0], "garbage_meta.m3",
                                        lambda m: (m / "meta.json").write_text("{garbage"))
    f["v99"] = _corrupt_memory(root, built_memory[0], "v99.m3", _version_99)
    f["no_tensors"] = _corrupt_memory(root, built_memory[0], "no_tensors.m3",
                                      lambda m: (m / "memory.safetensors").unlink())
    f["truncated_ply"] = _corrupt_memory(root, built_memory[0], "truncated.m3", lambda m: (m / "gaussians.ply").write_bytes(
        (m / "gaussians.ply").read_bytes()[:5000]))
    f["depth8"] = root / "depth8.png"
    Image.fromarray(np.full((120, 160), 80, np.uint8)).save(f["depth8"])
    f["pose_garbage"] = root / "pose.json"
    f["pose_garbage"].write_text("{not json")
    f["points_garbage"] = root / "points.ply"
    f["points_garbage"].write_text("ply\nthis is not a point cloud\n")
    f["points"] = root / "duck.xyz"
    f["points"].write_text("\n".join("0.05 0.02 0.81" for _ in range(10)))
    f["log_dir"] = root / "log_dir"
    f["log_dir"].mkdir()
    return c


@dataclass(frozen=True)
class Case:
    """One bad input: ``argv(ctx)`` must exit ``code`` with one stderr line containing
    ``names(ctx)`` (the input) and ``words`` (the problem)."""

    id: str
    argv: Callable[[Ctx], list[str]]
    code: int
    names: Callable[[Ctx], str]
    words: str


def C(id: str, argv: Callable[[Ctx], list[str]], names: Callable[[Ctx], str], words: str, code: int = EXIT_BAD_INPUT):
    return pytest.param(Case(id, argv, code, names, words), id=id)


BUILD = ["build", "--model", "clip-fixture", "--fast", "--iterations", "2"]
TARGET = ["--target", "0.05,0.02,0.81"]

CASES = [
    # m3 inspect
    C("inspect-missing", lambda c: ["inspect", c.out("nope.bag")], lambda c: c.out("nope.bag"), "does not exist"),
    C("inspect-empty-folder", lambda c: ["inspect", c["empty"]], lambda c: c["empty"], "empty folder"),
    C("inspect-unknown-thing", lambda c: ["inspect", c["notes"]], lambda c: c["notes"], "not a recognised recording"),
    C("inspect-unknown-format", lambda c: ["inspect", str(c.scene), "--format", "kinect"], lambda c: "kinect",
      "unknown recording format"),
    C("inspect-half-json", lambda c: ["inspect", c["half_json"]], lambda c: "transforms.json", "corrupt"),
    C("inspect-truncated-png", lambda c: ["inspect", c["cut_png"], "--sheet", c.out("s.png")],
      lambda c: "frame_00002.png", "truncated"),
    C("inspect-nan-pose", lambda c: ["inspect", c["nan_pose"], "--sheet", c.out("s.png")], lambda c: c["nan_pose"], "NaN"),
    C("inspect-bad-depth-scale", lambda c: ["inspect", c["bad_scale"]], lambda c: "depth_unit_scale_factor", "cm"),
    C("inspect-truncated-db3", lambda c: ["inspect", c["cut_db3"]], lambda c: c["cut_db3"], ""),
    C("inspect-garbage-bag", lambda c: ["inspect", c["garbage_bag"]], lambda c: c["garbage_bag"], ""),
    C("inspect-symlink-loop", lambda c: ["inspect", c["loop"]], lambda c: c["loop"], "symbolic link loop"),
    C("inspect-dangling-link", lambda c: ["inspect", c["dangling"]], lambda c: c["dangling"], "broken symbolic link"),
    C("inspect-sheet-is-folder", lambda c: ["inspect", str(c.scene), "--sheet", c["empty"]], lambda c: c["empty"],
      "is a folder, expected a file"),
    C("inspect-sheet-under-file", lambda c: ["inspect", str(c.scene), "--sheet", c["file"] + "/s.png"],
      lambda c: c["file"], "is a file"),
    C("inspect-sheet-unwritable", lambda c: ["inspect", str(c.scene), "--sheet", str(UNWRITABLE / "s.png")],
      lambda c: str(UNWRITABLE), "cannot be written"),
    C("inspect-8-bit-depth", lambda c: ["inspect", c["eight_bit"], "--sheet", c.out("s.png")], lambda c: "frame_00000.png",
      "8-bit depth"),
    C("log-file-unwritable", lambda c: ["--log", str(UNWRITABLE / "m3.log"), "inspect", str(c.scene)],
      lambda c: str(UNWRITABLE), "log file cannot be written"),
    C("log-file-is-folder", lambda c: ["--log", c["log_dir"], "inspect", str(c.scene)], lambda c: c["log_dir"],
      "log file cannot be written"),
    # m3 synth
    C("synth-one-frame", lambda c: ["synth", c.out("synth"), "--frames", "1"], lambda c: "m3 synth", "--frames >= 2"),
    C("synth-out-is-file", lambda c: ["synth", c["file"]], lambda c: c["file"], "is a file, expected a folder"),
    C("synth-out-unwritable", lambda c: ["synth", str(UNWRITABLE)], lambda c: str(UNWRITABLE), "cannot be written"),
    # m3 demo
    C("demo-out-is-file", lambda c: ["demo", "--out", c["file"]], lambda c: c["file"], "is a file, expected a folder"),
    # m3 features
    C("features-unknown-model", lambda c: ["features", str(c.scene), "--model", "clipp", "--out", c.out("f")],
      lambda c: "clipp", "unknown foundation model"),
    C("features-garbage-weights", lambda c: ["features", str(c.scene), "--model", "clip-fixture", "--weights",
                                             c["garbage_weights"], "--out", c.out("f")],
      lambda c: c["garbage_weights"], "cannot load"),
    C("features-missing-weights", lambda c: ["features", str(c.scene), "--model", "clip-fixture", "--weights",
                                             c.out("w.safetensors"), "--out", c.out("f")],
      lambda c: c.out("w.safetensors"), "weights file does not exist"),
    C("features-out-is-file", lambda c: ["features", str(c.scene), "--model", "clip-fixture", "--out", c["file"]],
      lambda c: c["file"], "is a file, expected a folder"),
    C("features-test-every-one", lambda c: ["features", str(c.scene), "--model", "clip-fixture", "--test-every", "1",
                                            "--out", c.out("f")], lambda c: "--test-every", "must be >= 2"),
    C("features-missing-recording", lambda c: ["features", c.out("none"), "--model", "clip-fixture", "--out", c.out("f")],
      lambda c: c.out("none"), "does not exist"),
    # m3 build
    C("build-out-exists", lambda c: [*BUILD, str(c.scene), "--out", str(c.memory)], lambda c: str(c.memory),
      "exists; pass --overwrite"),
    C("build-out-is-file", lambda c: [*BUILD, str(c.scene), "--out", c["file"]], lambda c: c["file"], "is a file"),
    C("build-out-unwritable", lambda c: [*BUILD, str(c.scene), "--out", str(UNWRITABLE / "m.m3")],
      lambda c: str(UNWRITABLE), "cannot be written"),
    C("build-out-under-file", lambda c: [*BUILD, str(c.scene), "--out", c["file"] + "/m.m3"], lambda c: c["file"],
      "is a file"),
    C("build-unknown-model", lambda c: [*BUILD, str(c.scene), "--model", "clip,dinov3", "--out", c.out("m.m3")],
      lambda c: "--model", "unknown foundation model dinov3"),
    C("build-no-model", lambda c: [*BUILD, str(c.scene), "--model", ",", "--out", c.out("m.m3")], lambda c: "--model",
      "no model named"),
    C("build-weights-two-models", lambda c: [*BUILD, str(c.scene), "--model", "clip-fixture,dinov2", "--weights",
                                             c["garbage_weights"], "--out", c.out("m.m3")], lambda c: "--weights",
      "several models"),
    C("build-missing-weights", lambda c: [*BUILD, str(c.scene), "--weights", c.out("w.safetensors"), "--out",
                                          c.out("m.m3")], lambda c: c.out("w.safetensors"), "weights file does not exist"),
    C("build-garbage-weights", lambda c: [*BUILD, str(c.scene), "--weights", c["garbage_weights"], "--out", c.out("m.m3")],
      lambda c: c["garbage_weights"], "header too large"),
    C("build-missing-recording", lambda c: [*BUILD, c.out("none"), "--out", c.out("m.m3")], lambda c: c.out("none"),
      "does not exist"),
    C("build-recording-loop", lambda c: [*BUILD, c["loop"], "--out", c.out("m.m3")], lambda c: c["loop"],
      "symbolic link loop"),
    C("build-bad-robot-pose", lambda c: [*BUILD, str(c.scene), "--robot-pose", "1,2", "--out", c.out("m.m3")],
      lambda c: "--robot-pose", "four finite numbers"),
    C("build-resume-nothing", lambda c: [*BUILD, str(c.scene), "--resume", "--out", c.out("m.m3")],
      lambda c: c.out("m.m3.ckpt"), "no checkpoint to resume from"),
    C("build-resume-garbage", lambda c: [*BUILD, str(c.scene), "--resume", "--out", c["garbage_ckpt_out"]],
      lambda c: c["garbage_ckpt_out"] + ".ckpt", "checkpoint cannot be read"),
    C("build-unknown-format", lambda c: [*BUILD, str(c.scene), "--format", "kinect", "--out", c.out("m.m3")],
      lambda c: "kinect", "unknown recording format"),
    C("build-8-bit-depth", lambda c: [*BUILD, c["eight_bit"], "--out", c.out("m.m3")], lambda c: "frame_00000.png",
      "8-bit depth"),
    C("build-all-zero-depth", lambda c: [*BUILD, c["zero_depth"], "--out", c.out("m.m3")], lambda c: c["zero_depth"],
      "no usable frames"),
    C("build-intrinsics-other-size", lambda c: [*BUILD, c["other_resolution"], "--out", c.out("m.m3")],
      lambda c: c["other_resolution"], "another resolution"),
    C("build-zero-iterations", lambda c: ["build", str(c.scene), "--model", "clip-fixture", "--iterations", "0", "--out",
                                          c.out("m.m3")], lambda c: "iterations", ""),
    C("build-zero-processes", lambda c: [*BUILD, str(c.scene), "--nproc", "0", "--out", c.out("m.m3")],
      lambda c: "--nproc", "at least one process"),
    C("build-views-per-iteration-negative", lambda c: [*BUILD, str(c.scene), "--train.views-per-iteration", "-1",
                                                      "--out", c.out("m.m3")], lambda c: "views_per_iteration",
      "invalid value"),
    # m3 query
    C("query-missing-memory", lambda c: ["query", c.out("none.m3"), "duck", "--out", c.out("q")],
      lambda c: c.out("none.m3"), "does not exist"),
    C("query-memory-loop", lambda c: ["query", c["loop"], "duck", "--out", c.out("q")], lambda c: c["loop"],
      "symbolic link loop"),
    C("query-memory-is-file", lambda c: ["query", c["file"], "duck", "--out", c.out("q")], lambda c: c["file"],
      "not a *.m3 memory"),
    C("query-flipped-byte", lambda c: ["query", c["flipped"], "duck", "--out", c.out("q")], lambda c: "gaussians.ply",
      "checksum mismatch"),
    C("query-truncated-ply", lambda c: ["query", c["truncated_ply"], "duck", "--out", c.out("q")],
      lambda c: "gaussians.ply", "checksum mismatch"),
    C("query-no-meta", lambda c: ["query", c["no_meta"], "duck", "--out", c.out("q")], lambda c: c["no_meta"],
      "meta.json is missing"),
    C("query-garbage-meta", lambda c: ["query", c["garbage_meta"], "duck", "--out", c.out("q")], lambda c: "meta.json",
      "corrupt JSON"),
    C("query-version-99", lambda c: ["query", c["v99"], "duck", "--out", c.out("q")], lambda c: c["v99"], "newer m3"),
    C("query-no-tensors", lambda c: ["query", c["no_tensors"], "duck", "--out", c.out("q")], lambda c: c["no_tensors"],
      "memory.safetensors is missing"),
    C("query-garbage-weights", lambda c: ["query", str(c.memory), "duck", "--weights", c["garbage_weights"], "--out",
                                          c.out("q")], lambda c: c["garbage_weights"], "header too large"),
    C("query-missing-weights", lambda c: ["query", str(c.memory), "duck", "--weights", c.out("w.safetensors"), "--out",
                                          c.out("q")], lambda c: c.out("w.safetensors"), "weights file does not exist"),
    C("query-out-is-file", lambda c: ["query", str(c.memory), "duck", "--out", c["file"]], lambda c: c["file"],
      "is a file, expected a folder"),
    C("query-out-unwritable", lambda c: ["query", str(c.memory), "duck", "--out", str(UNWRITABLE)],
      lambda c: str(UNWRITABLE), "cannot be written"),
    C("query-view-out-of-range", lambda c: ["query", str(c.memory), "duck", "--view", "99", "--out", c.out("q")],
      lambda c: "--view", "not a source camera"),
    C("query-depth-without-camera", lambda c: ["query", str(c.memory), "duck", "--depth", c["depth8"], "--out",
                                               c.out("q")], lambda c: "--depth", "needs the camera"),
    C("query-depth-missing", lambda c: ["query", str(c.memory), "duck", "--view", "1", "--depth", c.out("d.png"),
                                        "--out", c.out("q")], lambda c: c.out("d.png"), "depth file does not exist"),
    C("query-depth-8-bit", lambda c: ["query", str(c.memory), "duck", "--view", "1", "--depth", c["depth8"], "--out",
                                      c.out("q")], lambda c: c["depth8"], "8-bit depth"),
    C("query-depth-scale-negative", lambda c: ["query", str(c.memory), "duck", "--view", "1", "--depth", c["depth8"],
                                               "--depth-scale", "-1", "--out", c.out("q")], lambda c: "--depth-scale",
      "positive"),
    C("query-pose-garbage", lambda c: ["query", str(c.memory), "duck", "--pose", c["pose_garbage"], "--out", c.out("q")],
      lambda c: c["pose_garbage"], ""),
    C("query-model-not-in-memory", lambda c: ["query", str(c.memory), "duck", "--model", "dinov2", "--out", c.out("q")],
      lambda c: "dinov2", "not in this memory"),
    C("query-empty-text", lambda c: ["query", str(c.memory), "  ", "--out", c.out("q")], lambda c: "", "empty"),
    # m3 eval
    C("eval-out-is-file", lambda c: ["eval", str(c.memory), "--out", c["file"]], lambda c: c["file"],
      "is a file, expected a folder"),
    C("eval-out-unwritable", lambda c: ["eval", str(c.memory), "--out", str(UNWRITABLE)], lambda c: str(UNWRITABLE),
      "cannot be written"),
    C("eval-missing-masks", lambda c: ["eval", str(c.memory), "--masks", c.out("none"), "--out", c.out("e")],
      lambda c: c.out("none"), "does not exist"),
    C("eval-baseline-dim-0", lambda c: ["eval", str(c.memory), "--baseline", "--baseline-dim", "0", "--out", c.out("e")],
      lambda c: "--baseline-dim", "must be >= 1"),
    C("eval-missing-memory", lambda c: ["eval", c.out("none.m3"), "--out", c.out("e")], lambda c: c.out("none.m3"),
      "does not exist"),
    # m3 grasp
    C("grasp-unknown-backend", lambda c: ["grasp", str(c.memory), "duck", "--backend", "gazebo", "--out", c.out("g")],
      lambda c: "--backend", "unknown backend 'gazebo'"),
    C("grasp-out-is-file", lambda c: ["grasp", str(c.memory), "duck", "--out", c["file"]], lambda c: c["file"],
      "is a file, expected a folder"),
    C("grasp-out-unwritable", lambda c: ["grasp", str(c.memory), "duck", "--out", str(UNWRITABLE)],
      lambda c: str(UNWRITABLE), "cannot be written"),
    C("grasp-target-without-points", lambda c: ["grasp", str(c.memory), "duck", *TARGET, "--out", c.out("g")],
      lambda c: "--target", "needs --object-points"),
    C("grasp-points-missing", lambda c: ["grasp", str(c.memory), "duck", *TARGET, "--object-points", c.out("p.ply"),
                                         "--out", c.out("g")], lambda c: c.out("p.ply"), "not found"),
    C("grasp-points-garbage", lambda c: ["grasp", str(c.memory), "duck", *TARGET, "--object-points",
                                         c["points_garbage"], "--out", c.out("g")], lambda c: c["points_garbage"],
      "no points read"),
    C("grasp-urdf-missing", lambda c: ["grasp", str(c.memory), "duck", "--urdf", c.out("r.urdf"), "--out", c.out("g")],
      lambda c: c.out("r.urdf"), "URDF file not found"),
    C("grasp-bad-base-pose", lambda c: ["grasp", str(c.memory), "duck", "--base-pose", "1,2", "--out", c.out("g")],
      lambda c: "--base-pose", "expected 3"),
    C("grasp-speed-scale", lambda c: ["grasp", str(c.memory), "duck", "--speed-scale", "0.9", "--out", c.out("g")],
      lambda c: "speed scale", "must be in"),
    C("grasp-unitree-unconfirmed", lambda c: ["grasp", str(c.memory), "duck", "--backend", "unitree", "--out",
                                              c.out("g")], lambda c: "unitree backend", "--real-hardware",
      EXIT_SAFETY_REFUSAL),
    C("grasp-start-outside-limits", lambda c: ["grasp", str(c.memory), "duck", *TARGET, "--object-points", c["points"],
                                               "--start-joints", "0,-0.5,0,0,0,0", "--out", c.out("g")],
      lambda c: "z1_joint2", "outside its limits", EXIT_SAFETY_REFUSAL),
]


def _files(*roots: Path) -> set[str]:
    """Every path below ``roots`` (hidden ones too)."""
    return {str(p) for root in roots if root.is_dir() for p in root.rglob("*")}


def run_case(argv: list[str], capture) -> tuple[int, str]:
    """``m3 argv`` in this process: (exit code, stderr stripped); ``capture``: capsys or capfd."""
    code = main(argv)
    return code, capture.readouterr().err.strip()


@pytest.mark.parametrize("case", CASES)
def test_bad_input(case: Case, ctx: Ctx, capfd, monkeypatch):
    """Exit code of the taxonomy, one line naming the input and the problem, nothing written:
    not beside the inputs (where default outputs go: the scan, the memory and the files of
    ``ctx.root``) nor in the working directory (under ``ctx.root``). Captured at the file
    descriptors, so what C++ libraries print (open3d, librealsense) counts too."""
    (ctx.root / "cwd").mkdir(exist_ok=True)
    monkeypatch.chdir(ctx.root / "cwd")
    watched = (ctx.root, ctx.memory.parent, ctx.scene.parent)
    before = _files(*watched)
    code, err = run_case(case.argv(ctx), capfd)
    assert code == case.code, err
    assert len(err.splitlines()) == 1 and err.startswith("m3: error: "), err
    assert "Traceback" not in err and "warning" not in err.lower()
    assert case.names(ctx) in err and case.words in err, err
    assert _files(*watched) == before, f"left behind: {_files(*watched) - before}"


def test_catalogue_is_big_enough():
    assert len(CASES) >= 60


def test_build_refused_while_another_holds_the_lock(ctx, capsys):
    """A second build on the same --out refuses at start and names the holder's PID."""
    out = ctx.root / "out" / "locked.m3"
    out.parent.mkdir(exist_ok=True)
    with OutputLock(out):
        code, err = run_case([*BUILD, str(ctx.scene), "--out", str(out)], capsys)
    assert code == EXIT_BAD_INPUT and len(err.splitlines()) == 1
    assert str(out) in err and f"another build (PID {os.getpid()})" in err
    assert not out.exists() and not lock_path(out).exists()


def test_stale_lock_of_a_dead_process_is_taken_over_with_a_warning(ctx, caplog):
    out = ctx.root / "out" / "stale.m3"
    out.parent.mkdir(exist_ok=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock_path(out).write_text(dead.stdout)
    with caplog.at_level("WARNING", logger="m3"), OutputLock(out):
        assert lock_path(out).read_text().strip() == str(os.getpid())
    assert f"PID {dead.stdout.strip()}, which is no longer running" in caplog.text
    assert not lock_path(out).exists()


def test_twenty_concurrent_queries_equal_the_single_threaded_answers(built_memory):
    """One memory and text model shared by 20 threads: each answer (found, score, mask, 3D
    point) equals the single-threaded one for the same text and view."""
    from m3_memory.memory.artifact import load_memory
    from m3_memory.query.api import QueryConfig, query_text, text_model_for
    from m3_memory.query.camera import Camera

    memory = load_memory(built_memory[0])
    model = text_model_for(memory, "clip")
    camera = Camera.from_view(memory.cameras[1])
    texts = ["yellow bath duck", "red apple", "blue mug", "green block"]

    def answer(text: str) -> tuple:
        r = query_text(memory, text, camera, None, QueryConfig(), model)
        point = None if r.point_world is None else r.point_world.tolist()
        return r.found, r.score, point, r.mask.tobytes(), r.heatmap.tobytes()

    single = {t: answer(t) for t in texts}
    results: list[tuple[str, tuple] | BaseException] = []

    def worker(text: str) -> None:
        try:
            results.append((text, answer(text)))
        except BaseException as err:  # noqa: BLE001 - reported by the assertion below
            results.append(err)

    threads = [threading.Thread(target=worker, args=(texts[i % len(texts)],)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 20
    for r in results:
        assert not isinstance(r, BaseException), r
        assert r[1] == single[r[0]], r[0]


def _m3(*args: str, log: Path | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    pre = ["--log", str(log)] if log is not None else []
    return subprocess.Popen([sys.executable, "-m", "m3_memory.cli", *pre, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _wait_for(predicate: Callable[[], bool], proc: subprocess.Popen, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


@pytest.mark.parametrize("when", ["before training", "while training"])
def test_sigterm_stops_a_build_with_one_line_and_exit_143(ctx, tmp_path, when):
    """SIGTERM (ros2 launch, systemd, Slurm): one line, exit 143, no memory, no lock; while
    training it checkpoints first, so --resume can continue."""
    out, log = tmp_path / "term.m3", tmp_path / "m3.log"
    proc = _m3(*BUILD[:-1], "5000", str(ctx.scene), "--out", str(out), "--device", "cpu", log=log)  # no CPU warning
    stage = "iteration" if when == "while training" else "loading"
    needle = "build: iteration" if when == "while training" else "build: loading"
    _wait_for(lambda: log.is_file() and needle in log.read_text(), proc, 120)
    if stage == "iteration":
        time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_TERMINATED, err
    assert len(err.strip().splitlines()) == 1 and "terminated" in err and "SIGTERM" in err, err
    assert not out.exists() and not lock_path(out).exists()
    ckpt = out.with_name(out.name + ".ckpt")
    if when == "while training":
        assert "checkpoint" in err and "--resume" in err and ckpt.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["m3.log", *(["term.m3.ckpt"] if ckpt.exists() else [])])


def test_sigint_is_exit_130(ctx, tmp_path):
    out, log = tmp_path / "int.m3", tmp_path / "m3.log"
    proc = _m3(*BUILD[:-1], "5000", str(ctx.scene), "--out", str(out), "--device", "cpu", log=log)
    _wait_for(lambda: log.is_file() and "build: iteration" in log.read_text(), proc, 120)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_INTERRUPTED and "interrupted (Ctrl-C)" in err and len(err.strip().splitlines()) == 1
    assert out.with_name("int.m3.ckpt").is_file() and not out.exists()


def test_missing_dependency_is_exit_5(ctx, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "unitree_arm_interface", None)
    code, err = run_case(["grasp", str(ctx.memory), "duck", *TARGET, "--object-points", ctx["points"], "--backend",
                          "unitree", "--real-hardware", "--out", ctx.out("g")], capsys)
    assert code == EXIT_MISSING_DEPENDENCY and "unitree_arm_interface" in err and len(err.splitlines()) == 1


def test_full_disk_at_start_is_refused_before_any_work(ctx, capsys, monkeypatch):
    import m3_memory.outputs as outputs

    usage = shutil.disk_usage(ctx.root)
    monkeypatch.setattr(outputs.shutil, "disk_usage", lambda p: usage._replace(free=1 << 20))
    code, err = run_case([*BUILD, str(ctx.scene), "--out", ctx.out("full.m3")], capsys)
    assert code == EXIT_BAD_INPUT and "MB but only 1 MB are free" in err and ctx.out("full.m3") in err


def enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_unknown_error_is_one_line_exit_70_and_debug_shows_the_traceback(ctx, capsys, monkeypatch):
    import m3_memory.recording.inspect as inspect

    def bug(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(inspect, "inspect_recording", bug)
    code, err = run_case(["inspect", str(ctx.scene), "--sheet", ctx.out("s.png")], capsys)
    assert code == 70 and err == "m3: internal error: ZeroDivisionError: a bug (run with --debug for the traceback)"
    code, err = run_case(["--debug", "inspect", str(ctx.scene), "--sheet", ctx.out("s.png")], capsys)
    assert code == 70 and "Traceback" in err and "ZeroDivisionError" in err


def test_library_warnings_go_to_the_log_not_before_the_error(ctx, tmp_path, capsys, monkeypatch):
    import warnings

    import m3_memory.recording.inspect as inspect

    def noisy(*args, **kwargs):
        warnings.warn("Mean of empty slice", RuntimeWarning, stacklevel=1)
        raise OSError(errno.EACCES, "Permission denied", "/some/file.png")

    monkeypatch.setattr(inspect, "inspect_recording", noisy)
    log = tmp_path / "m3.log"
    code, err = run_case(["--log", str(log), "inspect", str(ctx.scene), "--sheet", ctx.out("s.png")], capsys)
    assert code == EXIT_BAD_INPUT and err == "m3: error: /some/file.png: permission denied"
    assert "Mean of empty slice" in log.read_text()


def test_build_failed_is_exit_3(ctx, tmp_path, capsys, monkeypatch):
    from m3_memory.training.trainer import Trainer

    real = Trainer.step

    def nan_step(self, view):
        terms = real(self, view)
        return {**terms, "loss": float("nan")}

    monkeypatch.setattr(Trainer, "step", nan_step)
    code, err = run_case([*BUILD, str(ctx.scene), "--out", str(tmp_path / "nan.m3"), "--device", "cpu"], capsys)
    assert code == EXIT_BUILD_FAILED and "loss became nan" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "nan.m3").exists() and not lock_path(tmp_path / "nan.m3").exists()


def test_inspect_warns_about_empty_depth_and_says_so_in_the_summary(ctx, capsys):
    code = main(["inspect", ctx["zero_depth"], "--sheet", ctx.out("zero.png")])
    captured = capsys.readouterr()
    assert code == 0 and "depth: no valid pixel in any frame" in captured.out
    assert "m3: warning:" in captured.err and "10/10 frames: depth has no valid pixel (all zero)" in captured.err
    Path(ctx.out("zero.png")).unlink()


def test_inspect_warns_about_intrinsics_of_another_resolution(ctx, capsys):
    assert main(["inspect", ctx["other_resolution"], "--sheet", ctx.out("other.png")]) == 0
    err = capsys.readouterr().err
    assert "principal point (399.5, 299.5) px is far from the centre of the 160 x 120 image" in err
    Path(ctx.out("other.png")).unlink()


def test_eight_bit_depth_is_read_with_the_scale_the_recording_gives(ctx, tmp_path, capsys):
    """8-bit depth in centimetres with depth_unit_scale_factor 0.01: accepted, median as the
    16-bit original (not 100 times too close)."""
    folder = tmp_path / "cm"
    shutil.copytree(ctx["eight_bit"], folder)
    meta = json.loads((folder / "transforms.json").read_text())
    meta["depth_unit_scale_factor"] = 0.01
    (folder / "transforms.json").write_text(json.dumps(meta))
    assert main(["inspect", str(folder), "--json", "--sheet", str(tmp_path / "s.png")]) == 0
    scaled = json.loads(capsys.readouterr().out)
    assert main(["inspect", str(ctx.scene), "--json", "--sheet", str(tmp_path / "s.png")]) == 0
    original = json.loads(capsys.readouterr().out)
    assert scaled["depth_median_m"] == pytest.approx(original["depth_median_m"], abs=0.011)


def test_a_missing_weights_file_does_not_suggest_the_fixture_trainer(ctx, capsys):
    code, err = run_case([*BUILD, str(ctx.scene), "--weights", ctx.out("w.safetensors"), "--out", ctx.out("m.m3")], capsys)
    assert code == EXIT_BAD_INPUT and "fixture_train" not in err
