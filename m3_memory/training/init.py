"""Gaussians initialised from posed RGB-D frames.

Valid depth pixels are back-projected into the world with their colours and merged with
open3d's voxel down-sampling (one point per ``voxel`` metres). Each point becomes a
Gaussian as 3DGS initialises them: isotropic scale = root mean square distance to its
three nearest neighbours, identity rotation, opacity 0.1, colour as the degree-0
spherical-harmonic coefficient, principal queries drawn from N(0, 1).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from scipy.spatial import cKDTree

from m3_memory.conventions import backproject
from m3_memory.errors import InputError
from m3_memory.render.sh import C0 as SH_C0  # degree-0 spherical harmonic: colour = 0.5 + SH_C0 * f_dc
from m3_memory.memory.artifact import Gaussians
from m3_memory.recording.frame import Frame

INIT_OPACITY = 0.1


def rgb_to_sh(rgb: torch.Tensor) -> torch.Tensor:
    """Colours in [0, 1] [..., 3] -> degree-0 SH coefficients [..., 3]."""
    return (rgb - 0.5) / SH_C0


def _cloud(points: np.ndarray, colors: np.ndarray):
    """An open3d point cloud [M] of points [M, 3] (m) and colours [M, 3] in [0, 1]."""
    import open3d as o3d

    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points))
    pcd.colors = o3d.utility.Vector3dVector(colors)
    return pcd


def init_from_rgbd(frames: Iterable[Frame], query_dim: int, voxel: float = 0.01, stride: int = 2,
                   depth_max: float = 5.0, seed: int = 0, source: str = "recording",
                   sparse: tuple[np.ndarray, np.ndarray] | None = None) -> Gaussians:
    """Posed RGB-D frames -> Gaussians [N] in the world frame (metres).

    voxel: merge distance (m). stride: use every stride-th pixel. depth_max: ignore depth
    farther than this (m). query_dim: principal-query channels per Gaussian.
    sparse: structure-from-motion points (xyz [M, 3] m, rgb [M, 3] uint8) merged in, as 3DGS
    initialises from them; they also cover what lies beyond the depth camera's range.
    """
    merged = _cloud(np.zeros((0, 3)), np.zeros((0, 3)))
    seen = 0
    if sparse is not None:
        merged += _cloud(np.asarray(sparse[0], np.float64), np.asarray(sparse[1], np.float64) / 255.0)
        merged = merged.voxel_down_sample(voxel)
    for f in frames:
        if f.T_world_cam is None:
            raise InputError(source, f"{f.name or 'a frame'} has no camera pose; poses are needed to place Gaussians "
                             "(use --poses odometry for recordings without them)")
        depth = np.where(f.depth <= depth_max, f.depth, 0)
        sub = depth[::stride, ::stride]
        if not (sub > 0).any():
            continue
        seen += 1
        pts = backproject(depth, f.K, f.T_world_cam, stride)  # [M, 3]
        v, u = np.nonzero(sub > 0)
        cols = f.rgb[::stride, ::stride][v, u].astype(np.float64) / 255.0  # [M, 3]
        merged += _cloud(pts, cols).voxel_down_sample(voxel)
        merged = merged.voxel_down_sample(voxel)
    if (seen == 0 and sparse is None) or len(merged.points) == 0:
        raise InputError(source, f"no valid depth closer than {depth_max} m in any frame: nothing to initialise from")
    means = np.asarray(merged.points)
    colors = np.asarray(merged.colors)
    k = min(4, len(means))
    dist, _ = cKDTree(means).query(means, k=k)  # [N, k], first column is the point itself
    rms = np.sqrt(np.mean(dist[:, 1:] ** 2, axis=1)) if k > 1 else np.full(len(means), voxel)
    rms = np.maximum(rms, 1e-7)
    n = len(means)
    g = torch.Generator().manual_seed(seed)
    return Gaussians(
        means=torch.from_numpy(means).float(),
        quats=torch.tensor([1.0, 0.0, 0.0, 0.0]).repeat(n, 1),
        log_scales=torch.from_numpy(np.log(rms)).float()[:, None].repeat(1, 3),
        opacity_logits=torch.full((n,), float(np.log(INIT_OPACITY / (1 - INIT_OPACITY)))),
        sh_dc=rgb_to_sh(torch.from_numpy(colors).float()),
        sh_rest=torch.zeros(n, 0, 3),
        queries=torch.randn(n, query_dim, generator=g),
    )
