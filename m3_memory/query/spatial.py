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

import ctypes
import logging
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from m3_memory.memory.artifact import Memory
from m3_memory.memory.attention import attention_products, bank_spectrum, memory_attention
from m3_memory.query.memo import memo
from m3_memory.query.relevancy import (
    leading_components,
    query_norms,
    query_scores,
    score_numerator,
    score_of_norm,
    unit_scores,
    unit_texts,
)
from m3_memory.render.cpu import compile_library

CLUSTER_SOURCE = Path(__file__).resolve().parent / "csrc" / "cluster.cpp"
log = logging.getLogger("m3")

MIN_OPACITY = 0.05  # Gaussians fainter than this are not part of any object
NEIGHBOURS = 64  # queries summed per decoded Gaussian (bench/query.py measures 1..64)


def _k(memory: Memory, neighbours: int) -> int:
    return min(max(1, neighbours), len(memory.gaussians))


def centre_tree(memory: Memory) -> cKDTree:
    """k-d tree of the Gaussians' centres, built once per loaded memory."""
    store = memo(memory)
    if "tree" not in store:
        store["tree"] = cKDTree(memory.gaussians.means.numpy().astype(np.float64))
    return store["tree"]


def centre_means(memory: Memory) -> np.ndarray:
    """The Gaussians' centres [N, 3] as float64 (m): the k-d tree's own copy (:func:`centre_tree`), read-only."""
    return centre_tree(memory).data


def gaussians_in_aabb(memory: Memory, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Indices (ascending) of the Gaussians whose centres lie in the axis-aligned box ``lo`` [3] ..
    ``hi`` [3] (m, bounds included), from the centres' kept per-axis columns."""
    store = memo(memory)
    if "columns" not in store:
        store["columns"] = np.ascontiguousarray(centre_means(memory).T)  # [3, N]
    x, y, z = store["columns"]
    return np.nonzero((x >= lo[0]) & (x <= hi[0]) & (y >= lo[1]) & (y <= hi[1]) & (z >= lo[2]) & (z <= hi[2]))[0]


def neighbourhood_queries(memory: Memory, model: str, neighbours: int, index: np.ndarray | None = None) -> torch.Tensor:
    """Opacity-weighted sums [n, l] of the queries of each Gaussian's ``neighbours`` nearest Gaussians
    (itself included) for the Gaussians ``index``; for all of them (None) computed once per memory."""
    g = memory.gaussians
    queries = memory.queries_of(model)  # [N, l]
    k = _k(memory, neighbours)
    if k == 1:
        return queries if index is None else queries[torch.from_numpy(np.asarray(index))]
    store, key = memo(memory), ("queries", model, k)
    if key in store:  # all of them were computed (prepare_gaussians)
        return store[key] if index is None else store[key][torch.from_numpy(np.asarray(index))]
    at = centre_means(memory) if index is None else centre_means(memory)[np.asarray(index)]
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


FEATURE_CACHE_BYTES = 2**31  # the largest table of every Gaussian's unit feature [N, d] float32 kept per memory
ROWS_GATHERED = 1024  # gaussian_scores scores a subset of the kept features this many rows at a time (in cache)


def gaussian_unit_features(memory: Memory, model: str = "clip", neighbours: int = NEIGHBOURS) -> torch.Tensor | None:
    """Every Gaussian's decoded feature (:func:`gaussian_features`) as a unit vector, [N, d] float32,
    computed once per memory (``N t d`` multiply-adds) and kept, so that scoring a text is one
    ``[N, d] x [d, 1 + k]`` product; None when the table would exceed :data:`FEATURE_CACHE_BYTES`
    (then the scores use :func:`gaussian_norms`)."""
    bank = memory.banks[model]
    if len(memory.gaussians) * bank.feature_dim * 4 > FEATURE_CACHE_BYTES:
        return None
    store, key = memo(memory), ("features", model, _k(memory, neighbours))
    if key not in store:
        f = attention_products(neighbourhood_queries(memory, model, neighbours), bank, bank.psc.detach().float())  # [N, d]
        store[key] = f.div_(torch.linalg.vector_norm(f, dim=-1, keepdim=True).clamp_min(1e-30))
    return store[key]


def gaussian_norms(memory: Memory, model: str = "clip", neighbours: int = NEIGHBOURS) -> torch.Tensor:
    """Squared norms [N] of every Gaussian's decoded feature (:func:`gaussian_features`), in the scale
    of :func:`m3_memory.memory.attention.attention_products`' unnormalised weights; they do not
    depend on the text, so they are computed once per memory (exactly: ``|e U S|^2``)."""
    store, key = memo(memory), ("norms", model, _k(memory, neighbours))
    if key not in store:
        store[key] = query_norms(neighbourhood_queries(memory, model, neighbours), memory.banks[model])
    return store[key]


def gaussian_scores(memory: Memory, text: torch.Tensor, negatives: torch.Tensor, method: str, model: str = "clip",
                    neighbours: int = NEIGHBOURS, index: np.ndarray | None = None) -> np.ndarray:
    """Scores [n] of the Gaussians ``index`` (default: all N) for ``text`` [d] against ``negatives``
    [k, d]: ``score_map(gaussian_features(...), ...)`` without decoding per text. Exact (float32
    rounding) from the unit features (:func:`gaussian_unit_features`: computed for all when
    ``index`` is None, else used when kept) or, for a memory too large to keep them, the feature
    norms (:func:`gaussian_norms`); a subset with neither within
    :data:`m3_memory.query.relevancy.SCORE_TOL` (:func:`m3_memory.query.relevancy.query_scores`)."""
    store, k = memo(memory), _k(memory, neighbours)
    rows = None if index is None else torch.from_numpy(np.asarray(index))
    features = store.get(("features", model, k))
    if features is None and index is None:
        features = gaussian_unit_features(memory, model, neighbours)
    if features is not None:
        if rows is None or 4 * len(rows) > len(features):  # a large subset: one pass over the table, no gather
            every = unit_scores(features, text, negatives, method)
            return (every if rows is None else every[rows]).numpy()
        return torch.cat([unit_scores(features[part], text, negatives, method)  # gathered a few rows at a time
                          for part in rows.split(ROWS_GATHERED)]).numpy() if len(rows) else np.zeros(0, np.float32)
    bank = memory.banks[model]
    queries = neighbourhood_queries(memory, model, neighbours, index)  # [n, l]
    if index is not None and ("norms", model, k) not in store:
        return query_scores(queries, bank, text, negatives, method)[0].numpy()
    norms = gaussian_norms(memory, model, neighbours)  # [N]
    return query_scores(queries, bank, text, negatives, method, norms=norms if rows is None else norms[rows])[0].numpy()


SKETCH_SLACK = 1e-4  # gaussians_above: room for float32 rounding in a unit dot product (d * 2^-24 at d = 1536)


@dataclass(frozen=True)
class FeatureSketch:
    """Every Gaussian's unit feature ``u`` [d] in the bank's leading principal directions: ``basis``
    [d, k] orthonormal (the bank's leading right singular vectors), ``coords`` [N, k] = ``u basis``
    and ``rest`` [N] = ``|u - coords basis^T|``. For a unit text ``x``, ``|u . x - coords (basis^T x)|
    <= rest |x - basis basis^T x|`` (Cauchy-Schwarz on the parts outside the basis)."""

    basis: torch.Tensor
    coords: torch.Tensor
    rest: torch.Tensor


def feature_sketch(memory: Memory, model: str = "clip", neighbours: int = NEIGHBOURS) -> FeatureSketch | None:
    """The :class:`FeatureSketch` of the kept unit features (:func:`gaussian_unit_features`), computed
    once per memory; None without the table, or for a bank whose spectrum is flat (every principal
    component needed: :func:`~m3_memory.query.relevancy.leading_components`), where it would save nothing."""
    store, key = memo(memory), ("sketch", model, _k(memory, neighbours))
    if key not in store:
        store[key] = None
        bank = memory.banks[model]
        features = gaussian_unit_features(memory, model, neighbours)
        k = leading_components(bank)
        if features is not None and k < bank_spectrum(bank).sv.shape[0]:
            spec = bank_spectrum(bank)
            basis = torch.linalg.qr(bank.psc.detach().double().T @ spec.factor[:, :k].double())[0].float()  # [d, k]
            coords = features @ basis  # [N, k]
            rest = torch.cat([torch.linalg.vector_norm(part - c @ basis.T, dim=-1)  # a few rows at a time
                              for part, c in zip(features.split(8192), coords.split(8192))])
            store[key] = FeatureSketch(basis, coords, rest)
    return store[key]


def gaussians_above(memory: Memory, text: torch.Tensor, negatives: torch.Tensor, method: str, bound: float,
                    model: str = "clip", neighbours: int = NEIGHBOURS, index: np.ndarray | None = None) -> np.ndarray:
    """Bool [n]: which of the Gaussians ``index`` (default: all) score above ``bound`` for ``text``
    against ``negatives``: the decisions of ``gaussian_scores(...) > bound`` (but for a score within
    float32 rounding of ``bound``, which the two can round to either side). With a
    :class:`FeatureSketch` each Gaussian's dot products are first bounded from its ``k`` coordinates
    (``k`` multiply-adds per text instead of ``d``); only those whose score interval holds ``bound``
    get :func:`gaussian_scores` (tested equal on every Gaussian)."""
    kept = ("features", model, _k(memory, neighbours)) in memo(memory)  # the table (prepare or an earlier query)
    sketch = feature_sketch(memory, model, neighbours) if kept else None
    if sketch is None:
        return gaussian_scores(memory, text, negatives, method, model, neighbours, index) > bound
    rows = slice(None) if index is None else torch.from_numpy(np.asarray(index))
    x = unit_texts(text, negatives, method).float()  # [1 + k, d]
    xb = x @ sketch.basis  # [1 + k, kb]
    x_rest = torch.linalg.vector_norm(x - xb @ sketch.basis.T, dim=-1)  # [1 + k]
    dots = sketch.coords[rows] @ xb.T  # [n, 1 + k]
    err = sketch.rest[rows, None] * x_rest + SKETCH_SLACK  # [n, 1 + k]
    one = torch.ones(dots.shape[0])
    lo = score_of_norm(score_numerator(dots - err * _signs(dots.shape[1])), one, method)
    hi = score_of_norm(score_numerator(dots + err * _signs(dots.shape[1])), one, method)
    lo, hi = lo.numpy(), hi.numpy()  # compared as gaussian_scores' numpy scores are
    above = lo > bound
    unsure = np.nonzero(~above & (hi > bound))[0]
    if len(unsure):
        at = unsure if index is None else np.asarray(index)[unsure]
        above[unsure] = gaussian_scores(memory, text, negatives, method, model, neighbours, at) > bound
    return above


def _signs(columns: int) -> torch.Tensor:
    """[columns]: +1 for the text's dot product, -1 for the negatives' (the score rises with the
    first and falls with the others), so ``dots - err * signs`` is every score's low end."""
    s = -torch.ones(columns)
    s[0] = 1
    return s


def prepare_gaussians(memory: Memory, model: str = "clip", neighbours: int = NEIGHBOURS,
                      eps: float | None = None) -> None:
    """Compute once what every Gaussian-level query needs (the k-d tree, each Gaussian's
    neighbourhood query, the bank's spectrum, the unit features or, past their size limit, the
    features' norms, their :func:`feature_sketch` and, given ``eps``, the :func:`neighbour_graph`), so
    the first query is as fast as the next: call it after loading a memory that will be asked in
    3D (the object centre of text queries is one)."""
    centre_tree(memory)
    if gaussian_unit_features(memory, model, neighbours) is None:
        gaussian_norms(memory, model, neighbours)
    feature_sketch(memory, model, neighbours)
    if eps is not None:
        neighbour_graph(memory, eps)


GRID_CELLS = 2**19  # the compiled kernels' grid holds cells -2^19..2^19 per axis (10 km at 2 cm)


def _grid_ok(points: np.ndarray, eps: float) -> bool:
    return len(points) > 0 and eps > 0 and float(np.abs(points).max()) / eps < GRID_CELLS - 2


def dbscan(points: np.ndarray, eps: float, min_points: int) -> np.ndarray:
    """DBSCAN labels [M] (-1 = noise) of points [M, 3] (m): open3d's ``cluster_dbscan`` labels
    (:func:`dbscan_open3d`, the reference; tested equal). A point is core when at least
    ``min_points`` points (itself included) lie closer than ``eps``; clusters are the connected
    components of the cores closer than ``eps`` to each other, numbered in the order of their
    lowest-index core (open3d's expansion order); a non-core point closer than ``eps`` to cores takes
    the lowest of their cluster numbers, else it is noise. Computed by the compiled grid kernel
    (``csrc/cluster.cpp``: cells of side ``eps``, union-find, single-threaded; 30k points with about
    40 neighbours within 2 cm each: 50 ms CPU, open3d 170 ms, :func:`dbscan_pairs` 90 ms, measured on
    the shared 2-core machine) or, without a compiler, :func:`dbscan_pairs`."""
    pts = np.ascontiguousarray(points, dtype=np.float64).reshape(-1, 3)
    lib = cluster_library()
    if lib is None or not _grid_ok(pts, eps):
        return dbscan_pairs(pts, eps, min_points)
    labels = np.empty(len(pts), dtype=np.int64)
    lib.m3_dbscan(len(pts), pts.ctypes.data, float(eps), int(min_points), labels.ctypes.data)
    return labels


@cache
def cluster_library() -> ctypes.CDLL | None:
    """The compiled grid DBSCAN (``csrc/cluster.cpp``), built on first use into the kernel cache;
    None where it cannot be built (the compositor's warning names the compiler problem): then
    :func:`dbscan_pairs` computes the same with scipy."""
    target, why = compile_library(CLUSTER_SOURCE)
    if target is None:
        log.info("the grid DBSCAN could not be built (%s); clustering uses scipy", why)
        return None
    lib = ctypes.CDLL(str(target))
    p, i, f = ctypes.c_void_p, ctypes.c_int, ctypes.c_double
    lib.m3_dbscan.argtypes, lib.m3_dbscan.restype = [i, p, f, i, p], i
    lib.m3_near.argtypes, lib.m3_near.restype = [i, p, i, p, f, p], i
    lib.m3_dbscan_graph.argtypes, lib.m3_dbscan_graph.restype = [i, p, p, p, i, p, p], i
    return lib


GRAPH_EDGES = 2**25  # the largest neighbour graph kept per memory (int32 indices: 128 MB)


def neighbour_graph(memory: Memory, eps: float) -> tuple[np.ndarray, np.ndarray] | None:
    """The pairs of the memory's Gaussians whose centres are closer than ``eps`` (m), as CSR
    (indptr [N + 1] int64, indices int32: each Gaussian's neighbours), computed once per memory and
    eps (a k-d tree pair search); None past :data:`GRAPH_EDGES` (then :func:`dbscan` clusters from
    the coordinates). "Closer" is the grid kernel's test, ``dx^2 + dy^2 + dz^2 < eps^2`` in float64."""
    store, key = memo(memory), ("graph", float(eps))
    if key not in store:
        tree = centre_tree(memory)
        store[key] = None
        if tree.count_neighbors(tree, eps) - len(tree.data) <= GRAPH_EDGES:  # ordered pairs, without the pairs' lists
            pairs = tree.query_pairs(eps, output_type="ndarray")  # [p, 2], distance <= eps
            d = tree.data[pairs[:, 0]] - tree.data[pairs[:, 1]]  # [p, 3]
            pairs = pairs[d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1] + d[:, 2] * d[:, 2] < eps * eps]
            n = len(tree.data)
            both = np.concatenate([pairs, pairs[:, ::-1]])  # [2p, 2] each pair in both directions
            csr = coo_matrix((np.ones(len(both), dtype=np.int8), (both[:, 0], both[:, 1])), shape=(n, n)).tocsr()
            store[key] = (csr.indptr.astype(np.int64), csr.indices.astype(np.int32))
    return store[key]


def dbscan_members(memory: Memory, members: np.ndarray, eps: float, min_points: int) -> np.ndarray:
    """:func:`dbscan` labels [n] of the Gaussians ``members`` (ascending indices) by their centres:
    from the memory's :func:`neighbour_graph` (no distance computed per query; tested equal) where
    it is kept and the compiled kernel is built, else from the coordinates."""
    members = np.ascontiguousarray(members, dtype=np.int64)
    lib, graph = cluster_library(), neighbour_graph(memory, eps) if len(members) else None
    if lib is None or graph is None or np.any(np.diff(members) <= 0):
        return dbscan(centre_means(memory)[members], eps, min_points)
    at, (indptr, indices) = np.full(len(memory.gaussians), -1, dtype=np.int32), graph  # per call: queries may run in threads
    labels = np.empty(len(members), dtype=np.int64)
    lib.m3_dbscan_graph(len(members), members.ctypes.data, indptr.ctypes.data, indices.ctypes.data, int(min_points),
                        at.ctypes.data, labels.ctypes.data)
    return labels


def near_any(points: np.ndarray, others: np.ndarray, eps: float) -> np.ndarray:
    """Bool [n]: which of ``points`` [n, 3] lie closer than ``eps`` (m) to one of ``others`` [m, 3]:
    the compiled grid (``csrc/cluster.cpp``: hashing ``others`` into cells of side eps, each point's
    27 cells searched) or, without it, a k-d tree of ``others`` (scipy), the reference (tested equal)."""
    pts = np.ascontiguousarray(points, dtype=np.float64).reshape(-1, 3)
    oth = np.ascontiguousarray(others, dtype=np.float64).reshape(-1, 3)
    if len(pts) == 0 or len(oth) == 0:
        return np.zeros(len(pts), dtype=bool)
    lib = cluster_library()
    if lib is None or not _grid_ok(np.concatenate([pts, oth]), eps):
        return near_any_tree(pts, oth, eps)
    near = np.empty(len(pts), dtype=np.uint8)
    lib.m3_near(len(pts), pts.ctypes.data, len(oth), oth.ctypes.data, float(eps), near.ctypes.data)
    return near.astype(bool)


def near_any_tree(points: np.ndarray, others: np.ndarray, eps: float) -> np.ndarray:
    """:func:`near_any` by a k-d tree of ``others`` (scipy; built once, queried once: the fast build)."""
    if len(points) == 0 or len(others) == 0:
        return np.zeros(len(points), dtype=bool)
    tree = cKDTree(others, balanced_tree=False, compact_nodes=False)
    return tree.query(points, distance_upper_bound=eps)[0] < np.inf


def dbscan_pairs(points: np.ndarray, eps: float, min_points: int) -> np.ndarray:
    """:func:`dbscan` without the compiled kernel (no C++ compiler): one k-d tree pair search and a
    connected-components pass (scipy), the same rules and labels. The one difference: a pair exactly
    ``eps`` apart counts here, not in open3d (a tie of float64 distances)."""
    n = len(points)
    if n == 0:
        return np.zeros(0, dtype=int)
    tree = cKDTree(np.asarray(points, dtype=np.float64), balanced_tree=False, compact_nodes=False)  # the fast build
    pairs = tree.query_pairs(eps, output_type="ndarray")  # [p, 2], i < j
    core = np.bincount(pairs.ravel(), minlength=n) + 1 >= min_points  # [n]: neighbours within eps, itself included
    is_core = core[pairs]  # [p, 2]
    linked = pairs[is_core.all(1)]  # core-core pairs
    graph = coo_matrix((np.ones(len(linked), dtype=np.int8), (linked[:, 0], linked[:, 1])), shape=(n, n))
    component = connected_components(graph, directed=False)[1]  # [n]
    labels = np.full(n, -1)
    cores = np.nonzero(core)[0]  # ascending
    if len(cores) == 0:
        return labels
    found, first = np.unique(component[cores], return_index=True)  # each cluster's lowest-index core
    number = np.empty(component.max() + 1, dtype=int)
    number[found[np.argsort(first)]] = np.arange(len(found))
    labels[cores] = number[component[cores]]
    edge = pairs[is_core[:, 0] != is_core[:, 1]]  # core - border pairs
    if len(edge):
        c_first = is_core[is_core[:, 0] != is_core[:, 1], 0]
        centre, border = np.where(c_first, edge[:, 0], edge[:, 1]), np.where(c_first, edge[:, 1], edge[:, 0])
        order = np.lexsort((labels[centre], border))  # by border point, then cluster number
        points_of, at = np.unique(border[order], return_index=True)
        labels[points_of] = labels[centre[order[at]]]
    return labels


def dbscan_open3d(points: np.ndarray, eps: float, min_points: int) -> np.ndarray:
    """open3d's DBSCAN labels [M] (-1 = noise) of points [M, 3] (m): the reference of :func:`dbscan`."""
    import open3d as o3d

    if len(points) == 0:
        return np.zeros(0, dtype=int)
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points.astype(np.float64)))
    return np.asarray(pcd.cluster_dbscan(eps=eps, min_points=min_points, print_progress=False))


def best_cluster(labels: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Indices of the cluster (DBSCAN ``labels`` [M], -1 noise) with the largest summed ``score`` [M]."""
    if len(labels) == 0 or labels.max() < 0:
        return np.zeros(0, dtype=int)
    totals = np.bincount(labels[labels >= 0], weights=score[labels >= 0])
    return np.nonzero(labels == int(np.argmax(totals)))[0]
