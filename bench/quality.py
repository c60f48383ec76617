"""Quality per minute on the CPU, and grounding on real labels (``m3 eval --labels``), on the APC
shelf and the synthetic tabletop.

Per scene: region-embedding label maps (1/8 resolution, 64 dims; :mod:`m3_memory.query.labels`)
built into a memory with the fast preset (600 iterations), then the same build trained on to 2x
and 4x its iterations (``--resume`` with more iterations: the fast preset's densification has
ended by iteration 450; the position learning rate's decay is stretched to the new end). After
each phase, on the held-out views: PSNR and feature cosine (the build's report), label mIoU
(memory and raw maps) and the 3D target error, against cumulative wall and CPU time.

    python bench/quality.py [--scenes apc synthetic] [--factors 1 2 4] [--apc FOLDER]
    # writes bench/results/quality_<scene>.json after every phase, quality.png from those present,
    # and labels_<scene>.{json,png} for the fast preset (the 1x phase)

Targets (issue 18, APC, held-out views, fast preset or the chosen CPU default): memory mIoU >= 95%
of the raw maps'; 3D target error median <= 2 cm, worst <= 4 cm; each point says whether it meets them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
APC = Path(__file__).resolve().parents[2] / "shared" / "realdata" / "apc2016_realsense_shelf" / "data" / "sample" / "scene-0000"


def targets(raw, mem) -> dict:
    """The issue's targets and whether they are met."""
    t = mem.target_summary()
    share = mem.mIoU / raw.mIoU if raw.mIoU else 0.0
    return {"mIoU_vs_raw": {"value": share, "target": 0.95, "met": share >= 0.95},
            "target_error_median_m": {"value": t["median"], "target": 0.02,
                                      "met": t["median"] is not None and t["median"] <= 0.02},
            "target_error_worst_m": {"value": t["worst"], "target": 0.04,
                                     "met": t["worst"] is not None and t["worst"] <= 0.04 and t["missed"] == 0}}


def run_scene(scene: str, source: Path, factors: list[int], tmp: Path, out: Path) -> None:
    from m3_memory.memory.artifact import load_memory
    from m3_memory.query.labels import label_about, prepare_labels, score_memory, write_label_report
    from m3_memory.training.build import build_memory, checkpoint_path
    from m3_memory.training.config import TrainConfig

    fast = TrainConfig.fast()
    labels = prepare_labels(source, tmp / "features")
    keep = tmp / "kept.ckpt"
    points, wall, cpu = [], 0.0, 0.0
    for k, factor in enumerate(sorted(factors)):
        cfg = fast.with_(iterations=fast.iterations * factor)
        memory_path = tmp / f"x{factor}.m3"

        def keeper(stage: str, fraction: float, message: str) -> None:
            if stage == "write":  # the last iteration's checkpoint exists; the build deletes it after writing
                shutil.copyfile(checkpoint_path(memory_path), keep)

        if k:
            shutil.copyfile(keep, checkpoint_path(memory_path))
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        report = build_memory(source, memory_path, model="precomputed", weights=str(labels.folder), config=cfg,
                              resume=bool(k), progress=keeper, cache_root=tmp / "cache", show_progress=False)
        phase_wall, phase_cpu = time.perf_counter() - start_wall, time.process_time() - start_cpu
        # a continued build would not read, extract and initialise again: count those once
        setup = sum(report.seconds.get(s, 0.0) for s in ("read", "features", "psc", "init"))
        wall += phase_wall - (setup if k else 0.0)
        cpu += phase_cpu * (1 - setup / phase_wall if k else 1)
        raw, mem, shown = score_memory(load_memory(memory_path), labels)
        point = {"factor": factor, "iterations": report.iterations, "wall_s": wall, "cpu_s": cpu,
                 "phase_seconds": report.seconds, "gaussians": report.num_gaussians, "load": os.getloadavg(),
                 "psnr": report.final.get("psnr"), "feature_cosine": report.final.get("cos.precomputed"),
                 "mIoU": mem.mIoU, "mIoU_raw": raw.mIoU, "iou": mem.iou, "accuracy": mem.accuracy,
                 "target_error": mem.target_summary(), "target_error_real_depth": mem.target_summary("error_real_depth"),
                 "targets": targets(raw, mem)}
        points.append(point)
        print(f"{scene} x{factor}: {wall / 60:.1f} min, PSNR {point['psnr']:.2f}, cos {point['feature_cosine']:.3f}, "
              f"mIoU {mem.mIoU:.3f} / raw {raw.mIoU:.3f}, target error {point['target_error']}", flush=True)
        data = {"scene": scene, "recording": str(source), "preset": "fast", "label_maps": vars(labels.cfg),
                "threads": __import__("torch").get_num_threads(), "points": points}
        (out / f"quality_{scene}.json").write_text(json.dumps(data, indent=1))
        if factor == 1:
            about = label_about(labels, "test", len(shown), report, phase_wall)
            about.update(preset="fast", load=os.getloadavg())
            write_label_report(raw, mem, tmp / "report", about, shown)
            data = json.loads((tmp / "report" / "labels.json").read_text())
            data["targets"] = targets(raw, mem)
            (out / f"labels_{scene}.json").write_text(json.dumps(data, indent=1))
            (out / f"labels_{scene}.png").write_bytes((tmp / "report" / "labels.png").read_bytes())
        plot(out)


def plot(out: Path) -> None:
    """quality.png: the four measures against cumulative wall minutes, one line per scene."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [json.loads(p.read_text()) for p in sorted(out.glob("quality_*.json"))]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8))
    for run in runs:
        pts = run["points"]
        t = [p["wall_s"] / 60 for p in pts]
        for ax, key in zip(axes[:3], ("psnr", "feature_cosine", "mIoU")):
            ax.plot(t, [p[key] for p in pts], "o-", label=run["scene"])
            for p, x in zip(pts, t):
                ax.annotate(f"{p['factor']}x", (x, p[key]), fontsize=7)
        axes[2].plot(t, [p["mIoU_raw"] for p in pts], ":", c="grey")
        axes[3].plot(t, [p["target_error"]["median"] * 100 for p in pts], "o-", label=f"{run['scene']} median")
        axes[3].plot(t, [p["target_error"]["worst"] * 100 for p in pts], "x--", label=f"{run['scene']} worst")
    for ax, title in zip(axes, ("held-out PSNR (dB)", "feature cosine (label maps)", "label mIoU (dotted: raw maps)",
                                "3D target error (cm)")):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("wall minutes (2 shared cores)")
        ax.legend(fontsize=7)
    axes[3].axhline(2, c="k", lw=0.6, ls="--")
    axes[3].axhline(4, c="k", lw=0.6, ls=":")
    fig.suptitle("fast preset (1x = 600 iterations) trained on to 2x and 4x", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "quality.png", dpi=100)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", nargs="*", default=["apc", "synthetic"], choices=["apc", "synthetic"])
    ap.add_argument("--factors", type=int, nargs="*", default=[1, 2, 4], help="multiples of the fast preset's iterations")
    ap.add_argument("--apc", default=str(APC), help="the APC scene folder")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--threads", type=int, default=1, help="torch threads (also the compositor's)")
    args = ap.parse_args()

    import torch

    from m3_memory.synth import SynthConfig, write_synthetic

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for scene in args.scenes:
            if scene == "apc" and not Path(args.apc).is_dir():
                print(f"APC scene not found at {args.apc}: skipped")
                continue
            source = Path(args.apc) if scene == "apc" else write_synthetic(
                tmp / "synth", SynthConfig(width=320, height=240, n_frames=48), realsense=False, rosbag2=False,
                show_progress=False).folder
            run_scene(scene, source, args.factors, tmp / scene, out)


if __name__ == "__main__":
    main()
