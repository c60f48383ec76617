"""Where the robot description lives and the numbers of ``config/robot.yaml``.

The URDF (``urdf/b1_z1.urdf``) is the one source of kinematics; ``config/robot.yaml``
documents its mount offsets and adds the stance height and the safety margins.
Both are found beside the package (source checkout) or in the ament share directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from m3_memory.errors import InputError
from m3_memory.robot_pose import T_from_xyz_yaw
from m3_memory.share import share_file


def default_urdf() -> Path:
    return share_file("urdf/b1_z1.urdf")


def default_robot_yaml() -> Path:
    return share_file("config/robot.yaml")


@dataclass(frozen=True)
class RobotConfig:
    """Stance and safety margins (metres, radians, fractions)."""

    base_height: float = 0.55  # base_link above the floor when standing
    position_margin: float = 0.01  # rad inside each joint limit
    velocity_fraction: float = 0.5  # commanded speeds stay within this fraction of the URDF velocity limits
    acceleration: float = 5.0  # rad/s^2, commanded accelerations of every arm joint and the gripper stay within it
    floor_clearance: float = 0.05
    body_clearance: float = 0.04
    start_tolerance: float = 0.05  # rad, measured joints at most this far from a plan's start when it begins
    start_speed: float = 0.05  # rad/s, measured joint speeds at most this when a plan begins (the arm at rest)
    tracking_tolerance: float = 0.15  # rad, measured joints this far from the command while streaming: stop

    @classmethod
    def load(cls, path: str | Path | None = None) -> RobotConfig:
        path = Path(path) if path is not None else default_robot_yaml()
        try:
            robot = yaml.safe_load(path.read_text())["robot"]
            return cls(base_height=float(robot["base_height"]), **{k: float(v) for k, v in robot["safety"].items()})
        except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as err:
            raise InputError(path, f"not a robot config ({type(err).__name__}: {err})") from err


def T_world_base(x: float, y: float, yaw: float, height: float) -> np.ndarray:
    """Pose [4, 4] of base_link (B1 trunk centre) standing at (x, y) metres with heading
    ``yaw`` radians in the memory's world frame (z up), trunk ``height`` above the floor."""
    return T_from_xyz_yaw(x, y, height, yaw)
