"""Querying the Gaussians themselves, without rendering (GraspSplats-style).

Each Gaussian's principal query is decoded by memory attention into a feature, scored against
the text, and the relevant Gaussians (score above Otsu's threshold or a fixed bound, opacity
above a floor) are clustered in 3D with DBSCAN; the cluster with the largest total score is
the target.

A trained Gaussian's own query is mostly its N(0, 1) initialisation plus a small learned shift:
rendering sums many Gaussians' queries per pixel (alpha-weighted), the random parts cancel and
the shared shift is what memory attention reads. Decoding single queries therefore scores
objects at chance (measured on the synthetic scene, 600 iterations: the duck's Gaussians
score 0.001 median relevancy). So each Gaussian is decoded from the opacity-weighted sum of the
queries of its ``neighbours`` nearest Gaussians (itself included), the 3D counterpart of a
pixel's footprint; ``neighbours=1`` is the literal per-Gaussian decoding.
"""

from __future__ import annotations

import weakref

import numpy as np
import torch
from scipy.spatial import cKDTree

from m3_memory.memory.artifact import Memory
from m3_memory.memory.attention import attention_products, bank_spectrum, memory_attention
from m3_memory.query.relevancy import query_scores, score_numerator, score_of_norm, text_columns

MIN_OPACITY = 0.05  # Gaussians fainter than this are not part of any object
NEIGHBOURS = 64  # queries summed per decoded Gaussian (bench/query.py measures 1..64)


_CACHE: dict[int, tuple[weakref.ref, dict]] = {}  # id(means) -> (the tensor, what was computed from its memory)


def _memo(memory: Memory) -> dict:
    """Per-memory store of derived data, kept while the memory's ``means`` tensor lives (memories
    are not edited in place)."""
    means = memory.gaussians.means
    ref, store = _CACHE.get(id(means), (None, None))
    if ref is None or ref() is not means:
        store = {}
        _CACHE[id(means)] = (weakref.ref(means, lambda _, key=id(means): _CACHE.pop(key, None)), store)
    return store


def centre_tree(memory: Memory) -> cKDTree:
    """k-d tree of the Gaussians' centres, built once per loaded memory."""
    store = _memo(memory)
    if "tree" not in store:
        store["tree"] = cKDTree(memory.gaussians.means.numpy().astype(np.float64))
    return store["tree"]


def neighbourhood_queries(memory: Memory, model: str, neighbours: int, index: np.ndarray | None = None) -> torch.Tensor:
    """Opacity-weighted sums [n, l] of the queries of each Gaussian's ``neighbours`` nearest Gaussians
    (itself included) for the Gaussians ``index``; for all of them (None) computed once per memory."""
    g = memory.gaussians
    queries = memory.queries_of(model)  # [N, l]
    k = min(max(1, neighbours), len(g))
    if k == 1:
        return queries if index is None else queries[torch.from_numpy(np.asarray(index))]
    store, key = _memo(memory), ("queries", model, k)
    if key in store:  # all of them were computed (prepare_gaussians)
        return store[key] if index is None else store[key][torch.from_numpy(np.asarray(index))]
    at = g.means.numpy().astype(np.float64) if index is None else g.means.numpy()[np.asarray(index)].astype(np.float64)
    _, nn = centre_tree(memory).query(at, k=k)  # [n, k]
    nn = torch.from_numpy(nn.reshape(len(at), k))
    summed = (torch.sigmoid(g.opacity_logits)[nn][..., None] * queries[nn]).sum(1)  # [n, l]
    if index is None:
        store[key] = summed
    return summed


def gaussian_features(memory: Memory, model: str = "clip", neighbours: int = NEIGHBOURS,
                      index: np.ndarray | None = None) -> torch.Tensor:
    """Decoded features [n, d] of the Gaussians ``index`` (default: all N) in the model's space,
    each from the opacity-weighted sum of its ``neighbours`` nearest Gaussians' queries."""
    with torch.no_grad():
        return memory_attention(neighbourhood_queries(memory, model, neighbours, index), memory.banks[model])


def gaussian_norms(memory: Memory, model: str = "clip", neighbours: int = NEIGHBOURS) -> torch.Tensor:
    """Squared norms [N] of every Gaussian's decoded feature (:func:`gaussian_features`), in the scale
    of :func:`m3_memory.memory.attention.attention_products`' unnormalised weights; they do not
    depend on the text, so they are computed once per memory (exactly: ``|e U S|^2``)."""
    store, key = _memo(memory), ("norms", model, min(max(1, neighbours), len(memory.gaussians)))
    if key not in store:
        bank = memory.banks[model]
        spec = bank_spectrum(bank)
        store[key] = attention_products(neighbourhood_queries(memory, model, neighbours), bank, spec.factor).square().sum(-1)
    return store[key]


def gaussian_scores(memory: Memory, text: torch.Tensor, negatives: torch.Tensor, method: str, model: str = "clip",
                    neighbours: int = NEIGHBOURS, index: np.ndarray | None = None) -> np.ndarray:
    """Scores [n] of the Gaussians ``index`` (default: all N) for ``text`` [d] against ``negatives``
    [k, d]: ``score_map(gaussian_features(...), ...)`` without the ``[n, d]`` decode. Exact with the
    feature norms (:func:`gaussian_norms`: computed for all when ``index`` is None, else used when
    cached); a subset without them within :data:`m3_memory.query.relevancy.SCORE_TOL`
    (:func:`m3_memory.query.relevancy.query_scores`)."""
    bank = memory.banks[model]
    queries = neighbourhood_queries(memory, model, neighbours, index)  # [n, l]
    key = ("norms", model, min(max(1, neighbours), len(memory.gaussians)))
    if index is not None and key not in _memo(memory):
        return query_scores(queries, bank, text, negatives, method)[0].numpy()
    norms = gaussian_norms(memory, model, neighbours)  # [N]
    if index is not None:
        norms = norms[torch.from_numpy(np.asarray(index))]
    dots = attention_products(queries, bank, text_columns(bank, text, negatives, method))  # [n, 1 + k]
    return score_of_norm(score_numerator(dots), norms, method).numpy()


def prepare_gaussians(memory: Memory, model: str = "clip", neighbours: int = NEIGHBOURS) -> None:
    """Compute once what every Gaussian-level query needs (the k-d tree, each Gaussian's
    neighbourhood query, the bank's spectrum, the decoded features' norms), so the first query
    is as fast as the next: call it after loading a memory that will be asked in 3D."""
    centre_tree(memory)
    gaussian_norms(memory, model, neighbours)


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
