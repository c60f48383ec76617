"""``m3 demo``: the whole job on the embedded synthetic tabletop scene.

Synthesise the scene, read it back through every reader, check they agree, inspect each
copy (contact sheets), reduce CLIP features of the scan to principal scene components (real
CLIP when its weights are in the user's cache or hub, else the project's fixture CLIP),
build the memory, ask it for the yellow bath duck, and grasp the duck with the Z1 on the B1
in the kinematic simulation.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from m3_memory.errors import InputError, M3Error
from m3_memory.memory.extract import extract_components
from m3_memory.recording import open_recording
from m3_memory.recording.compare import compare_recordings
from m3_memory.recording.inspect import inspect_recording
from m3_memory.synth import SynthConfig, write_synthetic

log = logging.getLogger("m3")


def choose_clip() -> tuple[str, object]:
    """Real CLIP (ViT-L/14@336, OpenAI weights) when the user's cache or hub has it, else the
    fixture CLIP; says which and why. Returns (registry name, model)."""
    from m3_memory.foundation import load_model

    try:
        model = load_model("clip")
        print("  using real CLIP")
        return "clip", model
    except M3Error as err:
        log.warning("real CLIP unavailable (%s); the demo falls back to the fixture CLIP trained on this scene only",
                    err.problem.split(";")[0])
        return "clip-fixture", load_model("clip-fixture")


def run_demo(out: Path, frames: int = 48, iterations: int | None = None, device: str = "cpu") -> int:
    """Run the demo into ``out``; returns the exit code (0 when every reader agrees and every
    stage succeeded). iterations: training iterations (default: the ``fast`` preset's).
    device: where the build and the query compute (``auto``, ``cpu``, ``cuda[:N]``)."""
    from m3_memory.training.build import build_memory
    from m3_memory.training.config import TrainConfig

    if frames < 2:
        raise InputError("m3 demo", "needs --frames >= 2")
    steps = 7
    out.mkdir(parents=True, exist_ok=True)
    print(f"[1/{steps}] synthesising the tabletop scene ({frames} frames) into {out}")
    outputs = write_synthetic(out, SynthConfig(n_frames=frames))
    print(f"[2/{steps}] reading it back through every reader")
    reference = open_recording(outputs.folder)
    ok = True
    for label, path in (("librealsense .db3", outputs.realsense), ("ROS 2 bag", outputs.rosbag2)):
        diff = compare_recordings(reference, open_recording(path))
        same = (diff["frames_reference"] == diff["frames_other"] and diff["rgb"] == 0
                and diff["depth_m"] <= 1e-3 and diff["pose"] <= 1e-6)
        ok &= same
        print(f"  {label:18s} {diff['frames_other']}/{diff['frames_reference']} frames, colour diff "
              f"{diff['rgb']:.0f}, depth diff {diff['depth_m'] * 1000:.2f} mm, pose diff {diff['pose']:.1e} "
              f"-> {'identical' if same else 'MISMATCH'}")
    print(f"[3/{steps}] inspecting each copy")
    sheets = out / "sheets"
    sheets.mkdir(exist_ok=True)
    for path in (outputs.folder, outputs.realsense, outputs.rosbag2):
        summary = inspect_recording(open_recording(path), sheet=sheets / f"{path.name}.png")
        print("\n".join(summary.lines()))
    print(f"contact sheets in {sheets}")
    if not ok:
        print("m3 demo: the readers disagree (see above)")
        return 1
    name, model = choose_clip()
    print(f"[4/{steps}] CLIP features -> principal scene components ({model.checkpoint})")
    summary = extract_components(open_recording(outputs.folder), model, out / "features")
    print("\n".join(summary.lines()))
    cfg = TrainConfig.fast() if iterations is None else TrainConfig.fast(iterations=iterations)
    print(f"[5/{steps}] building the memory ({cfg.iterations} iterations, fast preset)")
    memory_path = out / "tabletop.m3"
    report = build_memory(outputs.folder, memory_path, model=name, config=cfg, overwrite=True, device=device)
    print("\n".join(report.lines()))
    print(f"held-out renders and training curve in {memory_path / 'report'}")
    return _query_and_grasp(memory_path, out, steps, device)


def _query_and_grasp(memory_path: Path, out: Path, steps: int, device: str) -> int:
    from m3_grasp.run import run_grasp
    from m3_memory.memory.artifact import load_memory
    from m3_memory.device import resolve_device
    from m3_memory.query.api import QueryConfig, find_in_memory, prepare
    from m3_memory.query.camera import Camera
    from m3_memory.query.picture import heatmap_overlay

    text = "yellow bath duck"
    print(f"[6/{steps}] asking the memory for the {text}")
    memory = load_memory(memory_path)
    prepare(memory)
    result = find_in_memory(memory, text, QueryConfig(device=str(resolve_device(device))))
    print(f"  {result.message}")
    if not result.found:
        print(f"m3 demo: the memory did not find the {text}")
        return 1
    camera = next(Camera.from_view(c) for c in memory.cameras if np.array_equal(c.T_world_cam, result.T_world_cam))
    heatmap_overlay(memory, camera, result, out / "query" / "heatmap.png")
    print(f"  target [{', '.join(f'{v:.3f}' for v in result.point_world)}] m (memory frame); "
          f"heatmap in {out / 'query' / 'heatmap.png'}")
    print(f"[7/{steps}] grasping it with the Z1 on the B1 (kinematic simulation)")
    plan, report = run_grasp(memory_path, result.point_world, result.points_world, backend="sim", out_dir=out / "grasp")
    print(f"  {plan.message}")
    if report is None:
        print("m3 demo: no grasp was planned")
        return 1
    print("\n".join(f"  {line}" for line in report.lines()))
    print("demo finished")
    return 0
