"""The arm's limits, checked independently of m3_grasp.safety (for tests and the safety bench)."""

from __future__ import annotations

import numpy as np

from m3_grasp.safety import trunk_half_extents


def limit_violations(kin, robot, x: np.ndarray, dt: float, T_world_base: np.ndarray | None = None) -> list[str]:
    """What commands x [T, 7] (arm joints, gripper; rad) sent every dt seconds violate: the
    joint limits, robot.velocity_fraction of the URDF speeds, robot.acceleration and, given a
    base pose, the floor and trunk clearances. Empty when none."""
    out = []
    lower, upper = np.append(kin.lower, kin.gripper.lower), np.append(kin.upper, kin.gripper.upper)
    if np.any(x < lower - 1e-9) or np.any(x > upper + 1e-9):
        out.append("position")
    v = np.diff(x, axis=0) / dt
    if np.any(np.abs(v) > np.append(kin.velocity, kin.gripper.velocity) * robot.velocity_fraction + 1e-9):
        out.append("velocity")
    if np.any(np.abs(np.diff(v, axis=0)) / dt > robot.acceleration + 1e-9):
        out.append("acceleration")
    if T_world_base is not None:
        half = trunk_half_extents(kin.urdf)
        for qt in x[:, :6]:
            p = kin.chain_points(qt)[3:]
            if np.any((p @ T_world_base[:3, :3].T + T_world_base[:3, 3])[:, 2] < robot.floor_clearance - 1e-9):
                out.append("floor")
                break
            if np.any(np.linalg.norm(np.maximum(np.abs(p) - half, 0), axis=1) < robot.body_clearance - 1e-9):
                out.append("trunk")
                break
    return out


def assert_commands_within_limits(kin, robot, x: np.ndarray, dt: float, T_world_base: np.ndarray | None = None) -> None:
    violations = limit_violations(kin, robot, x, dt, T_world_base)
    assert not violations, f"commands violate: {', '.join(violations)}"
