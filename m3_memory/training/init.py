"""Gaussians initialised from posed RGB-D frames.

Valid depth pixels of every frame are back-projected into the world with their colours and
merged on one voxel grid (one point per ``voxel`` metres): each occupied voxel becomes the mean
position and mean colour of all the points in it, the result of open3d's
``voxel_down_sample`` on the union of the frames' points, accumulated frame by frame in time
linear in the number of points. Each point becomes a Gaussian as 3DGS initialises them:
isotropic scale = root mean square distance to its three nearest neighbours, identity
rotation, opacity 0.1, colour as the degree-0 spherical-harmonic coefficient, principal
queries drawn from N(0, 1).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from scipy.spatial import cKDTree

from m3_memory.conventions import backproject
from m3_memory.errors import InputError
from m3_memory.memory.artifact import Gaussians
from m3_memory.recording.frame import Frame
from m3_memory.render.sh import C0 as SH_C0  # degree-0 spherical harmonic: colour = 0.5 + SH_C0 * f_dc

INIT_OPACITY = 0.1


def rgb_to_sh(rgb: torch.Tensor) -> torch.Tensor:
    """Colours in [0, 1] [..., 3] -> degree-0 SH coefficients [..., 3]."""
    return (rgb - 0.5) / SH_C0


class VoxelMeans:
    """Running per-voxel sums of points and colours on the grid of open3d's
    ``voxel_down_sample``: voxel (i, j, k) holds the points p with floor((p - origin) / voxel) =
    (i, j, k), origin = the union's minimum corner less half a voxel. Points are added in blocks;
    blocks are reduced to one row per voxel whenever the unreduced rows outgrow the reduced ones,
    so the work stays linear in the points added (times a logarithm for sorting)."""

    def __init__(self, voxel: float, lo: np.ndarray, hi: np.ndarray):
        """voxel: edge (m). lo, hi [3]: the minimum and maximum corner (m) of every point to be added."""
        self.voxel = voxel
        self.origin = np.asarray(lo, np.float64) - voxel * 0.5  # [3]
        self.dims = np.floor((np.asarray(hi, np.float64) + voxel * 0.5 - self.origin) / voxel).astype(np.int64) + 1
        if float(np.prod(self.dims.astype(np.float64))) >= 2.0**62:
            raise InputError(f"voxel {voxel}", f"too small for a cloud spanning {np.round(hi - lo, 3).tolist()} m; "
                             "use a larger voxel")
        self.keys = np.zeros(0, np.int64)  # [V] voxel keys, increasing
        self.sums = np.zeros((0, 7))  # [V, 7] sum of xyz (m), sum of rgb, point count
        self.pending: list[tuple[np.ndarray, np.ndarray]] = []
        self.pending_rows = 0

    def add(self, points: np.ndarray, colors: np.ndarray) -> None:
        """points [M, 3] (m) inside the corners given at construction, colours [M, 3] in [0, 1]."""
        index = np.floor((points - self.origin) / self.voxel).astype(np.int64)  # [M, 3]
        keys = (index[:, 0] * self.dims[1] + index[:, 1]) * self.dims[2] + index[:, 2]  # [M]
        self.pending.append((keys, np.concatenate([points, colors, np.ones((len(points), 1))], axis=1)))
        self.pending_rows += len(keys)
        if self.pending_rows > max(len(self.keys), 1 << 16):
            self._reduce()

    def _reduce(self) -> None:
        keys = np.concatenate([self.keys, *(k for k, _ in self.pending)])
        rows = np.concatenate([self.sums, *(r for _, r in self.pending)])  # [R, 7]
        self.keys, inverse = np.unique(keys, return_inverse=True)
        self.sums = np.stack([np.bincount(inverse, rows[:, c], len(self.keys)) for c in range(rows.shape[1])], axis=1)
        self.pending, self.pending_rows = [], 0

    def means(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean point [V, 3] (m) and mean colour [V, 3] of each occupied voxel, in increasing
        voxel order (x index, then y, then z)."""
        self._reduce()
        count = self.sums[:, 6:7]
        return self.sums[:, :3] / count, self.sums[:, 3:6] / count


def init_from_rgbd(frames: Iterable[Frame], query_dim: int, voxel: float = 0.01, stride: int = 2,
                   depth_max: float = 5.0, seed: int = 0, source: str = "recording",
                   sparse: tuple[np.ndarray, np.ndarray] | None = None) -> Gaussians:
    """Posed RGB-D frames -> Gaussians [N] in the world frame (metres).

    voxel: merge distance (m). stride: use every stride-th pixel. depth_max: ignore depth
    farther than this (m). query_dim: principal-query channels per Gaussian.
    sparse: structure-from-motion points (xyz [M, 3] m, rgb [M, 3] uint8) merged in, as 3DGS
    initialises from them; they also cover what lies beyond the depth camera's range.
    """
    frames = list(frames)
    clouds = []  # per frame: its valid depth pixels as (points [M, 3] m, colours [M, 3]), made on demand

    def cloud(f: Frame) -> tuple[np.ndarray, np.ndarray] | None:
        if f.T_world_cam is None:
            raise InputError(source, f"{f.name or 'a frame'} has no camera pose; poses are needed to place Gaussians "
                             "(use --poses odometry for recordings without them)")
        depth = np.where(f.depth <= depth_max, f.depth, 0)
        sub = depth[::stride, ::stride]
        if not (sub > 0).any():
            return None
        v, u = np.nonzero(sub > 0)
        return backproject(depth, f.K, f.T_world_cam, stride), f.rgb[::stride, ::stride][v, u].astype(np.float64) / 255.0

    if sparse is not None:
        clouds.append(lambda: (np.asarray(sparse[0], np.float64), np.asarray(sparse[1], np.float64) / 255.0))
    clouds += [lambda f=f: cloud(f) for f in frames]
    lo, hi = np.full(3, np.inf), np.full(3, -np.inf)
    for make in clouds:  # first pass: the grid's corners (back-projecting again is cheaper than keeping the points)
        part = make()
        if part is not None and len(part[0]):
            lo, hi = np.minimum(lo, part[0].min(axis=0)), np.maximum(hi, part[0].max(axis=0))
    if not np.isfinite(lo).all():
        raise InputError(source, f"no valid depth closer than {depth_max} m in any frame: nothing to initialise from")
    grid = VoxelMeans(voxel, lo, hi)
    for make in clouds:
        part = make()
        if part is not None:
            grid.add(*part)
    means, colors = grid.means()  # [N, 3] each
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
