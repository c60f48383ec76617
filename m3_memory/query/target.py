"""A 3D target from an image region and depth: points, a robust centre, an oriented box.

Depth comes from the memory's rendered expected depth or from a live depth image (the robot's
own camera, registered to the colour camera the query was rendered for). Region pixels are
lifted into the memory's frame; pixels whose depth strays from the region's median by more than
a robust bound (boundary pixels on the table behind an object) are dropped; the target point is
the per-axis median of the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from m3_memory.conventions import backproject
from m3_memory.errors import InputError
from m3_memory.query.camera import Camera

MAX_DEPTH_M = 20.0  # a "metres" depth image whose median exceeds this is in other units
MIN_DEPTH_SPREAD_M = 0.03  # depth outlier bound never tighter than this


@dataclass
class Box:
    """An oriented box in the memory's frame: centre [3] (m), rotation R [3, 3] (box axes as
    columns), extent [3] (full side lengths, m)."""

    center: np.ndarray
    R: np.ndarray
    extent: np.ndarray

    def to_json(self) -> dict:
        return {"center": self.center.tolist(), "R": self.R.tolist(), "extent": self.extent.tolist()}


def check_depth(depth: np.ndarray, camera: Camera, source: str = "depth") -> np.ndarray:
    """A live depth image as float32 metres [H, W] (0 = invalid); :class:`InputError` for the wrong
    size, dtype or units (integer images must be converted, e.g. uint16 mm / 1000)."""
    depth = np.asarray(depth)
    if depth.shape != (camera.height, camera.width):
        raise InputError(source, f"depth is {list(depth.shape)}, the camera is {camera.height}x{camera.width} "
                         "(depth must be registered to the colour camera)")
    if not np.issubdtype(depth.dtype, np.floating):
        raise InputError(source, f"depth must be float metres, got {depth.dtype} (convert uint16 millimetres: / 1000)")
    d = np.nan_to_num(depth.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    d[d < 0] = 0
    if (d > 0).any() and float(np.median(d[d > 0])) > MAX_DEPTH_M:
        raise InputError(source, f"median depth {float(np.median(d[d > 0])):.0f} is not metres (millimetres?)")
    return d


def lift_region(mask: np.ndarray, depth: np.ndarray, camera: Camera) -> np.ndarray:
    """Region pixels [H, W] bool with valid depth [H, W] (m) -> points [M, 3] in the memory's frame,
    depth outliers removed (median +- max(3 * 1.4826 MAD, 3 cm))."""
    d = np.where(mask, depth, 0.0).astype(np.float64)
    z = d[d > 0]
    if z.size == 0:
        return np.zeros((0, 3))
    med = np.median(z)
    bound = max(3 * 1.4826 * np.median(np.abs(z - med)), MIN_DEPTH_SPREAD_M)
    d[np.abs(d - med) > bound] = 0
    return backproject(d, camera.K, camera.T_world_cam)


def robust_center(points: np.ndarray) -> np.ndarray:
    """Per-axis median of points [M, 3] -> [3]."""
    return np.median(points, axis=0)


def oriented_box(points: np.ndarray) -> Box | None:
    """open3d's oriented bounding box of points [M, 3] (None for fewer than 4 or degenerate points)."""
    import open3d as o3d

    if len(points) < 4:
        return None
    try:
        obb = o3d.geometry.OrientedBoundingBox.create_from_points(o3d.utility.Vector3dVector(points))
    except RuntimeError:  # qhull fails on coplanar or repeated points
        return None
    return Box(np.asarray(obb.center).copy(), np.asarray(obb.R).copy(), np.asarray(obb.extent).copy())
