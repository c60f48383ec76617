"""Grasp candidates for the Z1 gripper from an object's points (world frame, metres).

Two families, ranked together: approach-cone grasps (approach directions within the tilt
limit of straight down, top-down first, closing directions around it) and antipodal grasps
(point pairs whose estimated surface normals face each other within a friction cone). Each
is fitted to the points with the gripper's collision primitives from the URDF
(m3_grasp.collision.Hand): the jaws must hold points between them, the object rests a
clearance above the fixed jaw's pad, the opening must fit the gripper, and no part of the
hand (palm, jaws, flange, camera) may touch the object or come near the scene; when it
does, the gripper opens wider, then the grasp backs out along its approach.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import open3d as o3d
from scipy.spatial import cKDTree

from m3_grasp.collision import Hand
from m3_grasp.kinematics import GripperSpec

DOWN = np.array([0.0, 0.0, -1.0])


@dataclass
class GraspCandidate:
    """A grasp: tool pose T_world_ee [4, 4] (x approach, z closing), the object's width between
    the jaws and the opening to approach with (m), its family and ranking score (lower is better)."""

    T_world_ee: np.ndarray
    width: float
    open_width: float
    kind: str  # "top-down", "tilted" or "antipodal"
    tilt: float  # rad between the approach and straight down
    score: float


def tool_rotation(approach: np.ndarray, closing: np.ndarray) -> np.ndarray:
    """Rotation [3, 3] with columns x = approach, y = closing x approach, z = closing."""
    a = approach / np.linalg.norm(approach)
    c = closing - (closing @ a) * a
    c = c / np.linalg.norm(c)
    return np.column_stack([a, np.cross(c, a), c])


def _cone_directions(max_tilt: float, tilt_steps: int = 2, azimuths: int = 8) -> list[np.ndarray]:
    """Approach directions [3]: straight down, then rings of tilt up to ``max_tilt`` radians."""
    dirs = [DOWN]
    for tilt in np.linspace(0.0, max_tilt, tilt_steps + 1)[1:]:
        for phi in np.arange(azimuths) * 2 * np.pi / azimuths:
            dirs.append(np.array([np.sin(tilt) * np.cos(phi), np.sin(tilt) * np.sin(phi), -np.cos(tilt)]))
    return dirs


def _normals(points: np.ndarray) -> np.ndarray:
    """Outward unit normals [M, 3] (open3d PCA over 16 neighbours, flipped away from the centroid)."""
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points))
    cloud.estimate_normals(o3d.geometry.KDTreeSearchParamKNN(16))
    n = np.asarray(cloud.normals)
    flip = np.einsum("ij,ij->i", n, points - points.mean(0)) < 0
    n[flip] *= -1
    return n


def antipodal_pairs(points: np.ndarray, max_width: float, cone: float, samples: int,
                    rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """(centre [3], closing axis [3]) of point pairs i, j with |p_j - p_i| <= max_width whose
    normals point away from each other along the pair axis within ``cone`` radians."""
    if len(points) < 16:
        return []
    n = _normals(points)
    tree = cKDTree(points)
    out = []
    for i in rng.choice(len(points), size=min(samples, len(points)), replace=False):
        j = np.asarray(tree.query_ball_point(points[i], max_width), dtype=int)
        d = points[j] - points[i]  # [k, 3]
        length = np.linalg.norm(d, axis=1)
        ok = length > 0.01
        if not ok.any():
            continue
        j, u = j[ok], d[ok] / length[ok, None]
        good = (u @ -n[i] > np.cos(cone)) & (np.einsum("ij,ij->i", u, n[j]) > np.cos(cone))
        if good.any():
            k = j[good][np.argmax((u[good] @ -n[i]) + np.einsum("ij,ij->i", u[good], n[j[good]]))]
            axis = points[k] - points[i]
            out.append(((points[i] + points[k]) / 2, axis / np.linalg.norm(axis)))
    return out


def fit_grasp(centre: np.ndarray, R: np.ndarray, object_points: np.ndarray, scene_points: np.ndarray, hand: Hand,
              gripper: GripperSpec, clearance: float, scene_margin: float, min_points: int, max_backoff: float = 0.04,
              scene_tree: cKDTree | None = None) -> tuple[np.ndarray, float, float] | None:
    """Fit a grasp of orientation R [3, 3] near ``centre`` [3]: (T_world_ee [4, 4], width, open
    width) or None. ``centre`` starts halfway along the jaws (Hand.grip_point); the points in
    the jaws' slab (Hand.held) are placed ``clearance`` above the fixed jaw's pad; the gripper
    opens to the object's width plus twice the clearance, or wider in 1 cm steps, until no
    hand primitive holds an object point or comes within ``scene_margin`` of a scene point;
    failing that, the grasp backs out along its approach a centimetre at a time."""
    local = (object_points - centre) @ R  # [M, 3] tool frame at the centre
    for backoff in np.arange(0.0, max_backoff + 1e-9, 0.01):
        along = hand.grip_point(0.0)[0] + backoff  # m, the centre's x in the tool frame
        held = hand.held(local + [along, 0.0, 0.0])
        if held.sum() < min_points:
            return None
        lo, hi = local[held, 2].min(), local[held, 2].max()
        width = hi - lo
        offset = np.array([along, 0.0, hand.pad_z + clearance - lo])  # tool frame = local + offset
        T = np.eye(4)
        T[:3, :3] = R
        T[:3, 3] = centre - R @ offset
        near = scene_points
        if scene_tree is not None:
            near = scene_points[scene_tree.query_ball_point(T[:3, :3] @ hand.centre + T[:3, 3], hand.radius + scene_margin)]
        scene_local = (near - T[:3, 3]) @ R  # [K, 3] tool frame
        for open_width in np.arange(width + 2 * clearance, gripper.max_width + 1e-9, 0.01):
            angle = gripper.angle(open_width)
            if not (hand.hits(local + offset, angle).any() or hand.hits(scene_local, angle, scene_margin).any()):
                return T, float(width), float(open_width)
    return None


def grasp_candidates(target: np.ndarray, object_points: np.ndarray, scene_points: np.ndarray, hand: Hand,
                     gripper: GripperSpec, max_tilt: float = np.deg2rad(45.0), clearance: float = 0.005,
                     scene_margin: float = 0.01, min_points: int = 5, closing_steps: int = 12, antipodal_samples: int = 300,
                     friction_cone: float = np.deg2rad(20.0), seed: int = 0) -> list[GraspCandidate]:
    """Ranked grasps (best first) of the object points [M, 3] around ``target`` [3], free of
    the scene points [K, 3] (world frame, metres) by ``scene_margin``. Score: distance of the
    held object's middle (Hand.grip_point) to the target (m) + 0.05 per radian of tilt
    + 0.01 x the opening fraction."""
    rng = np.random.default_rng(seed)
    tree = cKDTree(scene_points) if len(scene_points) else None
    proposals = []  # (centre, R, kind)
    centroid = object_points.mean(0)
    for approach in _cone_directions(max_tilt):
        kind = "top-down" if approach[2] == -1.0 else "tilted"
        helper = np.array([1.0, 0.0, 0.0]) if abs(approach[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
        base = np.cross(approach, helper)
        for k in range(closing_steps):
            phi = np.pi * k / closing_steps
            closing = np.cos(phi) * base + np.sin(phi) * np.cross(approach, base)
            for centre in (target, centroid):
                proposals.append((centre, tool_rotation(approach, closing), kind))
    for centre, axis in antipodal_pairs(object_points, gripper.max_width, friction_cone, antipodal_samples, rng):
        approach = DOWN - (DOWN @ axis) * axis
        if np.linalg.norm(approach) > 1e-3:
            proposals.append((centre, tool_rotation(approach, axis), "antipodal"))
    out = []
    for centre, R, kind in proposals:
        tilt = float(np.arccos(np.clip(R[:, 0] @ DOWN, -1, 1)))
        if tilt > max_tilt + 1e-9:
            continue
        fit = fit_grasp(centre, R, object_points, scene_points, hand, gripper, clearance, scene_margin, min_points,
                        scene_tree=tree)
        if fit is not None:
            T, width, open_width = fit
            grip = T[:3, :3] @ hand.grip_point(width) + T[:3, 3]
            score = float(np.linalg.norm(grip - target)) + 0.05 * tilt + 0.01 * open_width / gripper.max_width
            out.append(GraspCandidate(T, width, open_width, kind, tilt, score))
    return sorted(out, key=lambda c: c.score)
