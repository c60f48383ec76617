"""Arm collision checks: the URDF model (pinocchio + coal octree), per configuration.

Scene: the synthetic tabletop (m3_memory.synth.scene) sampled as surface points (table and
legs every 1 cm, floor every 3 cm, objects every 6 mm), seen from the B1 standing at the
table's +y edge facing -y (the grasp demo's pose), in base_link, within 1.5 m of the arm
base. Configurations: uniform within the joint limits, gripper angle uniform in its range.

Measured per configuration: ``ArmCollision.collides`` against the scene only, against self +
trunk + scene, and ``ArmCollision.clearance`` (coal distances); octree build times. The
capsule check this model replaced (capsules between chain frames, the gripper as three
boxes) took 2.8 ms per configuration here (mean, commit 5c50787) and disagreed with the URDF
model about touching the scene in 30 % of the configurations; it is gone from m3_grasp.

    python bench/collision.py      # writes bench/results/collision.json (about 30 s)
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections import Counter
from pathlib import Path

import coal
import numpy as np

from m3_grasp.collision import ArmCollision
from m3_grasp.kinematics import Z1Kinematics
from m3_memory.conventions import invert_T
from m3_memory.robot_pose import T_from_xyz_yaw
from m3_memory.synth.scene import ROBOT_STANCE, tabletop_objects

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test" / "m3_grasp"))
from surfaces import sample_surface  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def tabletop_in_base(kin: Z1Kinematics, rng: np.random.Generator) -> np.ndarray:
    """The synthetic tabletop's surface points [K, 3] in base_link (metres)."""
    objects, background = tabletop_objects(0)
    floor = sample_surface(background[5:], 0.03, rng)
    world = np.concatenate([sample_surface(background[:5], 0.01, rng), floor[np.abs(floor[:, :2]).max(1) < 1.5],
                            *[sample_surface(o.parts, 0.006, rng) for o in objects]])
    T = invert_T(T_from_xyz_yaw(*ROBOT_STANCE))  # the B1 where the synthetic scene puts it
    base = world @ T[:3, :3].T + T[:3, 3]
    return base[np.linalg.norm(base - kin.T_base_armbase[:3, 3], axis=1) < 1.5]


def per_call(fn, args: list) -> tuple[list, dict]:
    """Results of fn(*a) for each a, and seconds per call (median, p99, mean)."""
    out, seconds = [], []
    for a in args:
        t0 = time.perf_counter()
        out.append(fn(*a))
        seconds.append(time.perf_counter() - t0)
    s = np.array(seconds)
    return out, {"median": float(np.median(s)), "p99": float(np.percentile(s, 99)), "mean": float(s.mean())}


def octree_build_seconds(points: np.ndarray, resolution: float, repeats: int = 5) -> float:
    t0 = time.perf_counter()
    for _ in range(repeats):
        coal.makeOctree(points, resolution)
    return (time.perf_counter() - t0) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configurations", type=int, default=2000)
    parser.add_argument("--distance-configurations", type=int, default=300, help="for the (slower) clearance query")
    parser.add_argument("--resolution", type=float, default=0.01, help="octree voxel size (m)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    kin = Z1Kinematics.from_urdf()
    arm = ArmCollision(resolution=args.resolution)
    scene = tabletop_in_base(kin, rng)
    lo, hi = arm.model.lowerPositionLimit, arm.model.upperPositionLimit  # [7]: arm joints, then the gripper
    q7 = rng.uniform(lo, hi, size=(args.configurations, 7))
    qs, grips = q7[:, :6], q7[:, 6]

    t0 = time.perf_counter()
    arm.set_clouds(scene=scene)
    set_clouds = time.perf_counter() - t0
    big = scene[rng.choice(len(scene), 50_000, replace=len(scene) < 50_000)] + rng.normal(0, 0.002, (50_000, 3))

    calls = list(zip(qs, grips))
    scene_hits, scene_time = per_call(lambda q, g: arm.collides(q, g, "scene", with_self=False, with_body=False), calls)
    full_hits, full_time = per_call(arm.collides, calls)
    robot_hits, robot_time = per_call(lambda q, g: arm.collides(q, g, []), calls)
    _, why_time = per_call(arm.why, calls[:200])
    _, clearance_time = per_call(lambda q, g: arm.clearance(q, g, "scene"), calls[: args.distance_configurations])
    _, robot_clearance_time = per_call(lambda q, g: arm.clearance(q, g, []), calls[: args.distance_configurations])
    scene_links = Counter(c.a for i in np.flatnonzero(scene_hits)
                          for c in arm.contacts(*calls[i], "scene", with_self=False, with_body=False))
    results = {
        "urdf": kin.urdf.name, "pinocchio": __import__("pinocchio").__version__,
        "coal": ".".join(str(getattr(coal, f"COAL_{p}_VERSION")) for p in ("MAJOR", "MINOR", "PATCH")),
        "machine": platform.processor() or platform.machine(), "base_pose_world": [ROBOT_STANCE[0], ROBOT_STANCE[1], ROBOT_STANCE[3]],
        "scene_points": len(scene), "octree_resolution_m": args.resolution, "configurations": args.configurations,
        "pairs": {**{group: len(pairs) for group, pairs in arm.pairs.items()}, "overlapping_at_rest": len(arm.rest_pairs)},
        "build_seconds": {"set_clouds_scene": set_clouds,
                          "octree_50k_points": octree_build_seconds(big, args.resolution),
                          "urdf_model": _seconds(lambda: ArmCollision(resolution=args.resolution))},
        "seconds_per_configuration": {
            "urdf_scene": scene_time, "urdf_self_body_scene": full_time,
            "urdf_self_body": robot_time, "urdf_why_all_pairs": why_time,
            "urdf_clearance_scene": clearance_time, "urdf_clearance_self_body": robot_clearance_time},
        "collision_rate": {"urdf_scene": float(np.mean(scene_hits)),
                           "urdf_self_body_scene": float(np.mean(full_hits)), "urdf_self_body": float(np.mean(robot_hits))},
        "scene_contacts_by_link": dict(scene_links.most_common()),
    }
    full = results["seconds_per_configuration"]["urdf_self_body_scene"]["mean"]
    results["checks_per_second_urdf_self_body_scene"] = 1.0 / full
    print(json.dumps({k: results[k] for k in ("scene_points", "build_seconds", "collision_rate", "scene_contacts_by_link")}, indent=1))
    print(f"per configuration (mean): URDF scene {scene_time['mean'] * 1e3:.3f} ms, "
          f"URDF self+body+scene {full * 1e3:.3f} ms, clearance {clearance_time['mean'] * 1e3:.2f} ms")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "collision.json").write_text(json.dumps(results, indent=1) + "\n")


def _seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
