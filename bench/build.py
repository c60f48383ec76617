"""End-to-end CPU builds with the ``fast`` preset, time per stage, held-out quality; and the
fixed vs learned projection W_m comparison (M3's paper learns W_m, the authors' code keeps it fixed).

- APC shelf scene (15 RealSense F200 frames, 640x480, ../shared/realdata) with the fixture CLIP
  (real CLIP weights cannot be downloaded here). Target: <= 10 minutes on a 2-core machine.
- The synthetic tabletop (48 frames, 320x240), fixed W vs learned W, same budget.
- The cost real CLIP (ViT-L/14@336) would add: forward time of the architecture with random
  weights on one 336x448 image, times the frame count.

    python bench/build.py [--quick]    # writes bench/results/build.json and build.png
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
APC = ROOT.parent / "shared" / "realdata" / "apc2016_realsense_shelf" / "data" / "sample" / "scene-0000"
sys.path.insert(0, str(ROOT))


def build(recording: Path, work: Path, name: str, **overrides) -> dict:
    from m3_memory.training.build import build_memory
    from m3_memory.training.config import TrainConfig

    t0 = time.perf_counter()
    report = build_memory(recording, work / f"{name}.m3", model="clip-fixture", config=TrainConfig.fast(**overrides),
                          cache_root=work / f"cache_{name}", show_progress=False)
    return {"wall_s": time.perf_counter() - t0, "stages_s": report.seconds, "initial": report.initial,
            "final": report.final, "gaussians": report.num_gaussians, "iterations": report.iterations,
            "models": report.models, "config": {"preset": "fast", **overrides}}


def vitl_seconds_per_frame() -> float:
    """Seconds per 336x336 image through ViT-L/14@336 (random weights: compute cost only; a
    4:3 frame at 336 px short side has a third more patches)."""
    import open_clip
    import torch

    model = open_clip.create_model("ViT-L-14-336", pretrained=None).eval()
    x = torch.randn(1, 3, 336, 336)
    with torch.no_grad():
        model.encode_image(x)  # warm-up
        t0 = time.perf_counter()
        for _ in range(2):
            model.encode_image(x)
    return (time.perf_counter() - t0) / 2


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="100 iterations, for checking the script")
    args = parser.parse_args()
    quick = {"iterations": 100} if args.quick else {}
    out = {"machine": platform.processor() or platform.machine(), "python": platform.python_version()}
    import torch

    out["torch_threads"] = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if APC.is_dir():
            out["apc_fast"] = build(APC, work, "apc", **quick)
            print("apc", json.dumps(out["apc_fast"], indent=1), flush=True)
        from m3_memory.synth import SynthConfig, write_synthetic

        scene = write_synthetic(work / "synth", SynthConfig(n_frames=48), show_progress=False).folder
        out["synthetic_fixed_W"] = build(scene, work, "fixed", **quick)
        print("fixed", json.dumps(out["synthetic_fixed_W"], indent=1), flush=True)
        out["synthetic_learned_W"] = build(scene, work, "learned", learn_projection=True, **quick)
        print("learned", json.dumps(out["synthetic_learned_W"], indent=1), flush=True)
    out["clip_vitl336_s_per_frame_336px"] = vitl_seconds_per_frame()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "build.json").write_text(json.dumps(out, indent=1))
    runs = [k for k in ("apc_fast", "synthetic_fixed_W", "synthetic_learned_W") if k in out]
    fig, ax = plt.subplots(figsize=(8, 3))
    for i, k in enumerate(runs):
        left = 0.0
        for stage, s in out[k]["stages_s"].items():
            ax.barh(i, s, left=left, label=stage if i == 0 else None)
            left += s
    ax.set_yticks(range(len(runs)), runs)
    ax.set_xlabel("seconds (fast preset, 2-core CPU)")
    ax.legend(ncol=4, fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "build.png", dpi=110)


if __name__ == "__main__":
    main()
