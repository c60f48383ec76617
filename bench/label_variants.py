"""What limits label mIoU on the real APC shelf: training variants side by side, scored with
``m3 eval --labels``'s protocol (:mod:`m3_memory.query.labels`).

Every variant trains from the same prepared scene (region-embedding label maps through the
``precomputed`` model, the same Gaussians and principal scene components), interleaved one step
each (:func:`depth_supervision.side_by_side`), the fast preset's settings at ``--iterations``.
Per variant: label mIoU of the memory (rendered at the recording's full resolution, as ``m3 eval
--labels`` scores) and of the raw maps, the same with the memory rendered at its training
resolution and upsampled like the raw maps (does rendering above the training resolution lose
boundaries?), per-label IoU, the 3D target error, held-out PSNR and feature cosine, CPU seconds.

    python bench/label_variants.py [--iterations 300] [--variants base "lr_query 5e-3" "feature_pixels 8000"]
    # writes bench/results/label_variants.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from depth_supervision import APC, side_by_side  # noqa: E402
from pose_refine import memory_of  # noqa: E402

from m3_memory.foundation import load_model  # noqa: E402
from m3_memory.memory.artifact import CameraView  # noqa: E402
from m3_memory.query.camera import Camera  # noqa: E402
from m3_memory.query.labels import nearest_label, prepare_labels, score_memory, upsampled  # noqa: E402
from m3_memory.query.render import render_features  # noqa: E402
from m3_memory.training.build import prepare  # noqa: E402
from m3_memory.training.config import TrainConfig  # noqa: E402

# variant -> TrainConfig changes from the fast preset ("base": none); "authors' lr_query" is the
# authors' query learning rate, the fast preset's before it was raised
VARIANTS = {"base": {}, "authors' lr_query 5e-4": {"lr_query": 5e-4}, "lr_query 5e-3": {"lr_query": 5e-3},
            "feature_pixels 8000": {"feature_pixels": 8000}, "feature_weight 1.0": {"feature_weight": 1.0}}


def miou_at_training_size(memory, prep, labels) -> tuple[float, dict[str, float]]:
    """Objects' mIoU and per-label IoU of ``memory`` rendered at each held-out view's training
    size (its pose and intrinsics as trained), bilinearly upsampled to the label images."""
    k = len(labels.names)
    inter, union = np.zeros(k), np.zeros(k)
    for i in prep.test_idx:
        view, gt = prep.views[i], labels.labels[i]
        width, height = view.size
        camera = Camera.from_view(CameraView(view.name, view.K, width, height, memory.cameras[i].T_world_cam, "test"))
        pred = nearest_label(upsampled(render_features(memory, camera, "precomputed", background=True).features,
                                       *gt.shape), labels.embeddings)
        for c in range(k):
            inter[c] += ((gt == c) & (pred == c)).sum()
            union[c] += ((gt == c) | (pred == c)).sum()
    iou = {labels.names[c]: float(inter[c] / union[c]) for c in range(k) if union[c]}
    objects = [iou[n] for n in labels.names[1:] if n in iou]
    return float(np.mean(objects)) if objects else 0.0, iou


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--variants", nargs="*", default=["authors' lr_query 5e-4", "lr_query 5e-3", "feature_pixels 8000"],
                    choices=list(VARIANTS))
    ap.add_argument("--threads", type=int, default=1, help="torch threads (also the compositor's)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--realdata", type=Path, default=ROOT.parent / "shared" / "realdata",
                    help="folder holding the real sequences (default: ../shared/realdata)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    source = args.realdata / APC
    results: dict = {"bench": "label_variants", "scene": str(source), "load_before": os.getloadavg(),
                     "torch_threads": torch.get_num_threads(), "iterations": args.iterations,
                     "base": TrainConfig.fast(iterations=args.iterations).to_json()}
    if not source.is_dir():
        print(f"data folder {source} is absent: skipped")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        labels = prepare_labels(source, tmp / "features")
        model = load_model("precomputed", weights=str(labels.folder))
        cfg = TrainConfig.fast(iterations=args.iterations)
        prep = prepare(source, cfg, [model], cache_root=tmp / "cache", show_progress=False)
        runs = side_by_side({n: (prep, cfg.with_(**VARIANTS[n])) for n in args.variants}, log_every=50, final=False)
        results["variants"] = {}
        for name, run in runs.items():
            trainer = run.pop("_trainer")
            memory = memory_of(trainer, prep, [v.T_world_cam for v in prep.test])
            raw, mem, _ = score_memory(memory, labels)
            small, small_iou = miou_at_training_size(memory, prep, labels)
            results["variants"][name] = {
                "changes": VARIANTS[name], **run, "final": trainer.evaluate(prep.test), "mIoU": mem.mIoU,
                "mIoU_raw": raw.mIoU, "mIoU_vs_raw": mem.mIoU / raw.mIoU, "iou": mem.iou, "iou_raw": raw.iou,
                "mIoU_training_size": small, "mIoU_training_size_vs_raw": small / raw.mIoU, "iou_training_size": small_iou,
                "target_error": mem.target_summary()}
            print(f"  {name:24} mIoU {mem.mIoU:.3f} ({100 * mem.mIoU / raw.mIoU:.1f}% of raw {raw.mIoU:.3f}), "
                  f"at training size {small:.3f}, {run['cpu_s']:.0f} CPU s", flush=True)
    results["load_after"] = os.getloadavg()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "label_variants.json").write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
