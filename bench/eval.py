"""Held-out fidelity and grounding (``m3 eval``'s rows) on the synthetic tabletop and the real APC shelf.

Memories are built with the fixture CLIP and ``TrainConfig.fast`` (or given); each is evaluated
on its held-out views (every 8th) against its recording's object masks (APC: the ``segm/``
label images). Rows, in one run: the fixture's raw 2D maps (upper bound), the M3 memory, and
Feature-3DGS-style distillation baselines trained with the memory's own config and iteration
count, one per ``--baseline-dims`` (default 16: the memory's per-Gaussian width; 64: more than
twice the memory's parameters).

    python bench/eval.py [--synthetic scene.m3] [--apc apc.m3] [--baseline-dims 16 64] [--scenes synthetic apc]
    # writes bench/results/eval_synthetic.{json,png} and eval_apc.{json,png}
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
APC = Path(__file__).resolve().parents[2] / "shared" / "realdata" / "apc2016_realsense_shelf" / "data" / "sample" / "scene-0000"


def build(recording: Path, out: Path) -> Path:
    from m3_memory.training.build import build_memory
    from m3_memory.training.config import TrainConfig

    report = build_memory(recording, out, model="clip-fixture", config=TrainConfig.fast(), cache_root=out.parent / "cache",
                          show_progress=False)
    print("\n".join(report.lines()))
    return out


def build_synthetic(tmp: Path) -> Path:
    from m3_memory.synth import SynthConfig, write_synthetic

    scan = write_synthetic(tmp / "synth", SynthConfig(width=320, height=240, n_frames=48), realsense=False, rosbag2=False,
                           show_progress=False)
    return build(scan.folder, tmp / "synthetic.m3")


def evaluate_memory(path: Path, dims: list[int], cache_root: Path) -> tuple[list, dict]:
    """Rows raw / memory / baselines on ``path``'s held-out views, and what the report says about the run."""
    from m3_memory.memory.artifact import load_memory
    from m3_memory.query.api import text_model_for
    from m3_memory.query.eval import Distilled, MemoryMaps, RawMaps, apc_segm_masks, evaluate, heldout_views
    from m3_memory.recording import open_recording
    from m3_memory.training.distill import memory_budget, train_baseline

    memory = load_memory(path)
    model = text_model_for(memory)
    recording = open_recording(memory.source)
    frames = list(recording)
    segm = recording.format_name == "apc2016" and (Path(memory.source) / "segm").is_dir()
    if segm:
        for frame, masks in zip(frames, apc_segm_masks(memory.source, frames)):
            frame.masks = masks
    views = heldout_views(memory, frames)
    cfg = memory_budget(memory)
    predictors, baselines = [RawMaps(model), MemoryMaps(memory)], {}
    for dim in dims:
        start = time.perf_counter()
        trainer, metrics = train_baseline(memory.source, cfg, [model], dim, cache_root=cache_root, show_progress=False)
        baselines[f"l={dim}"] = {"train_seconds": time.perf_counter() - start, "gaussians": len(trainer.gaussians()),
                                 "heldout": metrics}
        print(f"baseline l={dim}: {baselines[f'l={dim}']}")
        predictors.append(Distilled(trainer))
    rows = evaluate(predictors, views, model, model.canonical_negatives)
    about = {"memory": str(path), "recording": memory.source, "model": model.checkpoint, "views": len(views),
             "split": "test", "masks": "segm" if segm else "recording", "iterations": cfg.iterations,
             "memory_gaussians": len(memory.gaussians), "memory_build": {k: memory.training.get(k) for k in ("initial", "final")},
             "baselines": baselines}
    return rows, about


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--synthetic", help="memory of the synthetic scan (48 views, 320x240); default: build one (~4 min)")
    ap.add_argument("--apc", help="memory of the APC scene; default: build one (~5 min)")
    ap.add_argument("--baseline-dims", type=int, nargs="*", default=[16, 64], help="baseline feature widths (default 16 64)")
    ap.add_argument("--scenes", nargs="*", default=["synthetic", "apc"], choices=["synthetic", "apc"],
                    help="which scenes to evaluate (default: both)")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()

    import torch

    from m3_memory.query.eval import write_report

    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        runs = []
        if "synthetic" in args.scenes:
            runs.append(("synthetic", Path(args.synthetic) if args.synthetic else build_synthetic(tmp)))
        if "apc" in args.scenes and (args.apc or APC.is_dir()):
            runs.append(("apc", Path(args.apc) if args.apc else build(APC, tmp / "apc.m3")))
        elif "apc" in args.scenes:
            print(f"APC scene not found at {APC}: skipped")
        for name, memory in runs:
            rows, about = evaluate_memory(memory, args.baseline_dims, tmp / "cache")
            out = tmp / f"eval_{name}"
            write_report(rows, out, about)
            for r in rows:
                params = "-" if r.parameters is None else f"{r.parameters / 1e6:.2f} M"
                print(f"{name:10s} {r.name:20s} {params:>8s} cos {r.cosine:.3f} L2 {r.l2:.3f} "
                      f"mIoU paper {r.paper.mIoU:.3f} query {r.query.mIoU:.3f} AP50 {r.query.AP50:.2f}")
            target = Path(args.out)
            target.mkdir(parents=True, exist_ok=True)
            for suffix in ("json", "png"):
                (target / f"eval_{name}.{suffix}").write_bytes((out / f"eval.{suffix}").read_bytes())


if __name__ == "__main__":
    main()
