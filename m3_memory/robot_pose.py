"""Where the robot stands: the pose of its base frame in a memory's world frame.

A memory records it (``Memory.robot_pose``) so that grasping knows where the arm is without
guessing. It comes from ``m3 build --robot-pose``, from the recording (tf ``world ->
base_link`` in a ROS 2 bag, m3's ``m3_robot_pose`` in a nerfstudio folder), or nowhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from m3_memory.conventions import make_T, rigid_error
from m3_memory.errors import InputError

BASE_FRAME = "base_link"  # the B1 trunk centre, REP-103 axes (x forward, y left, z up)


def T_from_xyz_yaw(x: float, y: float, z: float, yaw: float) -> np.ndarray:
    """Pose [4, 4] at (x, y, z) metres turned by ``yaw`` radians about the world z axis
    (no roll or pitch: a robot standing on level ground in a z-up world)."""
    c, s = np.cos(yaw), np.sin(yaw)
    return make_T(np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]), [x, y, z])


@dataclass(frozen=True, eq=False)
class RobotPose:
    """The robot's base in the memory's world frame.

    T_world_base: float64 [4, 4] rigid, maps points in ``frame`` to the world frame (metres).
    source: where the number came from, e.g. "tf world->base_link at ... of scan.db3" or
    "m3 build --robot-pose". frame: the base frame's name (default base_link, the B1 trunk
    centre, x forward, z up). A pose that is not a finite rigid 4x4 raises :class:`InputError`.
    """

    T_world_base: np.ndarray
    source: str
    frame: str = BASE_FRAME

    def __post_init__(self) -> None:
        try:
            T = np.array(self.T_world_base, dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError(f"robot pose ({self.source})", "T_world_base is not a 4x4 matrix of numbers") from None
        problem = rigid_error(T)
        if problem:
            raise InputError(f"robot pose ({self.source})", problem)
        object.__setattr__(self, "T_world_base", T)

    @classmethod
    def from_xyz_yaw(cls, x: float, y: float, z: float, yaw: float, source: str, frame: str = BASE_FRAME) -> "RobotPose":
        """The base at (x, y, z) metres with heading ``yaw`` radians about world z."""
        return cls(T_from_xyz_yaw(x, y, z, yaw), source, frame)

    @property
    def yaw(self) -> float:
        """Heading in radians: the angle of the base's x axis about world z."""
        return float(np.arctan2(self.T_world_base[1, 0], self.T_world_base[0, 0]))

    def describe(self) -> str:
        """One line: frame, position (m), heading (deg) and source."""
        x, y, z = self.T_world_base[:3, 3]
        return (f"{self.frame} at x {x:.3f} y {y:.3f} z {z:.3f} m, yaw {np.degrees(self.yaw):.1f} deg "
                f"(from {self.source})")

    def to_json(self) -> dict:
        return {"T_world_base": self.T_world_base.tolist(), "frame": self.frame, "source": self.source}

    @classmethod
    def from_json(cls, d: dict) -> "RobotPose":
        """Inverse of :meth:`to_json`; KeyError, TypeError or InputError on malformed input."""
        return cls(d["T_world_base"], str(d.get("source", "")), str(d.get("frame", BASE_FRAME)))
