"""Z1 kinematics on the B1 from the URDF (pinocchio): FK, damped-least-squares IK, reachability.

Poses are ``T_base_x`` [4, 4] in ``base_link`` (the B1 trunk), metres and radians. The arm
configuration ``q`` [6] holds z1_joint1..z1_joint6; the gripper joint does not move the
tool centre point (``z1_ee_link`` hangs on the gripper stator), so it is kept out of the model.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pinocchio as pin

from m3_grasp.robot import default_urdf
from m3_memory.conventions import OPTICAL_FRAME
from m3_memory.errors import InputError
from m3_memory.robot_pose import BASE_FRAME

ARM_BASE_FRAME = "z1_base_link"
EE_FRAME = "z1_ee_link"
ARM_JOINTS = tuple(f"z1_joint{i}" for i in range(1, 7))
GRIPPER_JOINT = "z1_gripper_joint"
# Frames along the arm, base to tool (collision skeleton and workspace checks use them).
CHAIN_FRAMES = (ARM_BASE_FRAME, "z1_link01", "z1_link02", "z1_link03", "z1_link04", "z1_link05", "z1_link06",
                "z1_gripper_stator", EE_FRAME)
REQUIRED_FRAMES = (BASE_FRAME, "lidar_link", *CHAIN_FRAMES, "camera_link", OPTICAL_FRAME)

POSITION_TOL = 1e-3  # m: an IK solution is accepted only if FK lands this close ...
ROTATION_TOL = np.deg2rad(1.0)  # rad: ... and this close in orientation


@dataclass(frozen=True)
class GripperSpec:
    """The Unitree gripper: one jaw rotating about the pivot, 0 closed, ``lower`` (< 0) fully open.
    Opening width at the grip centre (m) is ``jaw_reach * sin(-q)``."""

    lower: float  # rad
    upper: float  # rad
    velocity: float  # rad/s
    jaw_reach: float  # m, jaw pivot -> grip centre (z1_ee_link)

    @property
    def max_width(self) -> float:
        return self.jaw_reach * float(np.sin(min(-self.lower, np.pi / 2)))

    def angle(self, width: float) -> float:
        """Gripper joint angle (rad) opening the jaws to ``width`` metres at the grip centre."""
        return -float(np.arcsin(np.clip(width / self.jaw_reach, 0.0, np.sin(min(-self.lower, np.pi / 2)))))

    def width(self, angle: float | np.ndarray) -> float | np.ndarray:
        return self.jaw_reach * np.sin(-np.asarray(angle))


@dataclass
class IKResult:
    """Outcome of :meth:`Z1Kinematics.ik`. ``q`` [6] is the best configuration found (radians);
    errors are those of FK(q) against the target (metres, radians)."""

    success: bool
    q: np.ndarray
    position_error: float
    rotation_error: float
    iterations: int


def pose_errors(T: np.ndarray, T_target: np.ndarray) -> tuple[float, float]:
    """(translation distance m, rotation angle rad) between two poses [4, 4]."""
    dR = T[:3, :3].T @ T_target[:3, :3]
    angle = float(np.arccos(np.clip((np.trace(dR) - 1) / 2, -1.0, 1.0)))
    return float(np.linalg.norm(T[:3, 3] - T_target[:3, 3])), angle


class Z1Kinematics:
    """The Z1 arm chain of ``urdf/b1_z1.urdf`` (6 revolute joints, base_link -> z1_ee_link)."""

    def __init__(self, model: pin.Model, gripper: GripperSpec, urdf: Path, position_margin: float = 0.01):
        self.model, self.data, self.urdf, self.gripper = model, model.createData(), urdf, gripper
        self.lower = model.lowerPositionLimit.copy()  # [6] rad
        self.upper = model.upperPositionLimit.copy()  # [6] rad
        self.velocity = model.velocityLimit.copy()  # [6] rad/s
        self.margin = position_margin
        self._frame = {name: model.getFrameId(name) for name in REQUIRED_FRAMES}
        self.T_base_armbase = self.frame(np.zeros(6), ARM_BASE_FRAME)  # fixed mount [4, 4]
        p = dict(zip(CHAIN_FRAMES, self.chain_points(np.zeros(6))))
        # Wrist centre (joint5 axis) -> tool centre, along the tool's x axis at any q (m).
        self.wrist_length = float(np.linalg.norm(p[EE_FRAME] - p["z1_link05"]))
        # Farthest the wrist centre gets from the shoulder (joint2): upper arm + stretched forearm (m).
        self.arm_reach = float(np.linalg.norm(p["z1_link03"] - p["z1_link02"]) + np.linalg.norm(p["z1_link05"] - p["z1_link03"]))
        self.shoulder = p["z1_link02"]  # [3] joint2 in base_link at any q (joint1 turns about it)

    @classmethod
    def from_urdf(cls, path: str | Path | None = None, position_margin: float = 0.01) -> Z1Kinematics:
        """Load the arm from a URDF (default: the project's). Raises InputError when the file
        does not parse or lacks a frame or joint the chain needs."""
        path = Path(path) if path is not None else default_urdf()
        if not path.is_file():
            raise InputError(path, "URDF file not found")
        try:
            links = {link.get("name") for link in ET.parse(path).getroot().iter("link")}
        except ET.ParseError as err:
            raise InputError(path, f"URDF is not XML ({err})") from err
        for name in REQUIRED_FRAMES:
            if name not in links:
                raise InputError(path, f"URDF has no link '{name}' (the B1/Z1 chain needs {', '.join(REQUIRED_FRAMES)})")
        try:
            full = pin.buildModelFromUrdf(str(path))
        except (RuntimeError, ValueError) as err:
            raise InputError(path, f"URDF does not parse: {str(err).splitlines()[0] if str(err) else type(err).__name__}")
        base = full.frames[full.getFrameId(BASE_FRAME)]
        if base.parentJoint != 0 or not base.placement.isIdentity():
            raise InputError(path, f"URDF root link must be '{BASE_FRAME}'")
        for name in (*ARM_JOINTS, GRIPPER_JOINT):
            if not full.existJointName(name) or full.joints[full.getJointId(name)].nq != 1:
                raise InputError(path, f"URDF has no revolute joint '{name}'")
        if full.nq != 7:
            extra = [full.names[i] for i in range(1, full.njoints) if full.names[i] not in (*ARM_JOINTS, GRIPPER_JOINT)]
            raise InputError(path, f"URDF has movable joints beyond the Z1's: {', '.join(extra)}")
        gid = full.getJointId(GRIPPER_JOINT)
        g = full.joints[gid].idx_q
        data = full.createData()
        pin.framesForwardKinematics(full, data, pin.neutral(full))
        reach = float(np.linalg.norm(data.oMf[full.getFrameId(EE_FRAME)].translation - data.oMi[gid].translation))
        gripper = GripperSpec(float(full.lowerPositionLimit[g]), float(full.upperPositionLimit[g]),
                              float(full.velocityLimit[g]), reach)
        arm = pin.buildReducedModel(full, [full.getJointId(GRIPPER_JOINT)], pin.neutral(full))
        if tuple(arm.names[1:]) != ARM_JOINTS:
            raise InputError(path, f"arm joints are {list(arm.names[1:])}, expected {list(ARM_JOINTS)} in chain order")
        return cls(arm, gripper, path, position_margin)

    def frame(self, q: np.ndarray, name: str) -> np.ndarray:
        """T_base_<name> [4, 4] at arm configuration q [6]."""
        pin.forwardKinematics(self.model, self.data, np.asarray(q, dtype=np.float64))
        return pin.updateFramePlacement(self.model, self.data, self._frame[name]).homogeneous

    def fk(self, q: np.ndarray) -> np.ndarray:
        """T_base_ee [4, 4]: the tool centre point in base_link at q [6] (radians)."""
        return self.frame(q, EE_FRAME)

    def chain_points(self, q: np.ndarray) -> np.ndarray:
        """Origins [len(CHAIN_FRAMES), 3] of the chain frames in base_link (metres)."""
        pin.framesForwardKinematics(self.model, self.data, np.asarray(q, dtype=np.float64))
        return np.stack([self.data.oMf[self._frame[n]].translation for n in CHAIN_FRAMES])

    def reach_excess(self, T_base_ee: np.ndarray) -> float:
        """How far (m) the wrist centre of a tool pose [4, 4] lies beyond the arm's reach from
        the shoulder; <= 0 is necessary (not sufficient) for an IK solution to exist."""
        wrist = T_base_ee[:3, 3] - self.wrist_length * T_base_ee[:3, 0]
        return float(np.linalg.norm(wrist - self.shoulder) - self.arm_reach)

    def within_limits(self, q: np.ndarray, margin: float = 0.0) -> bool:
        q = np.asarray(q)
        return bool(np.all(q >= self.lower + margin - 1e-12) and np.all(q <= self.upper - margin + 1e-12))

    def default_seeds(self, T_target: np.ndarray) -> list[np.ndarray]:
        """Configurations (radians) that start IK in different shoulder/elbow/wrist branches:
        a few arm postures with joint1 turned towards the target (or away, reaching back)."""
        p = np.linalg.solve(self.T_base_armbase, np.append(T_target[:3, 3], 1.0))[:3]
        yaw = float(np.arctan2(p[1], p[0]))
        postures = (np.array([0.0, 1.5, -1.0, -0.5, 0.0, 0.0]),  # Unitree's "forward" example posture
                    np.array([0.0, 1.2, -1.6, 0.4, 0.0, 0.0]),  # reaching down in front
                    np.array([0.0, 0.8, -0.6, 0.0, 0.0, 0.0]))  # stretched out
        seeds = []
        for q1 in (yaw, yaw - np.pi if yaw > 0 else yaw + np.pi):
            for posture in postures:
                for q6 in (0.0, 2.0, -2.0):
                    seeds.append(np.concatenate([[q1], posture[1:5], [q6]]))
        return seeds

    def ik(self, T_target: np.ndarray, seeds: list[np.ndarray] | None = None, n_random: int = 6,
           rng: np.random.Generator | None = None, max_iter: int = 100) -> IKResult:
        """Joint angles [6] putting z1_ee_link at ``T_target`` (T_base_ee [4, 4]).

        Damped least squares on the SE(3) log error, joint limits (minus the margin) enforced
        by clamping each step; tries ``seeds`` (e.g. the current configuration first), the
        default seeds, then ``n_random`` uniform ones. Success needs FK(q) within 1 mm and
        1 degree of the target; the returned errors are those FK measures.
        """
        T_target = np.asarray(T_target, dtype=np.float64)
        rng = rng if rng is not None else np.random.default_rng(0)
        lo, hi = self.lower + self.margin, self.upper - self.margin
        candidates = [np.asarray(s, dtype=np.float64) for s in (seeds or [])] + self.default_seeds(T_target)
        candidates += [rng.uniform(lo, hi) for _ in range(n_random)]
        target = pin.SE3(T_target[:3, :3], T_target[:3, 3])
        fid = self._frame[EE_FRAME]
        best, total = None, 0
        for seed in candidates:
            q, recent = np.clip(seed, lo, hi), []
            for _ in range(max_iter):
                total += 1
                pin.forwardKinematics(self.model, self.data, q)
                current_to_target = pin.updateFramePlacement(self.model, self.data, fid).actInv(target)
                err = pin.log6(current_to_target).vector  # [6] in the tool frame
                if np.linalg.norm(err[:3]) < 1e-7 and np.linalg.norm(err[3:]) < 1e-7:
                    break
                recent.append(float(err @ err))
                if len(recent) > 10 and recent[-1] > 0.98 * recent[-11]:  # stuck (a limit or a singularity)
                    break
                J = pin.Jlog6(current_to_target.inverse()) @ pin.computeFrameJacobian(self.model, self.data, q, fid)  # [6, 6]
                damping = 1e-6 + 1e-3 * float(err @ err)
                dq = J.T @ np.linalg.solve(J @ J.T + damping * np.eye(6), err)
                step = np.linalg.norm(dq)
                q = np.clip(q + (dq * 0.5 / step if step > 0.5 else dq), lo, hi)
            p_err, r_err = pose_errors(self.fk(q), T_target)
            if best is None or p_err + 0.1 * r_err < best.position_error + 0.1 * best.rotation_error:
                best = IKResult(False, q, p_err, r_err, total)
            if p_err < POSITION_TOL and r_err < ROTATION_TOL:
                return IKResult(True, q, p_err, r_err, total)
        best.iterations = total
        return best

    def reachable(self, T_target: np.ndarray, **ik_options) -> bool:
        """Whether some configuration within the joint limits puts the tool at T_target."""
        return self.ik(T_target, **ik_options).success
