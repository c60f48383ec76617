"""A small transform tree, as ROS's tf2 keeps it, without ROS.

Every frame has at most one parent. An edge ``parent <- child`` is static (one
transform, valid at all times) or dynamic (a time series, interpolated between the two
nearest stamps: linear translation, slerp rotation). Stamps are in seconds, translations
in metres. A lookup walks both frames up to their nearest common ancestor.
"""

from __future__ import annotations

from bisect import bisect_left

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from m3_memory.conventions import T_from_quat_wxyz, invert_T, quat_wxyz_from_T


class TfLookupError(LookupError):
    """The buffer cannot give a transform (readers turn this into an ``InputError``)."""


class TfConnectivityError(TfLookupError):
    """The two frames are not in one tree (or a frame is unknown)."""


class TfExtrapolationError(TfLookupError):
    """The stamp lies outside a dynamic edge's data by more than the tolerance."""


def slerp(q0: np.ndarray, q1: np.ndarray, a: float) -> np.ndarray:
    """Spherical linear interpolation of wxyz quaternions [4] at fraction ``a`` in [0, 1],
    along the shorter arc (q and -q are the same rotation; scipy's Slerp). Returns a unit wxyz [4]."""
    key = Rotation.from_quat(np.stack([q0, q1]).astype(np.float64), scalar_first=True)
    return Slerp([0.0, 1.0], key)([a]).as_quat(scalar_first=True)[0]


class _Series:
    """A dynamic edge: T_parent_child [4, 4] at increasing stamps (seconds)."""

    def __init__(self) -> None:
        self.stamps: list[float] = []
        self.poses: list[np.ndarray] = []

    def add(self, stamp: float, T: np.ndarray) -> None:
        i = bisect_left(self.stamps, stamp)
        if i < len(self.stamps) and self.stamps[i] == stamp:
            self.poses[i] = T
        else:
            self.stamps.insert(i, stamp)
            self.poses.insert(i, T)

    def at(self, stamp: float, tolerance: float, edge: str) -> np.ndarray:
        s = self.stamps
        if stamp < s[0] - tolerance or stamp > s[-1] + tolerance:
            raise TfExtrapolationError(f"transform {edge} at {stamp:.6f} s is outside its data "
                                       f"({s[0]:.6f} to {s[-1]:.6f} s, tolerance {tolerance} s)")
        i = bisect_left(s, stamp)
        if i == len(s):
            return self.poses[-1]
        if i == 0 or s[i] == stamp:
            return self.poses[i]
        t0, t1 = s[i - 1], s[i]
        a = (stamp - t0) / (t1 - t0)
        T0, T1 = self.poses[i - 1], self.poses[i]
        q = slerp(quat_wxyz_from_T(T0), quat_wxyz_from_T(T1), a)
        return T_from_quat_wxyz(q, (1.0 - a) * T0[:3, 3] + a * T1[:3, 3])


class TfBuffer:
    """Transforms between named frames; ``T_parent_child`` [4, 4] maps child points to parent.

    tolerance: seconds a lookup may lie before the first or after the last stamp of a
    dynamic edge (the nearest transform is used there); further out is an error.
    """

    def __init__(self, tolerance: float = 0.01):
        self.tolerance = float(tolerance)
        self._parent: dict[str, str] = {}
        self._static: dict[str, np.ndarray] = {}
        self._dynamic: dict[str, _Series] = {}

    def add(self, parent: str, child: str, T_parent_child: np.ndarray, stamp: float | None = None) -> None:
        """Add the edge ``parent <- child``: static when ``stamp`` is None, else one sample
        of a dynamic edge at ``stamp`` seconds. A child given a new parent, or switched
        between static and dynamic, forgets its earlier transforms (the last one wins)."""
        T = np.array(T_parent_child, dtype=np.float64)  # [4, 4]
        if self._parent.get(child) != parent:
            self._static.pop(child, None)
            self._dynamic.pop(child, None)
        self._parent[child] = parent
        if stamp is None:
            self._static[child] = T
            self._dynamic.pop(child, None)
        else:
            self._static.pop(child, None)
            self._dynamic.setdefault(child, _Series()).add(float(stamp), T)

    def frames(self) -> set[str]:
        """Names of every frame in the buffer."""
        return set(self._parent) | set(self._parent.values())

    def _chain(self, frame: str) -> list[str]:
        """``frame`` and its ancestors up to its root."""
        chain, seen = [frame], {frame}
        while chain[-1] in self._parent:
            parent = self._parent[chain[-1]]
            if parent in seen:
                raise TfConnectivityError(f"frame {frame!r} is in a cycle ({' -> '.join(chain + [parent])})")
            chain.append(parent)
            seen.add(parent)
        return chain

    def _to_ancestor(self, chain: list[str], ancestor: str, stamp: float) -> np.ndarray:
        """T_ancestor_frame [4, 4] for ``chain[0]`` at ``stamp`` seconds."""
        T = np.eye(4)
        for child in chain[: chain.index(ancestor)]:
            edge = self._static.get(child)
            if edge is None:
                edge = self._dynamic[child].at(stamp, self.tolerance, f"{self._parent[child]} <- {child}")
            T = edge @ T
        return T

    def lookup(self, target: str, source: str, stamp: float) -> np.ndarray:
        """T_target_source [4, 4]: maps points in ``source`` to ``target`` at ``stamp`` seconds.

        Raises :class:`TfConnectivityError` when the frames share no tree and
        :class:`TfExtrapolationError` when a dynamic edge on the path has no data at ``stamp``.
        """
        up_target, up_source = self._chain(target), self._chain(source)
        in_target = set(up_target)
        common = next((f for f in up_source if f in in_target), None)
        if common is None:
            raise TfConnectivityError(f"frames {target!r} (tree root {up_target[-1]!r}) and {source!r} "
                                      f"(tree root {up_source[-1]!r}) are not connected")
        T_common_target = self._to_ancestor(up_target, common, stamp)
        T_common_source = self._to_ancestor(up_source, common, stamp)
        return invert_T(T_common_target) @ T_common_source
