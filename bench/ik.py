"""Z1 inverse kinematics round trips: success rate, FK check errors and time per solve.

Poses come from random joint configurations within the limits (so every one is reachable),
pushed through FK; IK then starts from its own seeds (never the true configuration). Two
sets: any pose, and grasp-like poses (tool axis within 45 degrees of straight down, tool
centre in front of the B1). A solution counts only when FK of it lands within 1 mm and
1 degree of the target and it respects the joint limits.

    python bench/ik.py            # writes bench/results/ik.json (about 3 s)
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from m3_grasp.kinematics import POSITION_TOL, ROTATION_TOL, Z1Kinematics, pose_errors

RESULTS = Path(__file__).resolve().parent / "results"


def sample_poses(kin: Z1Kinematics, n: int, grasp_like: bool, rng: np.random.Generator) -> list[np.ndarray]:
    """n reachable tool poses T_base_ee [4, 4] (FK of random configurations inside the limits)."""
    poses = []
    while len(poses) < n:
        T = kin.fk(rng.uniform(kin.lower + kin.margin, kin.upper - kin.margin))
        if not grasp_like or (T[2, 0] <= -np.cos(np.deg2rad(45)) and T[0, 3] > kin.T_base_armbase[0, 3]):
            poses.append(T)
    return poses


def run_set(kin: Z1Kinematics, poses: list[np.ndarray], rng: np.random.Generator) -> dict:
    ok, p_err, r_err, iters, seconds = [], [], [], [], []
    for T in poses:
        t0 = time.perf_counter()
        result = kin.ik(T, rng=rng)
        seconds.append(time.perf_counter() - t0)
        p, r = pose_errors(kin.fk(result.q), T)
        success = result.success and p < POSITION_TOL and r < ROTATION_TOL and kin.within_limits(result.q)
        ok.append(success)
        iters.append(result.iterations)
        if success:
            p_err.append(p)
            r_err.append(r)
    p_err, r_err = np.array(p_err), np.degrees(np.array(r_err))
    return {"poses": len(poses), "success_rate": float(np.mean(ok)), "failures": int(len(ok) - sum(ok)),
            "fk_position_error_m": {"max": float(p_err.max()), "p99": float(np.percentile(p_err, 99)),
                                    "median": float(np.median(p_err))},
            "fk_rotation_error_deg": {"max": float(r_err.max()), "p99": float(np.percentile(r_err, 99)),
                                      "median": float(np.median(r_err))},
            "iterations": {"median": float(np.median(iters)), "max": int(np.max(iters))},
            "seconds_per_solve": {"median": float(np.median(seconds)), "p99": float(np.percentile(seconds, 99))}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--poses", type=int, default=1000, help="poses per set")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    kin = Z1Kinematics.from_urdf()
    rng = np.random.default_rng(0)
    results = {"urdf": kin.urdf.name, "pinocchio": __import__("pinocchio").__version__, "machine": platform.processor()
               or platform.machine(), "tolerance": {"position_m": POSITION_TOL, "rotation_deg": float(np.degrees(ROTATION_TOL))},
               "joint_margin_rad": kin.margin}
    for name, grasp_like in (("any_pose", False), ("grasp_like", True)):
        results[name] = run_set(kin, sample_poses(kin, args.poses, grasp_like, rng), rng)
        r = results[name]
        print(f"{name}: {r['success_rate']:.2%} of {r['poses']} solved, FK error max {r['fk_position_error_m']['max']:.1e} m "
              f"/ {r['fk_rotation_error_deg']['max']:.1e} deg, {r['seconds_per_solve']['median'] * 1000:.1f} ms median")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ik.json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
