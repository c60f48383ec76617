"""Is a frame plausible RGB-D? Checks of depth and intrinsics that the readers cannot make alone.

``m3 inspect`` warns about each problem (with how many frames have it); ``m3 build`` leaves out
the frames that cannot be used (no valid depth, intrinsics for another image size) and refuses
when none are left.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from m3_memory.recording.frame import Frame

DEPTH_RANGE_M = (0.1, 20.0)  # what RGB-D sensors measure (RealSense 0.1-10 m, Kinect, ToF, stereo); metres
NEARLY_EMPTY = 0.02  # fraction of valid depth pixels below which a frame's depth is nearly empty
MAX_CENTRE_OFFSET = 0.25  # principal point offset from the image centre, as a fraction of the image size
FOV_RANGE_DEG = (10.0, 170.0)  # horizontal field of view a pinhole intrinsics can plausibly give


@dataclass(frozen=True)
class Problem:
    """One implausibility of a frame: ``kind`` (a short key), ``message`` (words with numbers),
    ``unusable`` (True: the frame cannot be built from)."""

    kind: str
    message: str
    unusable: bool


def frame_problems(frame: Frame) -> list[Problem]:
    """What is implausible in ``frame``: its depth (float32 metres, 0 = invalid) and intrinsics
    ``K`` (pixels) against its image size; an empty list when nothing is."""
    problems = []
    h, w = frame.size
    valid = frame.depth > 0
    fraction = float(valid.mean()) if valid.size else 0.0
    if fraction == 0.0:
        problems.append(Problem("depth-empty", "depth has no valid pixel (all zero)", True))
    elif fraction < NEARLY_EMPTY:
        problems.append(Problem("depth-sparse", f"depth is nearly empty ({100 * fraction:.2f}% valid pixels)", False))
    if fraction > 0:
        median = float(np.median(frame.depth[valid]))
        lo, hi = DEPTH_RANGE_M
        if not lo <= median <= hi:
            problems.append(Problem("depth-range", f"median depth {median:.3f} m is outside what RGB-D sensors measure "
                                    f"({lo}-{hi} m): wrong depth units?", False))
    fx, fy, cx, cy = (float(v) for v in (frame.K[0, 0], frame.K[1, 1], frame.K[0, 2], frame.K[1, 2]))
    if abs(cx - w / 2) > MAX_CENTRE_OFFSET * w or abs(cy - h / 2) > MAX_CENTRE_OFFSET * h:
        problems.append(Problem("intrinsics", f"principal point ({cx:.1f}, {cy:.1f}) px is far from the centre of the "
                                f"{w} x {h} image: intrinsics of another resolution?", True))
    fov = float(np.degrees(2 * np.arctan2(w / 2, fx))) if fx > 0 else 0.0
    lo_fov, hi_fov = FOV_RANGE_DEG
    if not lo_fov <= fov <= hi_fov or not 0.5 <= fx / max(fy, 1e-9) <= 2.0:
        problems.append(Problem("focal", f"focal lengths fx {fx:.1f} fy {fy:.1f} px give a {fov:.0f} deg field of view "
                                f"on a {w} px wide image: intrinsics of another resolution?", True))
    return problems


class PlausibilityTally:
    """Counts the problems of a stream of frames, for one summary line per kind."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.first: dict[str, Problem] = {}
        self.frames = 0

    def add(self, frame: Frame) -> list[Problem]:
        """Check ``frame``; returns its problems."""
        self.frames += 1
        problems = frame_problems(frame)
        for p in problems:
            self.counts[p.kind] += 1
            self.first.setdefault(p.kind, p)
        return problems

    def lines(self) -> list[str]:
        """One warning per kind: ``<n>/<frames> frames: <first message>``, and whether a build
        leaves those frames out."""
        return [f"{self.counts[k]}/{self.frames} frames: {p.message}{'; a build leaves them out' if p.unusable else ''}"
                for k, p in self.first.items()]
