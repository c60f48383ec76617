"""Comparing two recordings of the same frames (round trips between formats)."""

from __future__ import annotations

from collections.abc import Iterable
from itertools import zip_longest

import numpy as np

from m3_memory.recording.frame import Frame


def compare_recordings(reference: Iterable[Frame], other: Iterable[Frame]) -> dict[str, float]:
    """Largest differences between two recordings of the same frames: colour (0-255 levels),
    depth (metres), pose (matrix entries, inf when only one has a pose), stamp (seconds);
    and the frame count of each."""
    worst = {"frames_reference": 0, "frames_other": 0, "rgb": 0.0, "depth_m": 0.0, "pose": 0.0, "stamp_s": 0.0}
    for a, b in zip_longest(reference, other):
        worst["frames_reference"] += a is not None
        worst["frames_other"] += b is not None
        if a is None or b is None:
            continue
        worst["rgb"] = max(worst["rgb"], float(np.abs(a.rgb.astype(int) - b.rgb.astype(int)).max()))
        worst["depth_m"] = max(worst["depth_m"], float(np.abs(a.depth - b.depth).max()))
        if (a.T_world_cam is None) != (b.T_world_cam is None):
            worst["pose"] = float("inf")
        elif a.T_world_cam is not None:
            worst["pose"] = max(worst["pose"], float(np.abs(a.T_world_cam - b.T_world_cam).max()))
        worst["stamp_s"] = max(worst["stamp_s"], abs(a.stamp - b.stamp))
    return worst
