"""Camera pose refinement with and without, side by side, on the real APC shelf: memory quality
built from the given poses, from keyframe odometry (``--poses odometry``), and from the given
poses disturbed by a known noise.

Variants (``--variants``), all from the same region-embedding label maps (``m3 eval --labels``,
:mod:`m3_memory.query.labels`), the same features and principal scene components:

- ``given``: the recording's poses, no refinement;
- ``odometry`` / ``odometry + refine``: every pose from
  :func:`~m3_memory.recording.odometry.estimate_trajectory` (the given ones unused; world = the
  first camera), Gaussians initialised from RGB-D at those poses, refinement off / on;
- ``noisy`` / ``noisy + refine``: every given pose moved by a seeded random rigid motion of
  ``--noise-cm`` and ``--noise-deg`` (random direction and axis, in the camera's frame),
  Gaussians initialised at the disturbed poses, refinement off / on: the refinement should move
  the poses back.

They train interleaved (:func:`depth_supervision.side_by_side`: the same view index of each
variant in the same order, CPU seconds around each variant's own steps), the fast preset's
settings at ``--iterations`` (fewer than its 600, to fit four or five variants on two shared
cores). Held-out protocol: a variant that refines poses refines each held-out view's pose with
its Gaussians frozen (:meth:`Trainer.refine_view`, ``pose_refine_eval_steps`` steps, colour and
depth loss) and scores it there; the others score at the held-out views' poses as they are.
Per variant: held-out PSNR, feature cosine, depth error (median, p90), label mIoU (memory and
raw maps) and 3D target error over the held-out views, the corrections' size, the poses'
error against the given ones before and after training (ATE by the first pose and by a rigid
fit, :func:`~m3_memory.recording.odometry.trajectory_errors`, all views), CPU seconds.

    python bench/pose_refine.py [--iterations 200] [--variants ...] [--noise-cm 1.5 --noise-deg 1.5]
    # writes bench/results/pose_refine.json and pose_refine.png
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from depth_supervision import APC, side_by_side  # noqa: E402

from m3_memory.conventions import invert_T, motion_size  # noqa: E402
from m3_memory.foundation import load_model  # noqa: E402
from m3_memory.memory.artifact import CameraView, Memory  # noqa: E402
from m3_memory.query.labels import prepare_labels, score_memory  # noqa: E402
from m3_memory.recording.odometry import estimate_trajectory, trajectory_errors  # noqa: E402
from m3_memory.training.build import Prepared, prepare  # noqa: E402
from m3_memory.training.config import TrainConfig  # noqa: E402
from m3_memory.training.init import init_from_rgbd  # noqa: E402
from m3_memory.training.poses import se3_exp  # noqa: E402
from m3_memory.training.trainer import Trainer  # noqa: E402

# variant -> (poses: "given", "odometry" or "noisy"; refine)
VARIANTS = {"given": ("given", False), "odometry": ("odometry", False), "odometry + refine": ("odometry", True),
            "noisy": ("noisy", False), "noisy + refine": ("noisy", True)}


def reposed(prep: Prepared, poses: list[np.ndarray], cfg: TrainConfig) -> Prepared:
    """``prep`` with every frame and view at ``poses`` (T_world_cam [4, 4] per frame) and its
    Gaussians initialised again from RGB-D at those poses (features and banks kept: they do not
    depend on the poses), as a build from a recording with these poses would start."""
    frames = [replace(f, T_world_cam=np.asarray(T, dtype=np.float64)) for f, T in zip(prep.frames, poses)]
    train = [f for i, f in enumerate(frames) if i not in prep.test_idx]
    gaussians = init_from_rgbd(train, query_dim=prep.gaussians.queries.shape[1], voxel=cfg.voxel,
                               stride=cfg.init_stride, depth_max=cfg.depth_max, seed=cfg.seed,
                               source=str(prep.recording.path), sparse=prep.recording.sparse_points())
    if len(gaussians) > cfg.max_gaussians:
        keep = torch.randperm(len(gaussians), generator=torch.Generator().manual_seed(cfg.seed))[:cfg.max_gaussians]
        gaussians = gaussians.subset(keep)
    views = [replace(v, T_world_cam=f.T_world_cam) for v, f in zip(prep.views, frames)]
    return replace(prep, frames=frames, gaussians=gaussians, views=views)


def disturbed(poses: list[np.ndarray], metres: float, degrees: float, seed: int) -> list[np.ndarray]:
    """Each pose T_world_cam [4, 4] moved by ``T @ exp(xi)``: a translation of ``metres`` and a
    rotation of ``degrees`` about a random axis, both in random directions of the camera's frame."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for T in poses:
        t, r = torch.nn.functional.normalize(torch.randn(2, 3, generator=g, dtype=torch.float64), dim=-1)
        xi = torch.cat([t * metres, r * np.radians(degrees)])
        out.append(np.asarray(T, dtype=np.float64) @ se3_exp(xi).numpy())
    return out


def memory_of(trainer: Trainer, prep: Prepared, test_poses: list[np.ndarray]) -> Memory:
    """The memory a build would write from ``trainer`` (training views at the poses the trainer
    agrees with, held-out views at ``test_poses``), for :func:`score_memory`."""
    tests = iter(test_poses)
    cameras = [CameraView(v.name, f.K, f.rgb.shape[1], f.rgb.shape[0],
                          next(tests) if i in prep.test_idx else trainer.pose(v), "test" if i in prep.test_idx else "train")
               for i, (v, f) in enumerate(zip(prep.views, prep.frames))]
    return Memory(trainer.gaussians(), trainer.banks, prep.entries, source=str(prep.recording.path),
                  training={"background": trainer.background.detach().tolist()}, cameras=cameras)


def finish(name: str, run: dict, prep: Prepared, labels, given: list[np.ndarray]) -> dict:
    """Held-out scores of one trained variant (the module's protocol) and its poses' errors."""
    trainer: Trainer = run.pop("_trainer")
    start = time.process_time()
    refine = trainer.poses is not None and trainer.cfg.pose_refine_eval_steps > 0
    test = [trainer.refine_view(v, trainer.cfg.pose_refine_eval_steps) if refine else v for v in prep.test]
    final = trainer.evaluate(test)
    raw, mem, _ = score_memory(memory_of(trainer, prep, [v.T_world_cam for v in test]), labels)
    tests = iter(test)
    after = [next(tests).T_world_cam if i in prep.test_idx else trainer.pose(v) for i, v in enumerate(prep.views)]
    before = [v.T_world_cam for v in prep.views]
    heldout_fix = [motion_size(invert_T(np.asarray(a, dtype=np.float64)) @ b.T_world_cam)
                   for a, b in zip((v.T_world_cam for v in prep.test), test)] if refine else []
    out = {**run, "final": final, "eval_cpu_s": time.process_time() - start,
           "labels": {"mIoU": mem.mIoU, "mIoU_raw": raw.mIoU, "mIoU_vs_raw": mem.mIoU / raw.mIoU if raw.mIoU else None,
                      "iou": mem.iou, "iou_raw": raw.iou, "target_error": mem.target_summary(),
                      "target_error_real_depth": mem.target_summary("error_real_depth"), "targets": mem.targets},
           "corrections": {"train": trainer.poses.summary() if trainer.poses is not None else None,
                           "heldout": [{"m": m, "deg": d} for m, d in heldout_fix]},
           "poses_vs_given": {"before": trajectory_errors(before, given), "after": trajectory_errors(after, given)}}
    t = out["labels"]["target_error"]
    print(f"  {name:18} PSNR {final['psnr']:.2f} dB, cos {final['cos.precomputed']:.4f}, depth median "
          f"{100 * final.get('depth_median_m', float('nan')):.2f} cm, mIoU {mem.mIoU:.3f} / raw {raw.mIoU:.3f}, "
          f"target {100 * (t['median'] or float('nan')):.2f} / {100 * (t['worst'] or float('nan')):.2f} cm, "
          f"ATE rigid {100 * out['poses_vs_given']['before']['ate_rigid_rmse_m']:.2f} -> "
          f"{100 * out['poses_vs_given']['after']['ate_rigid_rmse_m']:.2f} cm, {run['cpu_s']:.0f} CPU s", flush=True)
    return out


def plot(results: dict, path: Path) -> None:
    """pose_refine.png: per variant, held-out PSNR, label mIoU (share of the raw maps'), 3D
    target error and depth error, and the poses' error against the given ones before / after."""
    runs = results.get("variants", {})
    names = list(runs)
    x = np.arange(len(names))
    fig, axes = plt.subplots(1, 5, figsize=(20, 4))
    panels = [("held-out PSNR (dB)", [r["final"]["psnr"] for r in runs.values()], None),
              ("label mIoU, % of raw maps'", [100 * (r["labels"]["mIoU_vs_raw"] or 0) for r in runs.values()], 95),
              ("3D target error median (cm)", [100 * (r["labels"]["target_error"]["median"] or np.nan)
                                               for r in runs.values()], 2),
              ("held-out depth error median (cm)", [100 * r["final"].get("depth_median_m", np.nan)
                                                    for r in runs.values()], 1)]
    for ax, (title, values, target) in zip(axes, panels):
        ax.bar(x, values, color=[f"C{i}" for i in range(len(names))])
        if target is not None:
            ax.axhline(target, c="k", lw=0.8, ls="--")
        ax.set_title(title, fontsize=9)
    ax = axes[4]
    for k, key in enumerate(("before", "after")):
        ax.bar(x + (k - 0.5) * 0.4, [100 * r["poses_vs_given"][key]["ate_rigid_rmse_m"] for r in runs.values()], 0.4,
               label=f"{key} training")
    ax.set_title("poses vs given: ATE, rigid fit (cm)", fontsize=9)
    ax.legend(fontsize=7)
    for ax in axes:
        ax.set_xticks(x, [n.replace(" + ", "\n+ ") for n in names], fontsize=7)
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle(f"APC shelf, {results['iterations']} iterations side by side (fast preset's settings), "
                 f"noise {results['noise']['cm']} cm / {results['noise']['deg']} deg", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--noise-cm", type=float, default=1.5, help="translation of the disturbed poses (cm)")
    ap.add_argument("--noise-deg", type=float, default=1.5, help="rotation of the disturbed poses (degrees)")
    ap.add_argument("--refine-steps", type=int, default=TrainConfig.pose_refine_eval_steps,
                    help="steps refining a held-out view's pose with the Gaussians frozen")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (also the compositor's)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--realdata", type=Path, default=ROOT.parent / "shared" / "realdata",
                    help="folder holding the real sequences (default: ../shared/realdata)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    source = args.realdata / APC
    results: dict = {"bench": "pose_refine", "scene": str(source), "load_before": os.getloadavg(),
                     "torch_threads": torch.get_num_threads(), "preset": "fast", "iterations": args.iterations,
                     "refine_steps": args.refine_steps, "noise": {"cm": args.noise_cm, "deg": args.noise_deg, "seed": 0}}
    if not source.is_dir():
        results.update(status="skipped", reason=f"data folder {source} is absent")
        print(results["reason"])
        return 0
    wall = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        labels = prepare_labels(source, tmp / "features")
        model = load_model("precomputed", weights=str(labels.folder))
        cfg = TrainConfig.fast(iterations=args.iterations, pose_refine_eval_steps=args.refine_steps)
        prep = prepare(source, cfg, [model], cache_root=tmp / "cache", show_progress=False)
        given = [np.asarray(f.T_world_cam, dtype=np.float64) for f in prep.frames]
        preps = {"given": prep}
        kinds = {VARIANTS[n][0] for n in args.variants}
        if "odometry" in kinds:
            trajectory = estimate_trajectory(prep.frames)
            if trajectory.flagged:
                raise SystemExit(f"odometry flagged frames {trajectory.flagged}: no pose to build them at")
            preps["odometry"] = reposed(prep, trajectory.poses, cfg)
            results["odometry"] = {"seconds": trajectory.seconds, "vs_given": trajectory_errors(trajectory.poses, given)}
        if "noisy" in kinds:
            preps["noisy"] = reposed(prep, disturbed(given, args.noise_cm / 100, args.noise_deg, 0), cfg)
        print(f"APC: {len(prep.views)} views, {len(prep.test)} held out, {args.iterations} iterations, "
              f"variants {', '.join(args.variants)}", flush=True)
        runs = side_by_side({n: (preps[VARIANTS[n][0]], cfg.with_(pose_refine=VARIANTS[n][1])) for n in args.variants},
                            log_every=50, final=False)
        results["variants"] = {n: finish(n, r, preps[VARIANTS[n][0]], labels, given) for n, r in runs.items()}
    results.update(wall_s=time.perf_counter() - wall, load_after=os.getloadavg())
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "pose_refine.json").write_text(json.dumps(results, indent=1) + "\n")
    plot(results, args.out / "pose_refine.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
