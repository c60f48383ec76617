"""Benchmark: RGB-D odometry against the given camera poses of real posed sequences.

Runs :func:`m3_memory.recording.odometry.estimate_poses` on each sequence without using
its poses, compares the estimate with the given poses (:func:`trajectory_errors`), writes
``bench/results/odometry.json`` and ``bench/results/odometry.png`` (top view of estimated
vs given camera centres) and prints a table. A sequence whose data folder is absent is
recorded as skipped, with the reason.

    python bench/odometry.py [--realdata ../shared/realdata] [--method hybrid] [--depth-max 3.0]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import open3d as o3d  # noqa: E402

from m3_memory.conventions import invert_T  # noqa: E402
from m3_memory.recording import open_recording  # noqa: E402
from m3_memory.recording.odometry import Odometry, OdometryConfig, trajectory_errors  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"

# (name, folder under the realdata root, recording format, what it is)
SEQUENCES = (
    ("3dmatch_lounge", "nvblox_3dmatch_sun3d/nvblox/tests/data/3dmatch", "3dmatch",
     "SUN3D lounge, 640x480, frames 0, 1, 2, 116, 422 (two large gaps)"),
    ("apc2016_shelf", "apc2016_realsense_shelf/data/sample/scene-0000", "apc2016",
     "RealSense F200 shelf bin, 640x480, 15 frames ~12 deg apart, sparse registered depth"),
)


def _motion(T: np.ndarray) -> tuple[float, float]:
    """(translation metres, rotation degrees) of a relative pose T [4, 4]."""
    angle = np.degrees(np.arccos(np.clip((np.trace(T[:3, :3]) - 1.0) / 2.0, -1.0, 1.0)))
    return float(np.linalg.norm(T[:3, 3])), float(angle)


def run_sequence(path: Path, fmt: str, config: OdometryConfig) -> dict:
    """Odometry over one recording: errors against its given poses, per-pair details and
    the camera centres for the plot (estimate aligned by its first pose, metres)."""
    odometry = Odometry(config)
    names, T_gt, T_est = [], [], []
    start = time.perf_counter()
    for frame in open_recording(path, fmt=fmt):
        if frame.T_world_cam is None:
            raise RuntimeError(f"{path}: {frame.name} has no given pose to compare with")
        names.append(frame.name)
        T_gt.append(frame.T_world_cam)
        T_est.append(odometry(frame).T_world_cam)
    wall = time.perf_counter() - start
    pairs = []
    for r in odometry.results:
        rel_gt = invert_T(T_gt[r.index - 1]) @ T_gt[r.index]
        gt_t, gt_r = _motion(rel_gt)
        err_t, err_r = _motion(invert_T(rel_gt) @ r.T_prev_cur)
        pairs.append({"from": names[r.index - 1], "to": names[r.index], "given_motion_m": gt_t,
                      "given_motion_deg": gt_r, "error_m": err_t, "error_deg": err_r, "fitness": r.fitness,
                      "failed": r.failed, "reason": r.reason, "seconds": r.seconds})
    T_align = T_gt[0] @ invert_T(T_est[0])
    return {
        "status": "ok",
        **trajectory_errors(T_est, T_gt),
        "failures": odometry.failures,
        "seconds_per_pair": float(np.mean([r.seconds for r in odometry.results])) if odometry.results else None,
        "wall_seconds": wall,
        "pairs": pairs,
        "_plot": {"given": np.stack([T[:3, 3] for T in T_gt]),
                  "estimated": np.stack([(T_align @ T)[:3, 3] for T in T_est]),
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
        ax.plot(p["estimated"][:, a], p["estimated"][:, b], "x--", color="tab:red", label="odometry (first-pose aligned)")
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
        "config": dataclasses.asdict(config),
        "sequences": {name: {k: v for k, v in r.items() if k != "_plot"} for name, r in results.items()},
    }
    (args.out / "odometry.json").write_text(json.dumps(report, indent=2) + "\n")

    print(f"odometry bench: open3d {o3d.__version__}, method {config.method}, depth_max {config.depth_max} m")
    print(f"{'sequence':16} {'frames':>6} {'ATE rmse/max (cm)':>18} {'ATE rigid (cm)':>15} "
          f"{'RPE t mean/max (cm)':>20} {'RPE r mean/max (deg)':>21} {'fails':>5} {'s/pair':>7}")
    for name, r in results.items():
        if r["status"] != "ok":
            print(f"{name:16} skipped: {r['reason']}")
            continue
        print(f"{name:16} {r['frames']:>6} "
              f"{_fmt(r['ate_first_rmse_m'], 100, 1) + '/' + _fmt(r['ate_first_max_m'], 100, 1):>18} "
              f"{_fmt(r['ate_rigid_rmse_m'], 100, 1):>15} "
              f"{_fmt(r['rpe_trans_mean_m'], 100, 1) + '/' + _fmt(r['rpe_trans_max_m'], 100, 1):>20} "
              f"{_fmt(r['rpe_rot_mean_deg'], 1, 2) + '/' + _fmt(r['rpe_rot_max_deg'], 1, 2):>21} "
              f"{r['failures']:>5} {_fmt(r['seconds_per_pair'], 1, 3):>7}")
    print(f"wrote {args.out / 'odometry.json'} and {args.out / 'odometry.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
