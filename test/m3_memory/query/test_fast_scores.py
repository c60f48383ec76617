"""Text scores without the full decode (query_scores, render_scores, gaussian_scores) against the
dense reference (memory_attention, then score_map), and heatmaps that show a found target."""

import numpy as np
import pytest
import torch

from m3_memory.memory.artifact import load_memory
from m3_memory.memory.attention import MemoryBank, bank_spectrum, memory_attention
from m3_memory.query.api import QueryConfig, find_in_memory, query_text, text_model_for
from m3_memory.query.camera import Camera
from m3_memory.query.memo import memo
from m3_memory.query.relevancy import SCORE_TOL, display_heatmap, leading_components, query_scores, score_map
from m3_memory.query import spatial
from m3_memory.query.render import VIEWS_KEPT, render_features, render_queries, render_scores
from m3_memory.query.spatial import gaussian_features, gaussian_scores

ROUNDING = 1e-5  # float32 rounding on top of the stated tolerance


def random_bank(t: int, d: int, query_dim: int = 16, seed: int = 0) -> MemoryBank:
    """An unstructured bank: i.i.d. N(0, 1) rows (flat spectrum, the worst case for the first pass)."""
    g = torch.Generator().manual_seed(seed)
    return MemoryBank.create("clip", torch.randn(t, d, generator=g), query_dim, seed=seed)


def structured_bank(t: int, d: int, query_dim: int = 16, rank: int = 12, seed: int = 0) -> MemoryBank:
    """A bank like real features: a shared mean, a few strong directions and weak noise."""
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(d, generator=g)
    low = (torch.randn(t, rank, generator=g) * torch.logspace(0, -1.5, rank)) @ torch.randn(rank, d, generator=g)  # [t, d]
    return MemoryBank.create("clip", mean + low + 0.01 * torch.randn(t, d, generator=g), query_dim, seed=seed)


def texts(d: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(d, generator=g), torch.randn(4, d, generator=g)


def queries(n: int, query_dim: int = 16, seed: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, query_dim, generator=g) * torch.logspace(-2, 1, n)[:, None]  # small to large queries


@pytest.mark.parametrize("make, t, d", [(random_bank, 300, 64), (random_bank, 40, 96), (structured_bank, 400, 64),
                                        (structured_bank, 60, 128)])
@pytest.mark.parametrize("method", ["relevancy", "cosine"])
@pytest.mark.parametrize("tol", [SCORE_TOL, 1e-4, 0.0])
def test_scores_match_the_dense_decode_within_the_tolerance(make, t, d, method, tol):
    bank = make(t, d)
    text, neg = texts(d)
    q = queries(3000)
    ref = score_map(memory_attention(q, bank), text, neg, method)  # [M], the reference
    fast, _ = query_scores(q, bank, text, neg, method, tol=tol, chunk=256)
    assert (fast - ref).abs().max() <= tol + ROUNDING


def test_the_first_pass_answers_most_queries_of_a_structured_bank():
    """The bound does real work: with a decaying spectrum most queries skip the second pass, and
    a tighter tolerance sends more of them to it (every score stays within its tolerance)."""
    bank = structured_bank(500, 96)
    text, neg = texts(96)
    q = queries(4000)
    ref = score_map(memory_attention(q, bank), text, neg, "relevancy")
    loose, exact_loose = query_scores(q, bank, text, neg, "relevancy", tol=1e-3)
    tight, exact_tight = query_scores(q, bank, text, neg, "relevancy", tol=1e-5)
    assert exact_loose.float().mean() < 0.5 and exact_tight.sum() > exact_loose.sum()
    assert (loose - ref).abs().max() <= 1e-3 + ROUNDING and (tight - ref).abs().max() <= 1e-5 + ROUNDING
    assert (loose - ref).abs().max() > 1e-5  # ... and the first pass is an approximation, not the exact norm


def test_shapes_no_negatives_and_the_spectrum_cache():
    bank = random_bank(50, 24)
    text, _ = texts(24)
    q = queries(60).reshape(3, 20, 16)
    fast, exact = query_scores(q, bank, text, torch.zeros(0, 24), "relevancy")
    assert fast.shape == exact.shape == (3, 20)
    torch.testing.assert_close(fast, score_map(memory_attention(q, bank), text, torch.zeros(0, 24), "relevancy"),
                               atol=SCORE_TOL + ROUNDING, rtol=0)
    spectrum = bank_spectrum(bank)
    assert bank_spectrum(bank) is spectrum  # cached
    torch.testing.assert_close(spectrum.factor @ spectrum.factor.T, bank.psc @ bank.psc.T, atol=1e-3, rtol=1e-4)
    bank.psc.mul_(2)  # edited in place: recomputed
    assert bank_spectrum(bank) is not spectrum
    torch.testing.assert_close(query_scores(q, bank, text, torch.zeros(0, 24), "cosine")[0],
                               score_map(memory_attention(q, bank), text, torch.zeros(0, 24), "cosine"),
                               atol=SCORE_TOL + ROUNDING, rtol=0)


@pytest.fixture(scope="module")
def memory(built_memory):
    return load_memory(built_memory[0])


@pytest.mark.parametrize("method", ["relevancy", "cosine"])
def test_rendered_scores_match_the_dense_decode_on_every_pixel(memory, method):
    text_model = text_model_for(memory)
    emb = text_model.encode_text(["yellow bath duck", "wooden table", "grey floor", "sky"])
    for view in memory.cameras[::3]:
        camera = Camera.from_view(view)
        dense = render_features(memory, camera)
        fast = render_scores(memory, camera, emb[0], emb[1:], method)
        assert torch.equal(fast.valid, dense.valid) and torch.equal(fast.depth, dense.depth)
        ref = score_map(dense.features[dense.valid], emb[0], emb[1:], method)
        assert (fast.score[fast.valid] - ref).abs().max() <= SCORE_TOL + ROUNDING
        assert torch.all(fast.score[~fast.valid] == 0)


def test_gaussian_scores_match_the_dense_decode(memory):
    emb = text_model_for(memory).encode_text(["blue mug", "wooden table", "grey floor", "sky"])
    ref = score_map(gaussian_features(memory), emb[0], emb[1:], "relevancy").numpy()  # [N]
    every = gaussian_scores(memory, emb[0], emb[1:], "relevancy")  # keeps every Gaussian's unit feature
    assert np.abs(every - ref).max() <= ROUNDING
    some = np.arange(0, len(ref), 7)
    assert np.abs(gaussian_scores(memory, emb[0], emb[1:], "relevancy", index=some) - ref[some]).max() <= ROUNDING
    cos = score_map(gaussian_features(memory, index=some), emb[0], emb[1:], "cosine").numpy()
    assert np.abs(gaussian_scores(memory, emb[0], emb[1:], "cosine", index=some) - cos).max() <= ROUNDING


def test_gaussian_scores_of_a_memory_too_large_to_keep_its_features(built_memory, monkeypatch):
    """Past the table's size limit: a subset within the tolerance (no norms yet), then exact norms."""
    monkeypatch.setattr(spatial, "FEATURE_CACHE_BYTES", 0)
    memory = load_memory(built_memory[0])  # a fresh memory: nothing derived from it is kept yet
    emb = text_model_for(memory).encode_text(["blue mug", "wooden table", "grey floor", "sky"])
    ref = score_map(gaussian_features(memory), emb[0], emb[1:], "relevancy").numpy()
    some = np.arange(0, len(ref), 7)
    assert np.abs(gaussian_scores(memory, emb[0], emb[1:], "relevancy", index=some) - ref[some]).max() <= SCORE_TOL + ROUNDING
    assert spatial.gaussian_unit_features(memory) is None
    spatial.prepare_gaussians(memory)  # the norms instead of the features
    assert np.abs(gaussian_scores(memory, emb[0], emb[1:], "relevancy") - ref).max() <= ROUNDING
    assert np.abs(gaussian_scores(memory, emb[0], emb[1:], "relevancy", index=some) - ref[some]).max() <= ROUNDING


def test_rendered_views_are_kept_per_camera(built_memory):
    memory = load_memory(built_memory[0])
    cams = [Camera.from_view(v) for v in memory.cameras[:VIEWS_KEPT + 1]]
    first = render_queries(memory, cams[0])
    assert all(a is b for a, b in zip(render_queries(memory, cams[0]), first))  # a second text renders nothing
    for cam in cams[1:]:
        render_queries(memory, cam)
    again = render_queries(memory, cams[0])  # dropped after VIEWS_KEPT other cameras: rendered anew, the same
    assert again[0] is not first[0] and all(torch.equal(a, b) for a, b in zip(again, first))
    memory.gaussians.queries.mul_(2)  # edited in place: not served from the store
    assert torch.allclose(render_queries(memory, cams[0])[0], 2 * first[0], atol=1e-5)


def test_a_flat_bank_keeps_each_views_norms_and_stays_exact(built_memory):
    """An i.i.d. bank needs every component: the exact norms are kept with the view, and a second
    text at the same camera (its scores from the kept norms) still matches the dense decode."""
    memory = load_memory(built_memory[0])
    old = memory.banks["clip"]
    memory.banks["clip"] = bank = random_bank(300, old.feature_dim, old.query_dim)
    assert leading_components(bank) == bank_spectrum(bank).sv.shape[0]
    text, neg = texts(old.feature_dim)
    camera = Camera.from_view(memory.cameras[0])
    dense = render_features(memory, camera)
    for x in (text, neg[0] + text):  # the second reads the norms the first kept
        fast = render_scores(memory, camera, x, neg, "relevancy")
        assert (fast.score[fast.valid] - score_map(dense.features[dense.valid], x, neg, "relevancy")).abs().max() <= ROUNDING
    assert len(memo(memory)["view_norms"]) == 1


def test_display_heatmap_scales_from_the_floor():
    score = np.full((10, 10), 0.05, np.float32)
    score[2:5, 2:5] = 0.15  # relevancies below LERF's 0.5, as the fixture CLIP gives
    valid = np.ones_like(score, bool)
    heat = display_heatmap(score, valid, 0.1)
    assert np.all(heat[2:5, 2:5] == 1) and heat.sum() == 9
    assert not display_heatmap(score, valid, 0.2).any() and not display_heatmap(score, valid, np.inf).any()


def test_a_found_target_is_hot_in_the_heatmap(memory):
    """The target region of a found query is clearly hotter than the rest of the view (the
    heatmap was all zeros when its floor was LERF's 0.5 and the fixture's relevancies are ~0.15)."""
    result = find_in_memory(memory, "yellow bath duck")
    assert result.found
    heat, mask = result.heatmap, result.mask
    assert heat[mask].mean() > 0.3 and heat[mask].min() > 0
    assert heat[mask].mean() > 20 * max(heat[~mask].mean(), 1e-6)
    # not found: only what beats the "found" floor may show heat
    camera = Camera.from_view(memory.cameras[0])
    strict = query_text(memory, "yellow bath duck", camera, config=QueryConfig(min_score=0.99, object_centre=False))
    assert not strict.found and not strict.heatmap.any()
