"""The robot's pose chain: where the end-effector camera is, in the memory's frame.

Frames (names as in ``urdf/b1_z1.urdf``): ``lidar_link`` (l, on the body), ``z1_base_link``
(b, the arm base), ``z1_ee_link`` (e, the tool centre point), ``camera_color_optical_frame``
(c, OpenCV optical); w is the lidar odometry's world, t the current time and 0 the scan's start.
Paper, section 4.4::

    c0_T_ct = c0_T_e0 e0_T_b0 b0_T_l0 l0_T_w w_T_lt lt_T_bt bt_T_et et_T_ct

``e_T_c`` and ``l_T_b`` are fixed links read from the URDF, ``b_T_e`` comes from the arm's joint
positions (forward kinematics with pinocchio), ``w_T_l`` from lidar odometry. The memory's frame
(COLMAP's, or the recording's world) is tied to the scan's first camera by ``memory_T_c0``
(``colmap_T_c0`` in the paper): the memory's first source camera, or a fit over the whole scan.
All poses are 4x4 float64, metres.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from m3_memory.conventions import OPTICAL_FRAME, fit_transform, invert_T, rigid_error
from m3_memory.errors import InputError
from m3_memory.memory.artifact import Memory
from m3_memory.share import share_file

ARM_JOINTS = tuple(f"z1_joint{i}" for i in range(1, 7))
GRIPPER_JOINT = "z1_gripper_joint"
FRAMES = {"lidar": "lidar_link", "arm_base": "z1_base_link", "ee": "z1_ee_link", "camera": OPTICAL_FRAME}

JointPositions = Sequence[float] | Mapping[str, float] | np.ndarray


def _checked_pose(T: np.ndarray, what: str) -> np.ndarray:
    T = np.asarray(T, dtype=np.float64)
    problem = rigid_error(T)
    if problem:
        raise InputError(what, problem)
    return T


@dataclass
class RobotState:
    """The robot at one instant: arm joint positions (rad; 6 values in z1_joint1..6 order, or a
    name -> value mapping that may include the gripper) and the lidar pose ``T_world_lidar``
    [4, 4] from odometry."""

    joints: JointPositions
    T_world_lidar: np.ndarray


class RobotChain:
    """The camera -> end effector -> arm base -> lidar chain of a URDF (see the module doc)."""

    def __init__(self, model, urdf: Path, frames: Mapping[str, str] = FRAMES):
        import pinocchio as pin

        self.model, self.data, self.urdf = model, model.createData(), urdf
        self.frame_ids = {}
        for role, name in frames.items():
            if not model.existFrame(name):
                raise InputError(urdf, f"URDF has no frame '{name}' (the {role} frame of the pose chain)")
            self.frame_ids[role] = model.getFrameId(name)
        missing = [j for j in ARM_JOINTS if not model.existJointName(j)]
        if missing:
            raise InputError(urdf, f"URDF lacks the arm joints {', '.join(missing)}")
        self._pin = pin

    @classmethod
    def from_urdf(cls, path: str | Path | None = None, frames: Mapping[str, str] = FRAMES) -> "RobotChain":
        """Load the chain from a URDF file (default: the project's ``urdf/b1_z1.urdf``)."""
        import pinocchio as pin

        if path is None:
            path = share_file("urdf/b1_z1.urdf")
        path = Path(path)
        if not path.is_file():
            raise InputError(path, "URDF file not found")
        try:
            model = pin.buildModelFromUrdf(str(path))
        except (RuntimeError, ValueError) as err:
            raise InputError(path, f"URDF does not parse: {str(err).splitlines()[0] if str(err) else type(err).__name__}")
        return cls(model, path, frames)

    def configuration(self, joints: JointPositions) -> np.ndarray:
        """pinocchio configuration vector for arm joint positions (rad); unnamed joints at 0."""
        named = dict(joints) if isinstance(joints, Mapping) else None
        if named is None:
            values = np.asarray(joints, dtype=np.float64).ravel()
            if values.size != len(ARM_JOINTS):
                raise InputError("joint positions", f"expected {len(ARM_JOINTS)} arm joints, got {values.size}")
            named = dict(zip(ARM_JOINTS, values))
        q = self._pin.neutral(self.model)
        for name, value in named.items():
            if not self.model.existJointName(name):
                raise InputError("joint positions", f"no joint '{name}' in {self.urdf.name}")
            if not np.isfinite(value):
                raise InputError("joint positions", f"{name} is {value}")
            joint = self.model.joints[self.model.getJointId(name)]
            if joint.nq == 1:
                q[joint.idx_q] = value
            elif joint.nq == 2:  # continuous joint: (cos, sin)
                q[joint.idx_q:joint.idx_q + 2] = np.cos(value), np.sin(value)
            else:
                raise InputError("joint positions", f"{name} is not a one-degree-of-freedom joint")
        return q

    def frame_poses(self, joints: JointPositions) -> dict[str, np.ndarray]:
        """Pose [4, 4] of each chain frame in the URDF's root frame at these joint positions."""
        pin = self._pin
        pin.framesForwardKinematics(self.model, self.data, self.configuration(joints))
        return {role: self.data.oMf[fid].homogeneous.copy() for role, fid in self.frame_ids.items()}

    def links(self, joints: JointPositions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(l_T_b fixed, b_T_e from FK, e_T_c fixed) at these joint positions."""
        P = self.frame_poses(joints)
        return (invert_T(P["lidar"]) @ P["arm_base"], invert_T(P["arm_base"]) @ P["ee"],
                invert_T(P["ee"]) @ P["camera"])

    def camera_in_world(self, joints: JointPositions, T_world_lidar: np.ndarray) -> np.ndarray:
        """``w_T_c = w_T_l l_T_b b_T_e e_T_c``: the camera in the odometry world [4, 4]."""
        l_T_b, b_T_e, e_T_c = self.links(joints)
        return _checked_pose(T_world_lidar, "T_world_lidar") @ l_T_b @ b_T_e @ e_T_c

    def c0_T_ct(self, start: RobotState, now: RobotState) -> np.ndarray:
        """The camera now relative to the camera at the scan's start, through the full chain
        ``c0_T_e0 e0_T_b0 b0_T_l0 l0_T_w w_T_lt lt_T_bt bt_T_et et_T_ct``."""
        l0_T_b0, b0_T_e0, e0_T_c0 = self.links(start.joints)
        lt_T_bt, bt_T_et, et_T_ct = self.links(now.joints)
        l0_T_w = invert_T(_checked_pose(start.T_world_lidar, "T_world_lidar (start)"))
        w_T_lt = _checked_pose(now.T_world_lidar, "T_world_lidar (now)")
        return (invert_T(e0_T_c0) @ invert_T(b0_T_e0) @ invert_T(l0_T_b0) @ l0_T_w
                @ w_T_lt @ lt_T_bt @ bt_T_et @ et_T_ct)

    def camera_in_memory(self, start: RobotState, now: RobotState, memory_T_c0: np.ndarray) -> np.ndarray:
        """``memory_T_ct = memory_T_c0 c0_T_ct``: the camera now, in the memory's frame."""
        return apply_alignment(memory_T_c0, self.c0_T_ct(start, now))


def apply_alignment(memory_T_c0: np.ndarray, c0_T_c: np.ndarray) -> np.ndarray:
    """A camera relative to the scan's first camera [4, 4] -> its rigid pose in the memory's frame.

    ``memory_T_c0`` may be a similarity (:func:`fit_alignment` with scale): the camera's position
    is scaled, its orientation is not (the result stays a rigid T_memory_cam)."""
    A = np.asarray(memory_T_c0, dtype=np.float64)
    s = np.cbrt(np.linalg.det(A[:3, :3]))
    if not np.isfinite(s) or s <= 0:
        raise InputError("memory_T_c0", "alignment is not a (scaled) rotation")
    R = A[:3, :3] / s
    if rigid_error(np.block([[R, A[:3, 3:]], [np.zeros((1, 3)), np.ones((1, 1))]])):
        raise InputError("memory_T_c0", "alignment is not a (scaled) rotation")
    T = np.eye(4)
    T[:3, :3] = R @ c0_T_c[:3, :3]
    T[:3, 3] = A[:3, :3] @ c0_T_c[:3, 3] + A[:3, 3]
    return T


def first_camera_alignment(memory: Memory) -> np.ndarray:
    """``memory_T_c0``: the memory's first source camera (the scan's first view) in its frame."""
    if not memory.cameras:
        raise InputError("memory", "stores no source cameras, so its frame cannot be tied to the scan's first camera")
    return memory.cameras[0].T_world_cam.copy()


def fit_alignment(T_memory_cams: Sequence[np.ndarray], T_c0_cams: Sequence[np.ndarray],
                  with_scale: bool = False) -> np.ndarray:
    """``memory_T_c0`` [4, 4] fitted over a whole scan: the same cameras as the memory has them
    (``T_memory_cams``) and as the robot's chain has them relative to its first camera
    (``T_c0_cams``, e.g. :meth:`RobotChain.c0_T_ct`). Least squares over the camera centres
    (Umeyama); ``with_scale`` also fits a scale (a COLMAP memory without metric depth), returned
    as a similarity ``[[s R, t], [0, 1]]``. Needs 3 or more cameras not on one line."""
    if len(T_c0_cams) != len(T_memory_cams) or len(T_c0_cams) < 3:
        raise InputError("alignment", f"needs the same 3 or more cameras in both frames, got {len(T_c0_cams)} and "
                         f"{len(T_memory_cams)}")
    return fit_transform([T[:3, 3] for T in T_c0_cams], [T[:3, 3] for T in T_memory_cams], with_scale, unique=True,
                         what="alignment of the camera centres")
