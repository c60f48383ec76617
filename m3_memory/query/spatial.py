"""Querying the Gaussians themselves, without rendering (GraspSplats-style).

Each Gaussian's own principal query is decoded by memory attention into a feature, scored
against the text, and the relevant Gaussians (score above Otsu's threshold or a fixed bound,
opacity above a floor) are clustered in 3D with DBSCAN; the cluster with the largest total
score is the target.
"""

from __future__ import annotations

import numpy as np
import torch

from m3_memory.memory.artifact import Memory
from m3_memory.memory.attention import memory_attention

MIN_OPACITY = 0.1  # Gaussians fainter than this are not part of any object


def gaussian_features(memory: Memory, model: str = "clip") -> torch.Tensor:
    """Decoded feature of every Gaussian's principal query: [N, d] in the model's space."""
    with torch.no_grad():
        return memory_attention(memory.queries_of(model), memory.banks[model])


def dbscan(points: np.ndarray, eps: float, min_points: int) -> np.ndarray:
    """open3d DBSCAN labels [M] (-1 = noise) of points [M, 3] (m)."""
    import open3d as o3d

    if len(points) == 0:
        return np.zeros(0, dtype=int)
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points.astype(np.float64)))
    return np.asarray(pcd.cluster_dbscan(eps=eps, min_points=min_points, print_progress=False))


def best_cluster(points: np.ndarray, score: np.ndarray, eps: float, min_points: int) -> np.ndarray:
    """Indices into ``points`` [M, 3] of the DBSCAN cluster with the largest summed ``score`` [M]."""
    labels = dbscan(points, eps, min_points)
    if len(labels) == 0 or labels.max() < 0:
        return np.zeros(0, dtype=int)
    totals = np.bincount(labels[labels >= 0], weights=score[labels >= 0])
    return np.nonzero(labels == int(np.argmax(totals)))[0]
