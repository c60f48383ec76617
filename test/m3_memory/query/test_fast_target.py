"""The fast paths of a text query's weights and object centre against their references: the
compiled attention weights vs torch's exp, the sketched Gaussian decisions vs every Gaussian's
exact score, the grid's "closer than eps" vs a k-d tree, and the object (hence the 3D target)
vs the same step computed the reference way."""

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from m3_memory.memory.artifact import Gaussians, Memory, ModelEntry
from m3_memory.memory.attention import MemoryBank, attention_chunks, memory_attention
from m3_memory.query import api, relevancy, spatial
from m3_memory.query.relevancy import attention_weights, query_scores, score_map
from m3_memory.query.spatial import (
    MIN_OPACITY,
    centre_means,
    cluster_library,
    dbscan,
    dbscan_members,
    feature_sketch,
    gaussian_features,
    gaussian_scores,
    gaussians_above,
    gaussians_in_aabb,
    near_any,
    near_any_tree,
    neighbour_graph,
)
from m3_memory.render.cpu import compiler

L = 16


def decaying_memory(n: int = 6000, t: int = 400, d: int = 96, noise: float = 0.01, seed: int = 0
                    ) -> tuple[Memory, torch.Tensor]:
    """Gaussians over a 0.4 m square whose queries hold 6 smooth 4 cm blobs ("objects"), and a bank
    with a decaying spectrum (a mean, 12 directions, ``noise``). Returns the memory and the blobs'
    query directions [6, l]."""
    g = torch.Generator().manual_seed(seed)
    means = torch.rand(n, 3, generator=g) * torch.tensor([0.4, 0.4, 0.02]) - torch.tensor([0.2, 0.2, 0.0])
    centres, directions = torch.rand(6, 2, generator=g) * 0.3 - 0.15, torch.randn(6, L, generator=g)
    blobs = torch.exp(-torch.cdist(means[:, :2], centres).square() / (2 * 0.04**2))  # [N, 6]
    queries = torch.randn(n, L, generator=g) + 3 * blobs @ directions
    gaussians = Gaussians(means, torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1),
                          torch.full((n, 3), float(np.log(0.004))), torch.randn(n, generator=g) + 1.0,
                          torch.rand(n, 3, generator=g), torch.zeros(n, 0, 3), queries)
    low = (torch.randn(t, 12, generator=g) * torch.logspace(0, -1.5, 12)) @ torch.randn(12, d, generator=g)
    bank = MemoryBank.create("clip", torch.randn(d, generator=g) + low + noise * torch.randn(t, d, generator=g), L)
    memory = Memory(gaussians, {"clip": bank}, [ModelEntry("clip", d, (0, L), 0.8, bank.temperature, False, "random")])
    return memory, directions


def embeddings(memory: Memory, directions: torch.Tensor, i: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A text naming blob ``i`` (the feature its direction decodes to) and four random negatives."""
    g = torch.Generator().manual_seed(100 + i)
    q = torch.cat([directions[i:i + 1], torch.randn(4, L, generator=g)])
    with torch.no_grad():
        emb = memory_attention(q, memory.banks["clip"])
    return emb[0], emb[1:]


@pytest.mark.parametrize("temperature", [0.05, 0.2])
def test_compiled_weights_are_torchs_exp(temperature):
    g = torch.Generator().manual_seed(0)
    bank = MemoryBank("clip", torch.randn(700, 48, generator=g), torch.randn(L, 48, generator=g), temperature)
    q = torch.randn(1100, L, generator=g) * torch.logspace(-2, 1, 1100)[:, None]
    ref = [(rows, e.clone()) for rows, e in attention_chunks(q, bank, chunk=300)]
    fast = [(rows, e.clone(), e2.clone()) for rows, e, e2 in attention_weights(q, bank, chunk=300)]
    assert [r for r, _ in ref] == [r for r, _, _ in fast]
    for (_, e), (_, f, f2) in zip(ref, fast):
        assert torch.all((f - e).abs() <= 4e-7 * e)  # within 2 ulp of float32 (both are float32 exps)
        assert torch.allclose(f2, e.double().square().sum(-1).float(), rtol=1e-5, atol=0)
    assert relevancy.scores_library() is not None or compiler() is None


def test_scores_without_the_compiled_weights_are_the_same(monkeypatch):
    """The fallback (no compiler, a GPU, a temperature below 2/87) is torch's exp: same scores."""
    memory, _ = decaying_memory(n=10)
    bank = memory.banks["clip"]
    g = torch.Generator().manual_seed(3)
    q, text, neg = torch.randn(2000, L, generator=g), torch.randn(96, generator=g), torch.randn(4, 96, generator=g)
    fast = query_scores(q, bank, text, neg, "relevancy")[0]
    monkeypatch.setattr(relevancy, "scores_library", lambda: None)
    slow = query_scores(q, bank, text, neg, "relevancy")[0]
    ref = score_map(memory_attention(q, bank), text, neg, "relevancy")
    assert (fast - slow).abs().max() <= 1e-5 and (fast - ref).abs().max() <= relevancy.SCORE_TOL + 1e-5


@pytest.mark.parametrize("seed", [0, 1])
def test_near_any_is_the_k_d_trees(seed):
    rng = np.random.default_rng(seed)
    a, b = rng.uniform(-0.3, 0.3, (4000, 3)), rng.uniform(-0.1, 0.1, (900, 3))
    for eps in (0.005, 0.02, 0.07):
        fast = near_any(a, b, eps)
        assert 0 < fast.sum() < len(a) and np.array_equal(fast, near_any_tree(a, b, eps))
    assert near_any(a, b[:0], 0.02).shape == (4000,) and not near_any(a, b[:0], 0.02).any()
    assert near_any(a[:0], b, 0.02).shape == (0,)
    assert cluster_library() is not None or compiler() is None


@pytest.mark.parametrize("noise", [0.01, 0.3])
@pytest.mark.parametrize("method", ["relevancy", "cosine"])
def test_sketched_decisions_are_the_exact_scores(noise, method, monkeypatch):
    """Every Gaussian on the same side of the bound as its exact score (but for scores within float32
    rounding of the bound), at bounds where the sketch leaves some to the exact pass, subsets and all."""
    memory, directions = decaying_memory(noise=noise)
    api.prepare(memory)
    sketch = feature_sketch(memory)
    assert sketch is not None and sketch.coords.shape[1] < 96
    checked = []
    exact_pass = spatial.gaussian_scores

    def counted(*args, **kwargs):
        out = exact_pass(*args, **kwargs)
        checked.append(len(out))
        return out

    some = np.arange(3, len(memory.gaussians), 5)
    for i in range(3):
        text, neg = embeddings(memory, directions, i)
        exact = gaussian_scores(memory, text, neg, method)
        ref = score_map(gaussian_features(memory), text, neg, method).numpy()
        assert np.abs(exact - ref).max() <= 1e-5
        monkeypatch.setattr(spatial, "gaussian_scores", counted)
        for bound in np.quantile(exact, [0.1, 0.5, 0.9]):
            tie = np.abs(exact - bound) <= 1e-6  # the exact pass's own rounding decides these
            fast = gaussians_above(memory, text, neg, method, bound)
            assert np.all((fast == (exact > bound)) | tie)
            fast = gaussians_above(memory, text, neg, method, bound, index=some)
            assert np.all((fast == (exact[some] > bound)) | tie[some])
        monkeypatch.setattr(spatial, "gaussian_scores", exact_pass)
        assert gaussians_above(memory, text, neg, method, 0.5, index=some[:0]).shape == (0,)
    assert 0 < sum(checked) < 6 * len(memory.gaussians)  # the exact pass ran, on a part


def test_a_flat_bank_has_no_sketch_and_decides_exactly():
    g = torch.Generator().manual_seed(5)
    memory, directions = decaying_memory(n=2000)
    memory.banks["clip"] = MemoryBank.create("clip", torch.randn(60, 96, generator=g), L)
    api.prepare(memory)
    assert feature_sketch(memory) is None
    text, neg = embeddings(memory, directions, 0)
    exact = gaussian_scores(memory, text, neg, "relevancy")
    bound = float(np.median(exact))
    assert np.array_equal(gaussians_above(memory, text, neg, "relevancy", bound), exact > bound)


@pytest.mark.parametrize("eps, min_points", [(0.01, 5), (0.02, 5), (0.02, 12)])
def test_clusters_from_the_neighbour_graph_are_dbscans(eps, min_points):
    """The graph's labels equal the coordinates' (open3d's, tested in test_spatial.py) on subsets of
    the memory: numbering, noise and border points included."""
    memory, _ = decaying_memory(n=8000)
    means = centre_means(memory)
    assert neighbour_graph(memory, eps) is not None
    rng = np.random.default_rng(0)
    several = 0
    for fraction in (1.0, 0.5, 0.2, 0.1):
        members = np.sort(rng.choice(len(means), int(fraction * len(means)), replace=False))
        ref = dbscan(means[members], eps, min_points)
        several += ref.max() >= 1 and (ref == -1).any()
        np.testing.assert_array_equal(dbscan_members(memory, members, eps, min_points), ref)
    assert several  # several clusters and noise in at least one subset: the cases are exercised
    assert dbscan_members(memory, members[:0], eps, min_points).shape == (0,)
    np.testing.assert_array_equal(dbscan_members(memory, members[::-1], eps, min_points),  # unsorted: coordinates
                                  dbscan(means[members[::-1]], eps, min_points))


def test_past_the_graph_limit_clusters_come_from_the_coordinates(monkeypatch):
    monkeypatch.setattr(spatial, "GRAPH_EDGES", 10)
    memory, _ = decaying_memory(n=3000)
    members = np.arange(0, 3000, 2)
    assert neighbour_graph(memory, 0.02) is None
    np.testing.assert_array_equal(dbscan_members(memory, members, 0.02, 5), dbscan(centre_means(memory)[members], 0.02, 5))


def test_the_compiled_projection_renders_as_the_torch_path(monkeypatch):
    """render_queries through the compiled projection vs through in_view + rasterize_static: cameras
    looking down, oblique (Gaussians behind it and off the image) and rotated about the axis."""
    from m3_memory.conventions import make_T
    from m3_memory.query import render
    from m3_memory.query.camera import Camera
    from m3_memory.query.memo import memo

    memory, _ = decaying_memory()
    assert render.project_library() is not None or compiler() is None
    K = np.array([[70.0, 0, 39.5], [0, 70.0, 29.5], [0, 0, 1]])
    c, s = np.cos(0.7), np.sin(0.7)
    poses = [make_T(np.diag([1.0, -1.0, -1.0]), np.array([0.0, 0.0, 0.4])),
             make_T(np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]]) @ np.diag([1.0, -1.0, -1.0]), np.array([0.05, 0, 0.3])),
             make_T(np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]]) @ np.diag([1.0, 1.0, 1.0]), np.array([0, -0.25, 0.05]))]
    real = render.project_library
    for T in poses:
        camera = Camera(K, 80, 60, T)
        memo(memory).pop("views", None)
        fast = render.render_queries(memory, camera)
        monkeypatch.setattr(render, "project_library", lambda: None)
        memo(memory).pop("views", None)
        ref = render.render_queries(memory, camera)
        monkeypatch.setattr(render, "project_library", real)
        assert float(ref[2].max()) > 0.5  # the camera sees the memory
        for a, b in zip(fast, ref):
            assert a.shape == b.shape and float((a - b).abs().max()) <= 1e-5


def test_gaussians_in_a_box():
    memory, _ = decaying_memory(n=3000)
    means = centre_means(memory)
    lo, hi = np.array([-0.05, -0.1, 0.0]), np.array([0.1, 0.02, 0.01])
    ref = np.nonzero(np.all((means >= lo) & (means <= hi), axis=1))[0]
    assert 0 < len(ref) < len(means) and np.array_equal(gaussians_in_aabb(memory, lo, hi), ref)
    assert np.array_equal(gaussians_in_aabb(memory, means[7], means[7]), [7])  # bounds included


def reference_object(memory, points, t, neg, bound, config, margin=0.1):
    """The object-centre step computed the reference way: every nearby Gaussian's exact score, a k-d tree."""
    means = centre_means(memory)
    lo, hi = points.min(0) - margin, points.max(0) + margin
    near = np.nonzero(np.all((means >= lo) & (means <= hi), axis=1))[0]
    score = gaussian_scores(memory, t, neg, config.method, config.model, config.neighbours, near)
    bright = torch.sigmoid(memory.gaussians.opacity_logits[near]).numpy() >= MIN_OPACITY
    cand = near[bright & (score > bound)]
    labels = dbscan(means[cand], config.cluster_eps, config.cluster_min_points)
    if len(labels) == 0 or labels.max() < 0:
        return np.zeros(0, dtype=int)
    touching = cKDTree(points).query(means[cand], distance_upper_bound=config.cluster_eps)[0] < np.inf
    votes = np.bincount(labels[(labels >= 0) & touching], minlength=labels.max() + 1)
    return np.zeros(0, dtype=int) if votes.max() == 0 else cand[labels == int(np.argmax(votes))]


def test_the_object_and_its_target_are_the_reference_ones(monkeypatch):
    """query_text's object (its Gaussians, hence the target point and box) equals the reference
    step's for every blob, from a camera above the square."""
    from m3_memory.conventions import make_T
    from m3_memory.query.camera import Camera

    memory, directions = decaying_memory()
    api.prepare(memory)
    K = np.array([[110.0, 0, 59.5], [0, 110.0, 44.5], [0, 0, 1]])
    camera = Camera(K, 120, 90, make_T(np.diag([1.0, -1.0, -1.0]), np.array([0.0, 0.0, 0.45])))
    seen = []
    real = api.object_gaussians

    def both(memory, points, t, neg, bound, config, margin=0.1):
        fast = real(memory, points, t, neg, bound, config, margin)
        seen.append((fast, reference_object(memory, points, t, neg, bound, config, margin)))
        return fast

    monkeypatch.setattr(api, "object_gaussians", both)
    found = 0
    for i in range(len(directions)):
        text, neg = embeddings(memory, directions, i)

        class Texts:  # the stand-in text model: the blob's feature and the negatives
            has_text, canonical_negatives, checkpoint, feature_dim = True, ("a", "b", "c", "d"), "random", 96

            def encode_text(self, strings):
                return torch.cat([text[None], neg])

        result = api.query_text(memory, f"blob {i}", camera, text_model=Texts())
        found += result.found and len(result.gaussians) > 0
    assert found >= 4 and len(seen) >= 4
    for fast, ref in seen:
        assert np.array_equal(fast, ref)
