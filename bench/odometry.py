"""Benchmark: RGB-D odometry against the given camera poses of real posed sequences.

Runs frame-to-frame odometry (:class:`~m3_memory.recording.odometry.Odometry`, every pair
accepted) and keyframe odometry with loop closure and pose graph
(:func:`~m3_memory.recording.odometry.estimate_trajectory`, flagged frames left out) on each
sequence without using its poses, compares both with the given poses (:func:`trajectory_errors`), writes
``bench/results/odometry.json`` and ``bench/results/odometry.png`` (top view of estimated
vs given camera centres) and prints a table. A sequence whose data folder is absent is
recorded as skipped, with the reason.

    python bench/odometry.py [--realdata ../shared/realdata] [--method hybrid] [--depth-max 3.0]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import open3d as o3d  # noqa: E402

from m3_memory.conventions import invert_T, motion_size  # noqa: E402
from m3_memory.recording import open_recording  # noqa: E402
from m3_memory.recording.odometry import (  # noqa: E402
    GraphEdge,
    Odometry,
    OdometryConfig,
    estimate_trajectory,
    trajectory_errors,
)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"

# (name, folder under the realdata root, recording format, what it is)
SEQUENCES = (
    ("3dmatch_lounge", "nvblox_3dmatch_sun3d/nvblox/tests/data/3dmatch", "3dmatch",
     "SUN3D lounge, 640x480, frames 0, 1, 2, 116, 422 (two large gaps)"),
    ("apc2016_shelf", "apc2016_realsense_shelf/data/sample/scene-0000", "apc2016",
     "RealSense F200 shelf bin, 640x480, 15 frames ~12 deg apart, sparse registered depth"),
)


def _pairs(names: list[str], T_gt: list[np.ndarray], edges) -> list[dict]:
    """Per registration: the given motion, the error of the estimate, fitness and outcome."""
    out = []
    for e in edges:
        rel_gt = invert_T(T_gt[e.target]) @ T_gt[e.source]
        gt_t, gt_r = motion_size(rel_gt)
        err_t, err_r = motion_size(invert_T(rel_gt) @ e.T_target_source)
        out.append({"from": names[e.target], "to": names[e.source], "loop": e.loop, "given_motion_m": gt_t,
                    "given_motion_deg": gt_r, "error_m": err_t, "error_deg": err_r, "fitness": e.fitness,
                    "failed": e.failed, "pruned": e.pruned, "reason": e.reason})
    return out


def run_sequence(path: Path, fmt: str, config: OdometryConfig) -> dict:
    """Both estimators over one recording: frame-to-frame odometry (every pair accepted, as
    before the fitness floor) and keyframe odometry with loop closure and pose graph (flagged
    frames left out of its errors). Errors against the given poses, per-registration details and
    camera centres for the plot (first-pose aligned, metres)."""
    frames = list(open_recording(path, fmt=fmt))
    if any(f.T_world_cam is None for f in frames):
        raise RuntimeError(f"{path}: a frame has no given pose to compare with")
    names, T_gt = [f.name for f in frames], [f.T_world_cam for f in frames]
    odometry = Odometry(dataclasses.replace(config, min_fitness=0.0, loop_closure=False))
    start = time.perf_counter()
    T_f2f = [odometry(f).T_world_cam for f in frames]
    f2f_wall = time.perf_counter() - start
    trajectory = estimate_trajectory(frames, config)
    kept = [i for i, T in enumerate(trajectory.poses) if T is not None]
    T_lc = [trajectory.poses[i] for i in kept]
    align = lambda Ts, ref: [T_gt[ref] @ invert_T(Ts[0]) @ T for T in Ts]  # noqa: E731
    f2f_edges = [GraphEdge(r.index, r.index - 1, r.T_prev_cur, r.fitness, False, r.failed, r.reason)
                 for r in odometry.results]
    return {
        "status": "ok",
        "frames": len(frames),
        "frame_to_frame": {**trajectory_errors(T_f2f, T_gt), "failures": odometry.failures, "wall_seconds": f2f_wall,
                           "pairs": _pairs(names, T_gt, f2f_edges)},
        "loop_closure": {**trajectory_errors(T_lc, [T_gt[i] for i in kept]), "flagged": len(trajectory.flagged),
                         "flagged_frames": [names[i] for i in trajectory.flagged], "failures": trajectory.failures,
                         "loop_edges": sum(e.loop and not e.failed for e in trajectory.edges),
                         "pruned_edges": sum(e.pruned for e in trajectory.edges),
                         "wall_seconds": trajectory.seconds, "pairs": _pairs(names, T_gt, trajectory.edges)},
        "_plot": {"given": np.stack([T[:3, 3] for T in T_gt]),
                  "frame_to_frame": np.stack([T[:3, 3] for T in align(T_f2f, 0)]),
                  "loop_closure": np.stack([T[:3, 3] for T in align(T_lc, kept[0])]) if kept else np.zeros((0, 3)),
                  "down": np.mean([T[:3, 1] for T in T_gt], axis=0)},
    }


def plot(results: dict, out: Path) -> None:
    """Top view of given vs estimated camera centres, one panel per run sequence. The up
    axis is the world axis closest to the cameras' mean up direction (-y optical)."""
    runs = {name: r["_plot"] for name, r in results.items() if r["status"] == "ok"}
    fig, axes = plt.subplots(1, max(len(runs), 1), figsize=(5.5 * max(len(runs), 1), 5), squeeze=False)
    for ax, (name, p) in zip(axes[0], runs.items()):
        up = int(np.argmax(np.abs(p["down"])))
        a, b = [i for i in range(3) if i != up]
        ax.plot(p["given"][:, a], p["given"][:, b], "o-", color="tab:green", label="given")
        ax.plot(p["frame_to_frame"][:, a], p["frame_to_frame"][:, b], "x--", color="tab:red",
                label="frame-to-frame (first-pose aligned)")
        ax.plot(p["loop_closure"][:, a], p["loop_closure"][:, b], "+-", color="tab:blue",
                label="loop closure, registered frames")
        ax.plot(*p["given"][0, [a, b]], "ks", label="first frame")
        ax.set_title(name)
        ax.set_xlabel(f"world {'xyz'[a]} (m)")
        ax.set_ylabel(f"world {'xyz'[b]} (m)")
        ax.set_aspect("equal", adjustable="datalim")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    if not runs:
        axes[0][0].text(0.5, 0.5, "no sequence ran", ha="center", va="center")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _fmt(value, scale: float = 1.0, digits: int = 3) -> str:
    return "-" if value is None else f"{value * scale:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--realdata", type=Path, default=ROOT.parent / "shared" / "realdata",
                        help="folder holding the real sequences (default: ../shared/realdata)")
    parser.add_argument("--method", default=OdometryConfig.method, help="hybrid, point_to_plane or intensity")
    parser.add_argument("--depth-max", type=float, default=OdometryConfig.depth_max, help="metres")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    args = parser.parse_args(argv)
    config = OdometryConfig(method=args.method, depth_max=args.depth_max)

    results: dict[str, dict] = {}
    for name, folder, fmt, about in SEQUENCES:
        path = args.realdata / folder
        if not path.is_dir():
            results[name] = {"status": "skipped", "reason": f"data folder {path} is absent", "about": about}
            continue
        results[name] = {"about": about, "path": str(path), **run_sequence(path, fmt, config)}

    args.out.mkdir(parents=True, exist_ok=True)
    plot(results, args.out / "odometry.png")
    report = {
        "bench": "odometry",
        "open3d": o3d.__version__,
        "method": config.method,
        "load": os.getloadavg(),
        "config": dataclasses.asdict(config),
        "sequences": {name: {k: v for k, v in r.items() if k != "_plot"} for name, r in results.items()},
    }
    (args.out / "odometry.json").write_text(json.dumps(report, indent=2) + "\n")

    print(f"odometry bench: open3d {o3d.__version__}, method {config.method}, depth_max {config.depth_max} m")
    print(f"{'sequence':16} {'estimator':15} {'frames':>6} {'flagged':>7} {'ATE first rmse (cm)':>19} "
          f"{'ATE rigid rmse (cm)':>19} {'RPE t mean (cm)':>15}")
    for name, r in results.items():
        if r["status"] != "ok":
            print(f"{name:16} skipped: {r['reason']}")
            continue
        for est in ("frame_to_frame", "loop_closure"):
            e = r[est]
            print(f"{name:16} {est:15} {e['frames']:>6} {e.get('flagged', 0):>7} {_fmt(e['ate_first_rmse_m'], 100, 2):>19} "
                  f"{_fmt(e['ate_rigid_rmse_m'], 100, 2):>19} {_fmt(e['rpe_trans_mean_m'], 100, 2):>15}")
    print(f"wrote {args.out / 'odometry.json'} and {args.out / 'odometry.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
