"""gsplat's own PyTorch code (gsplat.cuda._torch_impl, via m3_memory.render.referee) referees our
reference and fast CPU rasterizers on random scenes: projection, radii, compositing, expected
depth and spherical harmonics agree within 1e-4 in values and gradients."""

import pytest
import torch

from m3_memory.render.cpu import library, rasterize_cpu
from m3_memory.render.referee import (
    gsplat_project,
    gsplat_render,
    gsplat_sh_colors,
    max_difference,
    projection_pair,
    random_scene,
    values_and_grads,
)
from m3_memory.render.reference import gsplat_radii, project, rasterize_reference
from m3_memory.render.sh import sh_to_rgb

W, H = 40, 30
TOL = 1e-4


def assert_within(ours, theirs, what):
    err = max_difference(ours, theirs)
    assert err <= TOL, f"{what}: {err:.2e}"


@pytest.mark.parametrize("seed", [0, 1])
def test_projection_and_radii_match_gsplat(seed):
    (means, quats, scales, _, _), view, K = random_scene(seed)
    m2, conics, depths, valid = project(means, quats, scales, view, K, W, H)
    radii, g_m2, g_depths, g_conics = gsplat_project(means, quats, scales, view, K, W, H)
    assert torch.equal(gsplat_radii(m2, conics, valid, W, H), radii) and (radii > 0).any() and (radii == 0).any()
    ours = [m2[valid], torch.stack([conics[:, 0, 0], conics[:, 0, 1], conics[:, 1, 1]], -1)[valid], depths]
    assert_within(ours, [g_m2[valid], g_conics[valid], g_depths], "projection")
    g = torch.Generator().manual_seed(seed + 10)
    weights = [torch.randn(len(means), 2, generator=g, dtype=torch.float64), torch.randn(len(means), 3, generator=g,
               dtype=torch.float64), torch.randn(len(means), generator=g, dtype=torch.float64)]
    weights = [w * valid.reshape(-1, *([1] * (w.ndim - 1))) for w in weights]

    ours_fn, theirs_fn = projection_pair(view, K, W, H)
    _, g_ours = values_and_grads(ours_fn, [means, quats, scales], weights)
    _, g_theirs = values_and_grads(theirs_fn, [means, quats, scales], weights)
    assert_within(g_ours, g_theirs, "projection gradient")


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_compositing_and_expected_depth_match_gsplat(backend):
    if backend == "cpu" and library() is None:
        pytest.skip("no C++ compiler for the fast CPU rasterizer")
    dtype = torch.float64 if backend == "reference" else torch.float32
    args, view, K = random_scene(3, dtype=dtype)
    fn = rasterize_reference if backend == "reference" else rasterize_cpu
    g = torch.Generator().manual_seed(4)
    weights = [torch.randn(H, W, 5, generator=g, dtype=dtype) / (H * W), torch.randn(H, W, 1, generator=g, dtype=dtype)
               / (H * W)]
    ours, g_ours = values_and_grads(lambda *a: fn(*a, view, K, W, H, expected_depth=True), args, weights)
    args64 = [a.double() for a in args]
    theirs, g_theirs = values_and_grads(lambda *a: gsplat_render(*a, view.double(), K.double(), W, H), args64,
                                [w.double() for w in weights])
    assert ours[1].max() > 0.9 and (ours[1] < 0.5).any()  # covered and uncovered pixels both
    assert_within(ours, theirs, f"{backend} image")
    assert_within(g_ours, g_theirs, f"{backend} gradient")


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_spherical_harmonics_match_gsplat(degree):
    g = torch.Generator().manual_seed(degree)
    n = 200
    args = [torch.randn(n, 3, generator=g, dtype=torch.float64) * 3,
            torch.randn(n, 15, 3, generator=g, dtype=torch.float64) * 0.2,
            torch.randn(n, 3, generator=g, dtype=torch.float64)]
    centre = torch.tensor([0.1, -0.2, -1.0], dtype=torch.float64)
    weights = [torch.randn(n, 3, generator=g, dtype=torch.float64)]
    ours, g_ours = values_and_grads(lambda dc, rest, m: (sh_to_rgb(dc, rest, m, centre, degree),), args, weights)
    theirs, g_theirs = values_and_grads(lambda dc, rest, m: (gsplat_sh_colors(dc, rest, m, centre, degree),), args, weights)
    assert (ours[0] == 0).any() and (ours[0] > 0).any()  # the clamp at 0 is exercised
    assert_within(ours, theirs, "colour")
    assert_within(g_ours, g_theirs, "colour gradient")
