"""One call from a memory and a target to an executed grasp (``m3 grasp`` and ``m3 demo`` use it)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from m3_grasp.backends import ExecutionReport, get_backend
from m3_grasp.kinematics import Z1Kinematics
from m3_grasp.plan import GraspConfig, GraspPlan, plan_grasp
from m3_grasp.robot import RobotConfig, T_world_base

# Where the B1 stands by default (x m, y m, yaw rad in the memory's world frame), for the
# synthetic tabletop (m3_memory/synth/scene.py: table top 1.0 x 0.8 m at z = 0.75, centred
# on the origin; the duck at (0.05, 0.02)): at the table's +y long edge (y = 0.40), facing
# -y, the arm base 0.08 m outside the edge and 0.46 m from the duck.
DEFAULT_BASE_POSE = (0.05, 0.83, -np.pi / 2)


def memory_scene_points(memory_path: str | Path, min_opacity: float = 0.5) -> np.ndarray:
    """Centres [K, 3] (world, metres) of the memory's Gaussians with opacity >= min_opacity.

    Trained memories keep semi-transparent fuzz around objects; at 0.2 it blocked every
    approach to the synthetic duck in a fast-preset memory, at 0.5 the grasp was planned."""
    from m3_memory.memory.artifact import load_memory

    g = load_memory(memory_path).gaussians
    keep = (g.opacity_logits.sigmoid() >= min_opacity).numpy()
    return g.means.detach().numpy().astype(np.float64)[keep]


def run_grasp(memory_path: str | Path | None, target_world, object_points, scene_points=None, backend: str = "sim",
              out_dir: str | Path = "grasp", base_pose: tuple[float, float, float] = DEFAULT_BASE_POSE,
              config: GraspConfig = GraspConfig(), urdf: str | Path | None = None,
              **backend_options) -> tuple[GraspPlan, ExecutionReport | None]:
    """Plan a grasp of the object at ``target_world`` [3] (its points [M, 3]) with the B1 at
    ``base_pose`` (x, y, yaw), avoiding ``scene_points`` [K, 3] (default: the memory's
    Gaussians), and execute it on ``backend``. Writes plan.json (and the backend's files) to
    ``out_dir``. The report is None when no grasp was found (see plan.message, plan.base_move)."""
    robot = RobotConfig.load()
    kin = Z1Kinematics.from_urdf(urdf, position_margin=robot.position_margin)
    if scene_points is None:
        scene_points = memory_scene_points(memory_path) if memory_path is not None else np.zeros((0, 3))
    if backend == "sim":
        backend_options = {"scene_points": scene_points, "object_points": object_points, "target": target_world,
                           **backend_options}
    arm = get_backend(backend, kin=kin, robot=robot, **backend_options)  # before planning: bad backends fail fast
    plan = plan_grasp(target_world, object_points, scene_points, T_world_base(*base_pose, robot.base_height),
                      config, kin, robot)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "plan.json").write_text(json.dumps(plan.to_dict(), indent=1))
    return plan, arm.execute(plan, out) if plan.found else None
