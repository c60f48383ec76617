"""The tabletop the grasp handler tests share (the synthetic scene's table and duck), and its tf."""

import numpy as np

from m3_grasp.robot import RobotConfig, T_world_base
from m3_memory.conventions import make_T
from m3_memory.recording.tf import TfBuffer
from m3_memory.synth.scene import ROBOT_STANCE

DUCK = np.array([0.05, 0.02, 0.78])  # centre of the duck on the table top (z = 0.75), world, metres
STANCE = (ROBOT_STANCE[0], ROBOT_STANCE[1], ROBOT_STANCE[3])  # x, y, yaw of the B1 at the synthetic table


def scene_lookup(base_pose: tuple[float, float, float] = STANCE):
    """tf as the handler's lookup: world -> base_link with the B1 standing at base_pose (x, y, yaw),
    world -> table (the table top's centre), all at stamp 7 s."""
    tf = TfBuffer()
    tf.add("world", "base_link", T_world_base(*base_pose, RobotConfig.load().base_height))
    tf.add("world", "table", make_T(np.eye(3), [0.0, 0.0, 0.75]))
    return lambda target, source, stamp=0: (tf.lookup(target, source, 0.0), 7_000_000_000)
