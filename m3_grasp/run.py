"""One call from a memory and a target to an executed grasp (``m3 grasp`` and ``m3 demo`` use it)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from m3_grasp.backends import ExecutionReport, get_backend
from m3_grasp.execution import ShouldStop
from m3_grasp.kinematics import Z1Kinematics
from m3_grasp.plan import GraspConfig, GraspPlan, plan_grasp
from m3_grasp.robot import RobotConfig, T_world_base
from m3_grasp.state import ArmState
from m3_memory.errors import InputError


def memory_scene_points(memory, min_opacity: float = 0.5) -> np.ndarray:
    """Centres [K, 3] (world, metres) of the memory's Gaussians (a loaded Memory or a path)
    with opacity >= min_opacity.

    Trained memories keep semi-transparent fuzz around objects; at 0.2 it blocked every
    approach to the synthetic duck in a fast-preset memory, at 0.5 the grasp was planned."""
    from m3_memory.memory.artifact import load_memory

    g = (load_memory(memory) if isinstance(memory, (str, Path)) else memory).gaussians
    keep = (g.opacity_logits.sigmoid() >= min_opacity).numpy()
    return g.means.detach().numpy().astype(np.float64)[keep]


def base_pose_of(memory, base_pose: tuple[float, float, float] | None, robot: RobotConfig) -> tuple[np.ndarray, str]:
    """(T_world_base [4, 4], where it came from): ``base_pose`` (x m, y m, yaw rad in the memory's
    world, at the configured stance height) when given, else the robot pose the memory records.
    InputError when neither is known: no pose is ever guessed."""
    if base_pose is not None:
        return T_world_base(*base_pose, robot.base_height), "--base-pose"
    recorded = getattr(memory, "robot_pose", None) if memory is not None else None
    if recorded is not None:
        return np.asarray(recorded.T_world_base, dtype=np.float64), f"the memory's robot pose ({recorded.source})"
    raise InputError("--base-pose", "the memory records no robot pose: give where the B1 stands, as x,y,yaw "
                     "(metres, radians) in the memory's world frame")


def plan_in_memory(memory, found, base_pose: tuple[float, float, float] | None = None, start: ArmState | None = None,
                   config: GraspConfig = GraspConfig()) -> GraspPlan:
    """Plan a grasp of what a query ``found`` (a :class:`~m3_memory.query.api.QueryResult` with
    ``found`` True: its point_world [3] and points_world [M, 3], world frame, metres) in
    ``memory`` (a loaded Memory or a path), avoiding the memory's opaque Gaussians, with the B1
    where ``base_pose`` (x m, y m, yaw rad) or the memory says and the arm at ``start`` (default:
    the rest pose, assumed). Nothing moves; ``m3 grasp`` and :func:`run_grasp` execute plans.
    This is ``m3_memory.plan_grasp``."""
    from m3_memory.memory.artifact import load_memory

    if not getattr(found, "found", False):
        raise InputError(getattr(found, "text", "target"), f"nothing to grasp: {getattr(found, 'message', 'not found')}")
    memory = load_memory(memory) if isinstance(memory, (str, Path)) else memory
    robot = RobotConfig.load()
    T_base, _ = base_pose_of(memory, base_pose, robot)
    kin = Z1Kinematics.from_urdf(position_margin=robot.position_margin)
    return plan_grasp(found.point_world, found.points_world, memory_scene_points(memory), T_base,
                      start or ArmState.rest(), config, kin, robot)


def run_grasp(memory, target_world, object_points, scene_points=None, backend: str = "sim",
              out_dir: str | Path = "grasp", base_pose: tuple[float, float, float] | None = None,
              config: GraspConfig = GraspConfig(), urdf: str | Path | None = None, should_stop: ShouldStop = lambda: False,
              log=print, **backend_options) -> tuple[GraspPlan, ExecutionReport | None]:
    """Plan a grasp of the object at ``target_world`` [3] (its points [M, 3]) from the arm's
    measured state (the backend's), with the B1 where ``base_pose`` or the memory (a loaded
    Memory, a path, or None with a base_pose) says, avoiding ``scene_points`` [K, 3] (default:
    the memory's Gaussians), and execute it on ``backend`` until it ends or ``should_stop``.
    Writes plan.json (and the backend's files) to ``out_dir``. The report is None when no grasp
    was found (see plan.message, plan.base_move)."""
    from m3_memory.memory.artifact import load_memory

    robot = RobotConfig.load()
    kin = Z1Kinematics.from_urdf(urdf, position_margin=robot.position_margin)
    if isinstance(memory, (str, Path)):
        memory = load_memory(memory)
    T_base, base_source = base_pose_of(memory, base_pose, robot)
    if scene_points is None:
        scene_points = memory_scene_points(memory) if memory is not None else np.zeros((0, 3))
    if backend == "sim":
        backend_options = {"scene_points": scene_points, "object_points": object_points, "target": target_world,
                           **backend_options}
    arm = get_backend(backend, kin=kin, robot=robot, **backend_options)  # before planning: bad backends fail fast
    start = arm.state()
    log(f"B1 base pose from {base_source}; arm start from {start.source}")
    plan = plan_grasp(target_world, object_points, scene_points, T_base, start, config, kin, robot)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "plan.json").write_text(json.dumps(plan.to_dict(), indent=1))
    return plan, arm.execute(plan, out, should_stop, log) if plan.found else None
