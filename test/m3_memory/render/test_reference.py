"""The reference rasterizer against a literal per-pixel loop, geometry and gradients."""

import math

import pytest
import torch

from m3_memory.render.reference import ALPHA_MAX, ALPHA_MIN, T_MIN, project, quat_to_rotmat, rasterize_reference

K = torch.tensor([[40.0, 0, 16.0], [0, 40.0, 12.0], [0, 0, 1]], dtype=torch.float64)
W, H = 32, 24


def scene(n=12, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g, dtype=dtype) * torch.tensor([0.3, 0.2, 0.3], dtype=dtype) \
        + torch.tensor([0, 0, 2.0], dtype=dtype)
    quats = torch.randn(n, 4, generator=g, dtype=dtype)
    scales = 0.03 + 0.1 * torch.rand(n, 3, generator=g, dtype=dtype)
    opac = 0.3 + 0.65 * torch.rand(n, generator=g, dtype=dtype)
    colors = torch.rand(n, 5, generator=g, dtype=dtype)
    return means, quats, scales, opac, colors


def literal(means, quats, scales, opac, colors, viewmat, K):
    """gsplat's per-pixel loop written out: sort by depth, composite, stop at T <= 1e-4."""
    m2, con, z, valid = project(means, quats, scales, viewmat, K, W, H)
    idx = [i for i in sorted(range(len(z)), key=lambda i: float(z[i])) if valid[i]]
    out = torch.zeros(H, W, colors.shape[1] + 1, dtype=means.dtype)
    alphas = torch.zeros(H, W, 1, dtype=means.dtype)
    for r in range(H):
        for c in range(W):
            T, acc, dep = 1.0, torch.zeros(colors.shape[1], dtype=means.dtype), 0.0
            for i in idx:
                dx, dy = c + 0.5 - m2[i, 0], r + 0.5 - m2[i, 1]
                sigma = 0.5 * (con[i, 0, 0] * dx * dx + con[i, 1, 1] * dy * dy) + con[i, 0, 1] * dx * dy
                if sigma < 0:
                    continue
                a = min(ALPHA_MAX, float(opac[i] * torch.exp(-sigma)))
                if a < ALPHA_MIN:
                    continue
                if T * (1 - a) <= T_MIN:
                    break
                acc = acc + a * T * colors[i]
                dep += a * T * float(z[i])
                T *= 1 - a
            out[r, c, :-1] = acc
            out[r, c, -1] = dep / max(1 - T, 1e-10)
            alphas[r, c, 0] = 1 - T
    return out, alphas


def test_matches_the_literal_loop():
    means, quats, scales, opac, colors = scene()
    view = torch.eye(4, dtype=torch.float64)
    got_c, got_a = rasterize_reference(means, quats, scales, opac, colors, view, K, W, H, pixel_chunk=100)
    want_c, want_a = literal(means, quats, scales, opac, colors, view, K)
    torch.testing.assert_close(got_a, want_a)
    torch.testing.assert_close(got_c[..., :-1], want_c[..., :-1])
    hit = want_a[..., 0] > 1e-6
    torch.testing.assert_close(got_c[..., -1][hit], want_c[..., -1][hit])


def test_transmittance_floor_ends_the_pixel():
    n = 8  # eight nearly opaque layers on the optical axis: compositing must stop at T <= 1e-4
    means = torch.tensor([[0.0, 0.0, 1.0 + 0.1 * i] for i in range(n)], dtype=torch.float64)
    quats = torch.tensor([[1.0, 0, 0, 0]] * n, dtype=torch.float64)
    scales = torch.full((n, 3), 0.5, dtype=torch.float64)
    colors = torch.eye(n, dtype=torch.float64)
    c, a = rasterize_reference(means, quats, scales, torch.full((n,), 0.99, dtype=torch.float64), colors,
                               torch.eye(4, dtype=torch.float64), K, W, H)
    centre = c[12, 16]
    # layers 0 and 1 composite (T after them: 1e-4 * ~1); layer 2 would drop T below 1e-4
    assert centre[0] == pytest.approx(0.99, abs=1e-3) and centre[1] > 0 and torch.all(centre[3:n] == 0)
    assert a[12, 16, 0] <= 1.0


def test_single_gaussian_lands_where_projected():
    mean = torch.tensor([[0.2, -0.1, 2.0]], dtype=torch.float64)
    c, a = rasterize_reference(mean, torch.tensor([[1.0, 0, 0, 0]], dtype=torch.float64),
                               torch.full((1, 3), 0.05, dtype=torch.float64), torch.tensor([0.9], dtype=torch.float64),
                               torch.ones(1, 1, dtype=torch.float64), torch.eye(4, dtype=torch.float64), K, W, H)
    w = a[..., 0]
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    centroid = torch.stack([(w * (u + 0.5)).sum(), (w * (v + 0.5)).sum()]) / w.sum()
    torch.testing.assert_close(centroid, torch.tensor([40 * 0.1 + 16, 40 * -0.05 + 12], dtype=torch.float64),
                               atol=0.05, rtol=0)
    assert c[a[..., 0] > 0.01][:, -1].sub(2.0).abs().max() < 1e-9  # expected depth = z


def test_culls_behind_the_camera_and_moves_with_the_camera():
    means, quats, scales, opac, colors = scene()
    behind = means * torch.tensor([1, 1, -1], dtype=torch.float64)
    _, a = rasterize_reference(behind, quats, scales, opac, colors, torch.eye(4, dtype=torch.float64), K, W, H)
    assert a.abs().max() == 0
    shift = torch.eye(4, dtype=torch.float64)
    shift[0, 3] = 0.5  # camera at x = -0.5 sees the scene moved by +0.5
    moved = means + torch.tensor([0.5, 0, 0], dtype=torch.float64)
    c1, _ = rasterize_reference(means, quats, scales, opac, colors, shift, K, W, H)
    c2, _ = rasterize_reference(moved, quats, scales, opac, colors, torch.eye(4, dtype=torch.float64), K, W, H)
    torch.testing.assert_close(c1, c2)


def test_rotation_matrix_is_orthonormal():
    R = quat_to_rotmat(torch.randn(10, 4, dtype=torch.float64))
    torch.testing.assert_close(R @ R.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(10, 3, 3))
    assert torch.allclose(torch.det(R), torch.ones(10, dtype=torch.float64))
    q = torch.tensor([[math.cos(math.pi / 4), 0, 0, math.sin(math.pi / 4)]], dtype=torch.float64)  # 90 deg about z
    torch.testing.assert_close(quat_to_rotmat(q)[0] @ torch.tensor([1.0, 0, 0], dtype=torch.float64),
                               torch.tensor([0.0, 1.0, 0], dtype=torch.float64))


def test_gradcheck_float64():
    means, quats, scales, opac, colors = scene(n=3, seed=3)
    means = means * torch.tensor([0.3, 0.3, 1.0], dtype=torch.float64)  # keep all three in view, overlapping
    opac = torch.tensor([0.5, 0.6, 0.4], dtype=torch.float64)  # away from 0.999 and 1/255 at the peak
    small_W, small_H = 8, 6
    small_K = torch.tensor([[10.0, 0, 4.0], [0, 10.0, 3.0], [0, 0, 1]], dtype=torch.float64)

    def f(m, q, s, o, c):
        out, alpha = rasterize_reference(m, q, s, o, c, torch.eye(4, dtype=torch.float64), small_K, small_W, small_H)
        return out, alpha

    inputs = tuple(x.clone().requires_grad_(True) for x in (means, quats, scales * 3, opac, colors))
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)
