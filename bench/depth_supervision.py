"""Depth supervision: held-out depth error, PSNR and feature cosine with and without the
expected-depth loss, trained side by side in one run on the real APC shelf (RealSense F200,
~26 % valid depth) and the synthetic tabletop (exact depth).

Every variant starts from the same prepared scene (features, principal scene components,
Gaussians from RGB-D) and steps through the same views in the same order, one iteration of each
variant in turn, so the machine's load falls on all of them alike. CPU seconds per variant are
measured around its own steps.

    python bench/depth_supervision.py [--iterations 600] [--scenes apc synthetic] [--variants ...]
    # writes bench/results/depth_supervision.json and depth_supervision.png
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
APC = Path("apc2016_realsense_shelf/data/sample/scene-0000")  # under the real-data folder
sys.path.insert(0, str(ROOT))

from m3_memory.foundation import load_model  # noqa: E402
from m3_memory.training.build import Prepared, prepare  # noqa: E402
from m3_memory.training.config import TrainConfig  # noqa: E402
from m3_memory.training.trainer import Trainer, scene_extent  # noqa: E402

VARIANTS = {"no depth loss": {"depth_weight": 0.0}, "relative L1": {"depth_loss": "relative"},
            "inverse depth": {"depth_loss": "inverse"}}
DEFAULT_VARIANTS = ["no depth loss", "inverse depth"]


def scene_path(name: str, work: Path, realdata: Path) -> Path | None:
    """The recording of ``name`` ("apc" or "synthetic"); None when its data is absent."""
    if name == "apc":
        return realdata / APC if (realdata / APC).is_dir() else None
    from m3_memory.synth import SynthConfig, write_synthetic

    return write_synthetic(work / "synth", SynthConfig(width=320, height=240, n_frames=48), realsense=False,
                           rosbag2=False, show_progress=False).folder


def side_by_side(runs: dict[str, tuple[Prepared, TrainConfig]], make=None, log_every: int = 100,
                 final: bool = True) -> dict[str, dict]:
    """Train one :class:`Trainer` per variant ``name: (prepared scene, config)`` interleaved: the
    same view index of each variant's own views in the same order (the variants' scenes must have
    the same views; their poses or Gaussians may differ). ``make(prep, cfg)`` builds a trainer
    (default: plain, refining the training views' poses when ``cfg.pose_refine``). Per variant:
    held-out metrics before (and after, when ``final``), Gaussians, CPU seconds of its own steps
    and the trainer itself (key ``_trainer``)."""
    def plain(p: Prepared, c: TrainConfig) -> Trainer:
        return Trainer(p.gaussians, p.banks, p.slices, c, scene_extent(p.train),
                       pose_views=[v.name for v in p.train] if c.pose_refine else ())

    make = make or plain
    trainers = {name: make(prep, cfg) for name, (prep, cfg) in runs.items()}
    iterations = max(cfg.iterations for _, cfg in runs.values())
    counts = {len(prep.train) for prep, _ in runs.values()}
    if len(counts) != 1:
        raise ValueError(f"the variants' scenes have different numbers of training views: {sorted(counts)}")
    views = counts.pop()
    out = {name: {"initial": t.evaluate(runs[name][0].test), "cpu_s": 0.0} for name, t in trainers.items()}
    order = torch.Generator().manual_seed(0)
    queue: list[int] = []
    for it in range(1, iterations + 1):
        if not queue:
            queue = torch.randperm(views, generator=order).tolist()
        index = queue.pop()
        for name, trainer in trainers.items():
            start = time.process_time()
            trainer.step(runs[name][0].train[index])
            out[name]["cpu_s"] += time.process_time() - start
        if it % log_every == 0:
            print(f"  iteration {it}/{iterations}", flush=True)
    for name, trainer in trainers.items():
        if final:
            out[name]["final"] = trainer.evaluate(runs[name][0].test, refine_poses=True)
        out[name].update(gaussians=trainer.params["means"].shape[0], _trainer=trainer)
    return out


def plot(results: dict, path: Path) -> None:
    scenes = [s for s, r in results.items() if isinstance(r, dict) and "variants" in r]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), squeeze=False)
    names = list(results[scenes[0]]["variants"]) if scenes else []
    width = 0.8 / max(len(names), 1)
    for k, name in enumerate(names):
        xs = [i + (k - (len(names) - 1) / 2) * width for i in range(len(scenes))]
        med = [100 * results[s]["variants"][name]["final"].get("depth_median_m", float("nan")) for s in scenes]
        p90 = [100 * results[s]["variants"][name]["final"].get("depth_p90_m", float("nan")) for s in scenes]
        psnr = [results[s]["variants"][name]["final"]["psnr"] for s in scenes]
        bars = axes[0][0].bar(xs, p90, width, alpha=0.35, label=f"{name} (p90)")
        axes[0][0].bar(xs, med, width, color=bars.patches[0].get_facecolor()[:3], label=f"{name} (median)")
        axes[0][1].bar(xs, psnr, width, label=name)
    for ax, label in ((axes[0][0], "held-out depth error (cm)"), (axes[0][1], "held-out PSNR (dB)")):
        ax.set_xticks(range(len(scenes)), scenes)
        ax.set_ylabel(label)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].axhline(1.0, color="k", lw=0.8, ls="--")
    fig.suptitle("expected-depth loss, trained side by side (fast preset)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=TrainConfig.fast().iterations)
    ap.add_argument("--scenes", nargs="*", default=["apc", "synthetic"], choices=["apc", "synthetic"])
    ap.add_argument("--variants", nargs="*", default=DEFAULT_VARIANTS, choices=list(VARIANTS))
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--realdata", type=Path, default=ROOT.parent / "shared" / "realdata",
                    help="folder holding the real sequences (default: ../shared/realdata)")
    args = ap.parse_args(argv)
    model = load_model("clip-fixture")
    results: dict = {"bench": "depth_supervision", "load_before": os.getloadavg(), "torch_threads": torch.get_num_threads(),
                     "preset": "fast", "iterations": args.iterations, "model": "clip-fixture"}
    with tempfile.TemporaryDirectory() as tmp:
        for scene in args.scenes:
            path = scene_path(scene, Path(tmp), args.realdata)
            if path is None:
                results[scene] = {"status": "skipped", "reason": f"data folder {args.realdata / APC} is absent"}
                continue
            print(f"{scene}: {path}", flush=True)
            base = TrainConfig.fast(iterations=args.iterations)
            prep = prepare(path, base, [model], cache_root=Path(tmp) / "cache", show_progress=False)
            valid = float(torch.cat([(v.depth > 0).flatten() for v in prep.views]).float().mean())
            runs = side_by_side({name: (prep, base.with_(**VARIANTS[name])) for name in args.variants})
            results[scene] = {"path": str(path), "views": len(prep.views), "held_out": len(prep.test),
                              "valid_depth": valid,
                              "variants": {n: {k: v for k, v in r.items() if k != "_trainer"} for n, r in runs.items()}}
            for name, r in runs.items():
                f = r["final"]
                print(f"  {name:14} depth median {100 * f.get('depth_median_m', float('nan')):.2f} cm, "
                      f"p90 {100 * f.get('depth_p90_m', float('nan')):.2f} cm, PSNR {f['psnr']:.2f} dB, "
                      f"cos {f['cos.clip']:.3f}, {r['cpu_s']:.0f} CPU s", flush=True)
            write(results, args.out)  # after each scene: a long run keeps what it measured
    return 0


def write(results: dict, out: Path) -> None:
    results["load_after"] = os.getloadavg()
    out.mkdir(parents=True, exist_ok=True)
    (out / "depth_supervision.json").write_text(json.dumps(results, indent=1) + "\n")
    plot(results, out / "depth_supervision.png")


if __name__ == "__main__":
    sys.exit(main())
