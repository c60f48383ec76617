"""A small transform tree, as ROS's tf2 keeps it, without ROS.

Static edges hold one transform; dynamic edges a time series, interpolated between
the two nearest stamps (linear translation, slerp rotation). Stamps in seconds.
"""

from __future__ import annotations

from bisect import bisect_left

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from m3_memory.conventions import invert_T, make_T


class TfLookupError(LookupError):
    """Frames not connected, or a stamp outside the recorded range."""


class _Series:
    def __init__(self) -> None:
        self.stamps: list[float] = []
        self.poses: list[np.ndarray] = []

    def add(self, stamp: float, T: np.ndarray) -> None:
        i = bisect_left(self.stamps, stamp)
        if i < len(self.stamps) and self.stamps[i] == stamp:
            self.poses[i] = T
            return
        self.stamps.insert(i, stamp)
        self.poses.insert(i, T)

    def at(self, stamp: float, tolerance: float) -> np.ndarray:
        s = self.stamps
        if stamp < s[0] - tolerance or stamp > s[-1] + tolerance:
            raise TfLookupError(f"stamp {stamp:.6f} s outside the recorded {s[0]:.6f}-{s[-1]:.6f} s")
        i = bisect_left(s, stamp)
        if i == 0 or (i < len(s) and s[i] == stamp):
            return self.poses[min(i, len(s) - 1)]
        if i == len(s):
            return self.poses[-1]
        t0, t1 = s[i - 1], s[i]
        a = (stamp - t0) / (t1 - t0)
        T0, T1 = self.poses[i - 1], self.poses[i]
        rot = Slerp([0.0, 1.0], Rotation.from_matrix(np.stack([T0[:3, :3], T1[:3, :3]])))([a]).as_matrix()[0]
        return make_T(rot, (1 - a) * T0[:3, 3] + a * T1[:3, 3])


class TfBuffer:
    """Transforms between named frames. ``T_parent_child`` maps child points to parent."""

    def __init__(self, tolerance: float = 0.05):
        self.tolerance = tolerance  # seconds a lookup may lie outside a dynamic series
        self._parent: dict[str, str] = {}
        self._static: dict[str, np.ndarray] = {}
        self._dynamic: dict[str, _Series] = {}

    def add(self, parent: str, child: str, T_parent_child: np.ndarray, stamp: float | None = None) -> None:
        """Add an edge; ``stamp=None`` makes it static."""
        self._parent[child] = parent
        if stamp is None:
            self._static[child] = T_parent_child
            self._dynamic.pop(child, None)
        else:
            self._dynamic.setdefault(child, _Series()).add(stamp, T_parent_child)

    def frames(self) -> set[str]:
        return set(self._parent) | set(self._parent.values())

    def _chain(self, frame: str) -> list[str]:
        chain = [frame]
        while chain[-1] in self._parent:
            chain.append(self._parent[chain[-1]])
            if len(chain) > 1000:
                raise TfLookupError(f"frame {frame!r} is in a cycle")
        return chain

    def _to_ancestor(self, chain: list[str], ancestor: str, stamp: float) -> np.ndarray:
        T = np.eye(4)
        for child in chain[: chain.index(ancestor)]:
            edge = self._static.get(child)
            if edge is None:
                edge = self._dynamic[child].at(stamp, self.tolerance)
            T = edge @ T
        return T  # T_ancestor_frame

    def lookup(self, target: str, source: str, stamp: float) -> np.ndarray:
        """T_target_source [4, 4] at ``stamp`` seconds; TfLookupError when not available."""
        a, b = self._chain(target), self._chain(source)
        common = next((f for f in b if f in set(a)), None)
        if common is None:
            raise TfLookupError(f"frames {target!r} and {source!r} are not connected")
        return invert_T(self._to_ancestor(a, common, stamp)) @ self._to_ancestor(b, common, stamp)
