import pytest
import torch

from m3_memory.errors import InputError
from m3_memory.memory.psc import principal_scene_components, psc_fast, psc_reference


def clustered(n=3000, d=32, clusters=40, noise=0.15, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(clusters, d, generator=g)
    labels = torch.randint(0, clusters, (n,), generator=g)
    c = centres[labels]
    return c + noise * torch.randn(n, d, generator=g) * c.norm(dim=1, keepdim=True) / d ** 0.5


def scene_features(n_frames=3):
    """'Real-like' features: a random conv net over the synthetic scene's views."""
    from m3_memory.synth import SynthConfig, SyntheticScene

    scene = SyntheticScene(SynthConfig(width=64, height=48, n_frames=n_frames))
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(16, 24, 3, padding=1))
    with torch.no_grad():
        imgs = torch.stack([torch.from_numpy(scene.render(i).rgb).permute(2, 0, 1).float() / 255 for i in range(n_frames)])
        return net(imgs).permute(0, 2, 3, 1).reshape(-1, 24)


def cos(R):
    Rn = torch.nn.functional.normalize(R, dim=-1)
    return Rn @ Rn.T


@pytest.mark.parametrize("rule", ["strict", "cover"])
@pytest.mark.parametrize("theta", [0.5, 0.8, 0.95])
def test_fast_equals_reference_on_clustered(rule, theta):
    R = clustered()
    ref = psc_reference(R, theta, rule, chunk=700)
    for chunk, block in ((256, 16), (5000, 64)):
        torch.testing.assert_close(psc_fast(R, theta, rule, chunk=chunk, block=block), ref, rtol=0, atol=0)


@pytest.mark.parametrize("rule", ["strict", "cover"])
def test_fast_equals_reference_on_random_and_scene_features(rule):
    for R, theta in ((torch.randn(1500, 16, generator=torch.Generator().manual_seed(1)), 0.4),
                     (scene_features(), 0.9)):
        ref = psc_reference(R, theta, rule, chunk=1000)
        assert 1 < ref.numel() < R.shape[0]
        torch.testing.assert_close(psc_fast(R, theta, rule, chunk=333), ref, rtol=0, atol=0)


def test_cover_property():
    R, theta = clustered(seed=2), 0.8
    kept = psc_fast(R, theta, "cover")
    S = cos(R)
    assert torch.all(S[:, kept].max(dim=1).values >= theta - 2e-6)  # every row within theta of a kept one
    Sk = S[kept][:, kept] - 2 * torch.eye(kept.numel())
    assert torch.all(Sk < theta)  # kept rows pairwise apart
    assert torch.all(kept[1:] > kept[:-1])


def test_strict_property():
    R, theta = clustered(seed=3), 0.8
    kept = psc_fast(R, theta, "strict")
    J = cos(R)[kept] >= theta  # [t, N]
    J[torch.arange(kept.numel()), kept] = True
    assert torch.all(J.sum(dim=0) <= 1)  # J sets of kept rows are pairwise disjoint
    # strict keeps a subset of what cover would cover: some rows may be covered by no kept row
    assert kept.numel() <= psc_fast(R, theta, "cover").numel()


def test_principal_scene_components_returns_raw_rows_and_skips_zero_rows():
    R = clustered(n=500)
    R[::7] = 0
    psc, kept = principal_scene_components(R, 0.8)
    torch.testing.assert_close(psc, R[kept])
    assert torch.all(R[kept].abs().sum(dim=1) > 0)
    full = torch.arange(R.shape[0])[(R != 0).any(dim=1)]
    torch.testing.assert_close(kept, full[psc_reference(R[full], 0.8)])


def test_threshold_one_keeps_every_distinct_direction():
    R = torch.randn(200, 8, generator=torch.Generator().manual_seed(4))
    R = torch.cat([R, 3 * R[:50]])  # 50 scaled duplicates share a direction with earlier rows
    _, kept = principal_scene_components(R, 1.0, "cover")
    assert kept.numel() == 200


def test_bad_input():
    with pytest.raises(InputError, match="2 of 10 feature vectors contain NaN"):
        R = torch.randn(10, 4)
        R[3, 1] = float("nan")
        R[5, 0] = float("inf")
        principal_scene_components(R, 0.8)
    with pytest.raises(InputError, match=r"\[N, d\]"):
        principal_scene_components(torch.randn(2, 3, 4), 0.8)
    with pytest.raises(InputError, match="threshold"):
        principal_scene_components(torch.randn(5, 4), 1.5)
    with pytest.raises(InputError, match="unknown PSC rule"):
        principal_scene_components(torch.randn(5, 4), 0.5, rule="both")


@pytest.mark.parametrize("rule", ["strict", "cover"])
def test_fast_equals_reference_on_fixture_clip_features(rule):
    """Real foundation-model features: the fixture CLIP's dense maps of the synthetic scan."""
    from m3_memory.foundation import load_model
    from m3_memory.synth import SynthConfig, SyntheticScene

    model = load_model("clip-fixture")
    scene = SyntheticScene(SynthConfig(width=160, height=120, n_frames=6))
    R = torch.cat([model.encode_image(scene.render(i).rgb).reshape(-1, model.feature_dim) for i in range(6)])
    for theta in (0.9, 0.97):
        ref = psc_reference(R, theta, rule, chunk=500)
        assert 1 < ref.numel() < R.shape[0]
        torch.testing.assert_close(psc_fast(R, theta, rule, chunk=256, block=8), ref, rtol=0, atol=0)


def anisotropic(n=4000, d=128, clusters=60, seed=5):
    """Features like real CLIP maps: a strong shared direction, clusters in a few dozen
    directions, and a little isotropic noise."""
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(d, generator=g)
    basis = torch.linalg.qr(torch.randn(d, 24, generator=g))[0]  # [d, 24]
    centres = mean + 2.0 * torch.randn(clusters, 24, generator=g) @ basis.T
    labels = torch.randint(0, clusters, (n,), generator=g)
    return centres[labels] + 0.6 * torch.randn(n, 24, generator=g) @ basis.T + 0.15 * torch.randn(n, d, generator=g)


@pytest.mark.parametrize("theta", [0.8, 0.97])
@pytest.mark.parametrize("d1", [4, 40])
def test_prefilter_keeps_the_reference_set(theta, d1):
    """The projection bound only rules out pairs that cannot reach theta, whatever d1 is: a
    poor projection costs time, never a different kept set."""
    for R in (clustered(n=1500, d=64), anisotropic(n=1500, d=64)):
        ref = psc_reference(R, theta, "strict", chunk=700)
        assert 1 < ref.numel() < R.shape[0]
        torch.testing.assert_close(psc_fast(R, theta, "strict", block=16, prefilter=d1), ref, rtol=0, atol=0)


def test_prefilter_chosen_by_cost_on_real_like_features(monkeypatch):
    from m3_memory.memory import psc
    from m3_memory.memory.psc import _normalised, _projection

    monkeypatch.setattr(psc, "PREFILTER_MIN_ROWS", 4000)  # a small test set stands in for a large one
    R = anisotropic(n=8000, clusters=400)
    basis = _projection(_normalised(R), 0.9)
    assert basis is not None and basis.shape[0] == 128 and basis.shape[1] < 128  # a projection pays off here
    torch.testing.assert_close(basis.T @ basis, torch.eye(basis.shape[1]), atol=1e-5, rtol=0)
    torch.testing.assert_close(psc_fast(R, 0.9, "strict"), psc_reference(R, 0.9, "strict"), rtol=0, atol=0)
    assert _projection(_normalised(clustered(n=5000)), 0.9) is None  # d = 32: dense rows are cheaper
    assert _projection(_normalised(anisotropic(n=3000)), 0.9) is None  # too few rows to pay for a basis


def test_prefilter_size_must_fit():
    with pytest.raises(InputError, match="prefilter"):
        psc_fast(clustered(d=16), 0.8, "strict", prefilter=16)
