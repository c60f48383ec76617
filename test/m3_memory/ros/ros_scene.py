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


STAMP = 123_000_000_456  # ns, the stamp the scene's lookup answers "latest" with


class SceneLookup:
    """A TfBuffer as the handlers' lookup(target, source, stamp ns) -> (T_target_source, stamp ns); the
    transforms are static, so any stamp gives them (stamped as asked; 0 = the latest, STAMP). Records
    each call as (target, source, stamp)."""

    def __init__(self, tf: TfBuffer):
        self.tf, self.calls = tf, []

    def __call__(self, target: str, source: str, stamp: int = 0):
        self.calls.append((target, source, stamp))
        return self.tf.lookup(target, source, 0.0), stamp or STAMP


def tf_lookup(tf: TfBuffer) -> SceneLookup:
    return SceneLookup(tf)
