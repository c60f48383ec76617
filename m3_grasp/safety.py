"""Arm command limits, enforced in one place: every backend passes its commands through
:func:`check_command` before anything moves, and refuses them with a one-line reason.

Checked per command sample: joint positions within the URDF limits, joint and gripper
speeds within ``velocity_fraction`` of the URDF velocity limits, accelerations within the
configured ``acceleration`` (finite differences of the commands at their period), and the
workspace: every arm frame from the elbow on and the tool centre point stay
``floor_clearance`` above the floor and ``body_clearance`` outside the B1 trunk box
(base_link's collision box). :func:`check_start` decides whether a measured arm state may
start a plan: within the joint limits, at rest and close to the plan's first command.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from m3_grasp.kinematics import ARM_JOINTS, BASE_FRAME, CHAIN_FRAMES, GRIPPER_JOINT, Z1Kinematics
from m3_grasp.robot import RobotConfig
from m3_grasp.state import ArmState
from m3_grasp.timing import Limits
from m3_memory.errors import InputError, SafetyRefusal

WORKSPACE_FRAMES = CHAIN_FRAMES[3:]  # z1_link03 (elbow) .. z1_ee_link; the shoulder sits on the mount
JOINTS = (*ARM_JOINTS, GRIPPER_JOINT)  # the 7 columns of a command: the arm joints, then the gripper


class SafetyError(SafetyRefusal):
    """A command refused by :func:`check_command`; ``str()`` is one line: ``safety: <reason>``
    (exit code 4, a safety refusal)."""

    def __init__(self, problem: str):
        super().__init__("safety", problem)


@dataclass
class CommandCheck:
    """What :func:`check_command` measured on an accepted command sequence."""

    samples: int
    peak_speed_fraction: float  # max |qd| / URDF limit over joints and samples
    peak_acceleration: float  # rad/s^2, max |qdd| over joints and samples
    min_floor_clearance: float  # m
    min_body_clearance: float  # m


@lru_cache(maxsize=4)
def trunk_half_extents(urdf: Path) -> np.ndarray:
    """Half sizes [3] (m) of base_link's collision box in the URDF."""
    for link in ET.parse(urdf).getroot().iter("link"):
        box = link.find("collision/geometry/box")
        if link.get("name") == BASE_FRAME and box is not None:
            return np.array([float(v) for v in box.get("size").split()]) / 2
    raise InputError(urdf, f"link '{BASE_FRAME}' has no collision box (the B1 trunk, needed by the safety check)")


def joint_bounds(kin: Z1Kinematics) -> tuple[np.ndarray, np.ndarray]:
    """The URDF's position limits (lower [7], upper [7]) of the arm joints and the gripper (rad)."""
    return np.append(kin.lower, kin.gripper.lower), np.append(kin.upper, kin.gripper.upper)


def first_outside(x: np.ndarray, kin: Z1Kinematics) -> int | None:
    """Index into JOINTS of the first of x [7] (rad) outside its URDF limits, or None."""
    lower, upper = joint_bounds(kin)
    bad = np.flatnonzero((x < lower - 1e-9) | (x > upper + 1e-9))
    return int(bad[0]) if len(bad) else None


def scaled_limits(kin: Z1Kinematics, config: RobotConfig, velocity_fraction: float,
                  acceleration_fraction: float = 1.0) -> Limits:
    """Speeds [7]: ``velocity_fraction`` of the URDF's; accelerations [7]: ``acceleration_fraction``
    of the configured ``acceleration`` (arm joints and gripper)."""
    velocity = np.append(kin.velocity, kin.gripper.velocity) * velocity_fraction
    return Limits(velocity, np.full(7, config.acceleration * acceleration_fraction))


def safety_limits(kin: Z1Kinematics, config: RobotConfig) -> Limits:
    """The limits :func:`check_command` enforces, for the arm joints and the gripper [7]."""
    return scaled_limits(kin, config, config.velocity_fraction)


def check_start(state: ArmState, kin: Z1Kinematics, config: RobotConfig, first: np.ndarray | None = None) -> None:
    """Refuse (SafetyError) a measured state that cannot start a plan: not finite, outside the
    joint limits, moving faster than ``start_speed``, or, given the plan's first command
    ``first`` [7] (arm + gripper, rad), farther than ``start_tolerance`` from it."""
    names = JOINTS
    x = state.x
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(state.qd))):
        raise SafetyError(f"the measured state from {state.source} is not finite: q = {x.round(3).tolist()}")
    j = first_outside(x, kin)
    if j is not None:
        lower, upper = joint_bounds(kin)
        raise SafetyError(f"measured {names[j]} = {x[j]:.3f} rad ({state.source}) is outside its limits "
                          f"[{lower[j]:.3f}, {upper[j]:.3f}]: move the arm inside them by hand first")
    j = int(np.argmax(np.abs(state.qd)))
    if abs(state.qd[j]) > config.start_speed:
        raise SafetyError(f"the arm is moving ({names[j]} at {state.qd[j]:+.3f} rad/s, {state.source}); "
                          f"a plan starts only at rest (below {config.start_speed} rad/s)")
    if first is not None:
        gap = np.abs(x - np.asarray(first, dtype=np.float64))
        j = int(np.argmax(gap))
        if gap[j] > config.start_tolerance:
            raise SafetyError(f"measured {names[j]} = {x[j]:+.3f} rad ({state.source}) is {gap[j]:.3f} rad from the plan's "
                              f"start {first[j]:+.3f} (tolerance {config.start_tolerance} rad): the arm moved since "
                              "planning; plan again from where it is")


def check_command(kin: Z1Kinematics, q: np.ndarray, gripper: np.ndarray, dt: float, T_world_base: np.ndarray,
                  config: RobotConfig = RobotConfig()) -> CommandCheck:
    """Accept or refuse a command sequence: q [T, 6] arm joint angles (rad), gripper [T] joint
    angles (rad), one sample every ``dt`` seconds, with the B1 trunk at T_world_base [4, 4]
    (world z up, floor at z = 0). Raises SafetyError naming the first violation."""
    q = np.asarray(q, dtype=np.float64)
    gripper = np.asarray(gripper, dtype=np.float64)
    if q.ndim != 2 or q.shape[1] != 6 or len(q) == 0 or gripper.shape != (len(q),):
        raise SafetyError(f"commands must be q [T, 6] and gripper [T], got {list(q.shape)} and {list(gripper.shape)}")
    if not (np.all(np.isfinite(q)) and np.all(np.isfinite(gripper)) and np.isfinite(dt) and dt > 0):
        raise SafetyError("commands contain NaN or infinity, or the time step is not positive")
    names = JOINTS
    values = np.column_stack([q, gripper])  # [T, 7]
    lower, upper = joint_bounds(kin)
    lower, upper = lower - 1e-9, upper + 1e-9
    bad = np.argwhere((values < lower) | (values > upper))
    if len(bad):
        t, j = bad[0]
        raise SafetyError(f"command {t}: {names[j]} = {values[t, j]:.3f} rad outside its limits "
                          f"[{lower[j]:.3f}, {upper[j]:.3f}]")
    limit = safety_limits(kin, config).velocity  # [7] rad/s
    speed = np.abs(np.diff(values, axis=0)) / dt if len(values) > 1 else np.zeros((1, 7))
    bad = np.argwhere(speed > limit + 1e-9)
    if len(bad):
        t, j = bad[0]
        raise SafetyError(f"command {t} -> {t + 1}: {names[j]} at {speed[t, j]:.2f} rad/s, limit {limit[j]:.2f} rad/s "
                          f"({config.velocity_fraction:.0%} of the URDF's)")
    acceleration = np.abs(np.diff(speed, axis=0)) / dt if len(values) > 2 else np.zeros((1, 7))
    bad = np.argwhere(acceleration > config.acceleration + 1e-9)
    if len(bad):
        t, j = bad[0]
        raise SafetyError(f"command {t + 1}: {names[j]} accelerating at {acceleration[t, j]:.2f} rad/s^2, "
                          f"limit {config.acceleration:.2f} rad/s^2")
    peak_acceleration = float(acceleration.max())
    half = trunk_half_extents(kin.urdf)
    floor_min, body_min = np.inf, np.inf
    for t, qt in enumerate(q):
        p = kin.chain_points(qt)[3:]  # [F, 3] base_link, WORKSPACE_FRAMES
        floor = (p @ T_world_base[:3, :3].T + T_world_base[:3, 3])[:, 2]
        body = np.linalg.norm(np.maximum(np.abs(p) - half, 0.0), axis=1)
        for values_t, minimum, what in ((floor, config.floor_clearance, "above the floor"),
                                        (body, config.body_clearance, "from the B1 trunk")):
            k = int(np.argmin(values_t))
            if values_t[k] < minimum:
                raise SafetyError(f"command {t}: {WORKSPACE_FRAMES[k]} {values_t[k]:.3f} m {what} "
                                  f"(workspace limit {minimum:.3f} m)")
        floor_min, body_min = min(floor_min, float(floor.min())), min(body_min, float(body.min()))
    fraction = float((speed / (limit / config.velocity_fraction)).max())
    return CommandCheck(len(q), fraction, peak_acceleration, floor_min, body_min)
