"""Where a fast-preset training iteration spends its time: the APC shelf scene (15 real frames)
and the 48-frame synthetic tabletop, fixture CLIP, the ``fast`` preset's 600 iterations.

Each iteration is split into phases by wall and CPU clocks (render forward, losses, backward,
optimiser step, density control), and torch's profiler gives the operators' self CPU time
(the compositor's backward is ``_CompositeBackward``).

    python bench/train_profile.py [--iterations N]   # writes bench/results/train_profile.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
REALDATA = ROOT.parent / "shared" / "realdata"
APC_SCENE = Path("apc2016_realsense_shelf") / "data" / "sample" / "scene-0000"
sys.path.insert(0, str(ROOT))


class Clock:
    """Wall and CPU seconds (this process, all threads) per named phase."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self._w, self._c = time.perf_counter(), time.process_time()

    def lap(self, name: str) -> None:
        w, c = time.perf_counter(), time.process_time()
        self.wall[name] = self.wall.get(name, 0.0) + w - self._w
        self.cpu[name] = self.cpu.get(name, 0.0) + c - self._c
        self._w, self._c = w, c


def profiled_step(trainer, view, clock: Clock) -> None:
    """:meth:`Trainer.step`, the same operations, with a lap after each phase."""
    from m3_memory.render.rasterization import means2d_grad
    from m3_memory.training.losses import feature_loss, rgb_loss, sample_pixels
    from m3_memory.training.trainer import _lr_schedule

    cfg = trainer.cfg
    trainer.iteration += 1
    for group in trainer.optimizer.param_groups:
        if group["name"] == "means":
            group["lr"] = _lr_schedule(cfg.lr_position * trainer.extent, cfg.lr_position_final * trainer.extent,
                                       trainer.iteration, cfg.iterations)
    clock.lap("python")
    rgb, queries, _, meta = trainer.render(view)
    clock.lap("render_forward")
    loss = rgb_loss(rgb, view.rgb, cfg.ssim_weight)
    clock.lap("rgb_loss_forward")
    width, height = view.size
    uv = sample_pixels(height, width, cfg.feature_pixels, trainer.generator)
    for name, decode in trainer.decoders.items():
        a, b = trainer.slices[name]
        f_loss, _ = feature_loss(queries[..., a:b], view.features[name], decode, uv)
        loss = loss + cfg.feature_weight * f_loss
    clock.lap("feature_loss_forward")
    trainer.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    clock.lap("backward")
    grad = means2d_grad(meta, width, height)
    if grad is not None and trainer.iteration < cfg.densify_stop:
        trainer.stats.add(grad, meta["visible"])
    trainer.optimizer.step()
    clock.lap("optimizer")
    trainer._density_control()
    clock.lap("density_control")


def profile_scene(recording: Path, work: Path, iterations: int) -> dict:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from m3_memory.foundation import load_model
    from m3_memory.training.build import prepare
    from m3_memory.training.config import TrainConfig
    from m3_memory.training.trainer import Trainer, scene_extent

    cfg = TrainConfig.fast(iterations=iterations)
    prep = prepare(recording, cfg, [load_model("clip-fixture")], work / "cache", show_progress=False)
    train = prep.train
    trainer = Trainer(prep.gaussians, prep.banks, prep.slices, cfg, scene_extent(train))
    order = torch.randperm(len(train) * (iterations // len(train) + 1), generator=torch.Generator().manual_seed(0))
    clock = Clock()
    t0, c0 = time.perf_counter(), time.process_time()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for k in range(iterations):
            profiled_step(trainer, train[int(order[k]) % len(train)], clock)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total_self = sum(e.self_cpu_time_total for e in ops)
    top = [{"op": e.key, "calls": e.count, "self_cpu_s": e.self_cpu_time_total / 1e6,
            "self_share": e.self_cpu_time_total / total_self} for e in ops[:20]]
    size = train[0].size
    return {"recording": str(recording), "frames": len(prep.views), "train_views": len(train),
            "resolution": list(size), "iterations": iterations, "gaussians_start": len(prep.gaussians),
            "gaussians_end": int(trainer.params["means"].shape[0]), "wall_s": wall, "cpu_s": cpu,
            "iterations_per_s": iterations / wall,
            "phases_wall_s": clock.wall, "phases_cpu_s": clock.cpu,
            "phases_wall_share": {k: v / wall for k, v in clock.wall.items()},
            "top_ops_self_cpu": top, "heldout": trainer.evaluate(prep.test)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=600)
    parser.add_argument("--out", type=Path, default=RESULTS / "train_profile.json")
    parser.add_argument("--realdata", type=Path, default=REALDATA, help="folder of the real sequences")
    args = parser.parse_args()
    import torch

    from m3_memory.synth import SynthConfig, write_synthetic

    out = {"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
           "torch_threads": torch.get_num_threads(), "load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        apc = args.realdata / APC_SCENE
        if apc.is_dir():
            out["apc"] = profile_scene(apc, work / "apc", args.iterations)
        else:
            out["apc"] = {"status": "skipped", "reason": f"{apc} not found"}
        scene = write_synthetic(work / "synth", SynthConfig(n_frames=48), show_progress=False).folder
        out["synthetic"] = profile_scene(scene, work / "syn", args.iterations)
    out["load_after"] = os.getloadavg()
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    for k in ("apc", "synthetic"):
        r = out[k]
        if "phases_wall_share" in r:
            print(k, f"{r['iterations_per_s']:.2f} it/s", {p: round(s, 3) for p, s in r["phases_wall_share"].items()})
            for op in r["top_ops_self_cpu"][:8]:
                print(f"   {op['self_share']:.3f} {op['op']}")


if __name__ == "__main__":
    main()
