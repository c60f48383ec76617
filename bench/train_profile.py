"""Where a fast-preset training iteration spends its time: the APC shelf scene (15 real frames)
and the 48-frame synthetic tabletop, fixture CLIP, the ``fast`` preset's 600 iterations.

``Trainer.step`` runs unchanged; wrappers around the functions it calls (render, compositor
forward and backward, losses, optimiser step, density control) take wall and CPU seconds
(the process's, all threads), the rest of the iteration is the difference, and torch's
profiler gives the operators' self time (wall time inside each operator, so a loaded machine
inflates it; the compositor's backward is ``_CompositeBackward``).

    python bench/train_profile.py [--iterations N]   # writes bench/results/train_profile.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
REALDATA = ROOT.parent / "shared" / "realdata"
APC_SCENE = Path("apc2016_realsense_shelf") / "data" / "sample" / "scene-0000"
sys.path.insert(0, str(ROOT))


class Phases:
    """Wall and CPU seconds (this process, all threads) spent inside wrapped functions, by name.
    Wrappers replace module attributes for the duration (:meth:`wrap`) and are undone by :meth:`restore`."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self._undo: list[tuple[object, str, object]] = []

    def wrap(self, owner: object, attr: str, name: str, static: bool = False) -> None:
        fn = getattr(owner, attr)

        def timed(*args, **kwargs):
            w, c = time.perf_counter(), time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.wall[name] = self.wall.get(name, 0.0) + time.perf_counter() - w
                self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - c

        self._undo.append((owner, attr, owner.__dict__[attr] if static else fn))
        setattr(owner, attr, staticmethod(timed) if static else timed)

    def restore(self) -> None:
        for owner, attr, fn in reversed(self._undo):
            setattr(owner, attr, fn)
        self._undo.clear()


def profile_scene(recording: Path, work: Path, iterations: int, threads: int) -> dict:
    """``iterations`` of :meth:`Trainer.step` on ``recording`` (train views in a shuffled order) at
    ``threads`` torch threads (0: torch's own setting)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    import m3_memory.render.cpu as cpu
    import m3_memory.training.trainer as trainer_module
    from m3_memory.foundation import load_model
    from m3_memory.training.build import prepare
    from m3_memory.training.config import TrainConfig
    from m3_memory.training.trainer import Trainer, scene_extent

    cfg = TrainConfig.fast(iterations=iterations)
    prep = prepare(recording, cfg, [load_model("clip-fixture")], work / "cache", show_progress=False)
    train = prep.train
    trainer = Trainer(prep.gaussians, prep.banks, prep.slices, cfg, scene_extent(train))
    order = torch.randperm(len(train) * (iterations // len(train) + 1), generator=torch.Generator().manual_seed(0))
    if threads:
        torch.set_num_threads(threads)
    phases = Phases()
    phases.wrap(trainer_module, "rasterization", "render (projection, sort, compositor forward)")
    phases.wrap(cpu._Composite, "forward", "compositor forward", static=True)
    phases.wrap(trainer_module, "sh_to_rgb", "SH colour forward")
    phases.wrap(trainer_module, "rgb_loss", "colour loss forward")
    phases.wrap(trainer_module, "depth_loss", "depth loss forward")
    phases.wrap(trainer_module, "feature_loss", "feature loss forward")
    phases.wrap(torch.Tensor, "backward", "backward (all of autograd)")
    phases.wrap(cpu._Composite, "backward", "compositor backward", static=True)
    phases.wrap(torch.optim.Adam, "step", "Adam steps")
    phases.wrap(trainer.density, "pre_backward", "density control")
    phases.wrap(trainer.density, "post_backward", "density control (after the step)")
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for k in range(iterations):
                trainer.step(train[int(order[k]) % len(train)])
    finally:
        phases.restore()
    wall, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    rest = "the rest (Python, the trainer's own tensor work)"
    outside = ("compositor forward", "compositor backward")  # counted inside render and backward
    phases.wall[rest] = wall - sum(v for k, v in phases.wall.items() if k not in outside)
    phases.cpu[rest] = cpu_s - sum(v for k, v in phases.cpu.items() if k not in outside)
    ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total_self = sum(e.self_cpu_time_total for e in ops)
    top = [{"op": e.key, "calls": e.count, "self_s": e.self_cpu_time_total / 1e6,
            "self_share": e.self_cpu_time_total / total_self} for e in ops[:20]]
    return {"recording": str(recording), "frames": len(prep.views), "torch_threads": torch.get_num_threads(),
            "train_views": len(train), "resolution": list(train[0].size), "iterations": iterations,
            "gaussians_start": len(prep.gaussians), "gaussians_end": int(trainer.params["means"].shape[0]),
            "wall_s": wall, "cpu_s": cpu_s, "iterations_per_s": iterations / wall,
            "phases_wall_s": phases.wall, "phases_cpu_s": phases.cpu,
            "phases_cpu_share": {k: v / cpu_s for k, v in phases.cpu.items()},
            "top_ops_self": top, "heldout": trainer.evaluate(prep.test), "load": os.getloadavg(),
            "depth_weight": cfg.depth_weight}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=600)
    parser.add_argument("--out", type=Path, default=RESULTS / "train_profile.json")
    parser.add_argument("--realdata", type=Path, default=REALDATA, help="folder of the real sequences")
    parser.add_argument("--threads", type=int, default=0, help="torch (and compositor) threads; 0: torch's own")
    parser.add_argument("--scenes", nargs="+", default=["apc", "synthetic"], choices=["apc", "synthetic"])
    args = parser.parse_args()
    import torch

    from m3_memory.synth import SynthConfig, write_synthetic

    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    out = {"machine": platform.processor() or platform.machine(), "torch": torch.__version__, "commit": commit,
           "torch_threads": args.threads or torch.get_num_threads(), "load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        apc = args.realdata / APC_SCENE
        if "apc" in args.scenes:
            if apc.is_dir():
                out["apc"] = profile_scene(apc, work / "apc", args.iterations, args.threads)
            else:
                out["apc"] = {"status": "skipped", "reason": f"{apc} not found"}
        if "synthetic" in args.scenes:
            scene = write_synthetic(work / "synth", SynthConfig(n_frames=48), show_progress=False).folder
            out["synthetic"] = profile_scene(scene, work / "syn", args.iterations, args.threads)
    out["load_after"] = os.getloadavg()
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    for k in args.scenes:
        r = out[k]
        if "phases_cpu_share" in r:
            print(k, f"{r['iterations_per_s']:.2f} it/s", {p: round(s, 3) for p, s in r["phases_cpu_share"].items()})
            for op in r["top_ops_self"][:8]:
                print(f"   {op['self_share']:.3f} {op['op']}")


if __name__ == "__main__":
    main()
