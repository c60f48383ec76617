"""The scene the ROS handler tests share: frames, a known duck position, tf as an m3 TfBuffer."""

from __future__ import annotations

import numpy as np

from m3_memory.conventions import make_T
from m3_memory.recording.tf import TfBuffer

DUCK_WORLD = np.array([0.30, -0.10, 0.05])  # centre of the duck blob in the memory's frame, metres
# base_link in the world: 0.5 m along x, turned 90 degrees about z
T_WORLD_BASE = make_T(np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]), [0.5, 0.0, 0.0])
# a camera 0.6 m above the duck looking straight down (OpenCV optical: x right, y down, z forward)
T_WORLD_CAM = make_T(np.diag([1.0, -1.0, -1.0]), DUCK_WORLD + [0.0, 0.0, 0.6])


def scene_tf() -> TfBuffer:
    """world -> base_link and world -> camera_color_optical_frame, static."""
    tf = TfBuffer()
    tf.add("world", "base_link", T_WORLD_BASE)
    tf.add("world", "camera_color_optical_frame", T_WORLD_CAM)
    return tf


def tf_lookup(tf: TfBuffer):
    """A TfBuffer as the handlers' lookup(target, source) -> (T_target_source, stamp ns)."""
    return lambda target, source: (tf.lookup(target, source, 0.0), 123_000_000_456)
