"""Fast CPU rasterizer vs the reference: values and gradients agree to 1e-3."""

import pytest
import torch

from m3_memory.render.cpu import StaticGaussians, library, rasterize_cpu, rasterize_static
from m3_memory.render.reference import rasterize_reference

pytestmark = pytest.mark.skipif(library() is None, reason="no C++ compiler for the CPU rasterizer")

K = torch.tensor([[60.0, 0, 40.0], [0, 60.0, 30.0], [0, 0, 1]])
W, H = 80, 60  # several 16x16 tiles, partial tiles at the edges


def scene(n, seed, channels=4):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g) * torch.tensor([0.5, 0.4, 0.3]) + torch.tensor([0, 0, 2.0])
    return (means, torch.randn(n, 4, generator=g), 0.01 + 0.06 * torch.rand(n, 3, generator=g),
            torch.rand(n, generator=g), torch.rand(n, channels, generator=g))


def render_and_grads(fn, params, view, weights):
    leaves = [p.clone().requires_grad_(True) for p in params]
    colors, alpha = fn(*leaves, view, K, W, H)
    ((colors * weights[0]).sum() + (alpha * weights[1]).sum()).backward()
    return colors.detach(), alpha.detach(), [p.grad for p in leaves]


@pytest.mark.parametrize("n, seed", [(50, 0), (400, 1), (2000, 2)])
def test_fast_matches_reference(n, seed):
    params = scene(n, seed)
    view = torch.eye(4)
    view[:3, 3] = torch.tensor([0.05, -0.02, 0.1])
    g = torch.Generator().manual_seed(seed + 100)
    weights = (torch.randn(H, W, 5, generator=g), torch.randn(H, W, 1, generator=g))
    c_ref, a_ref, g_ref = render_and_grads(rasterize_reference, params, view, weights)
    c_fast, a_fast, g_fast = render_and_grads(rasterize_cpu, params, view, weights)
    torch.testing.assert_close(a_fast, a_ref, atol=1e-3, rtol=0)
    hit = a_ref[..., 0] > 1e-3  # expected depth is undefined where nothing was hit
    torch.testing.assert_close(c_fast[..., :-1], c_ref[..., :-1], atol=1e-3, rtol=0)
    torch.testing.assert_close(c_fast[..., -1][hit], c_ref[..., -1][hit], atol=1e-3, rtol=1e-4)
    for name, fast, ref in zip(("means", "quats", "scales", "opacities", "colors"), g_fast, g_ref):
        scale = ref.abs().max().clamp_min(1.0)
        assert (fast - ref).abs().max() <= 1e-3 * scale, name


def test_opaque_layers_stop_compositing():
    n = 6
    means = torch.tensor([[0.0, 0.0, 1.0 + 0.1 * i] for i in range(n)])
    args = (means, torch.tensor([[1.0, 0, 0, 0]] * n), torch.full((n, 3), 0.5), torch.full((n,), 0.99), torch.eye(n))
    fast, _ = rasterize_cpu(*args, torch.eye(4), K, W, H)
    ref, _ = rasterize_reference(*args, torch.eye(4), K, W, H)
    torch.testing.assert_close(fast, ref, atol=1e-3, rtol=0)
    assert torch.all(fast[30, 40, 3:n] == 0)


def test_sparse_output_gradients_match_reference():
    """A loss on a few sampled pixels of some channels (the feature loss) leaves the rest of
    those channels without gradient; the compositor then skips them per pixel."""
    params = scene(2000, 3, channels=6)
    view = torch.eye(4)
    g = torch.Generator().manual_seed(7)
    colour = torch.zeros(H, W, 7)
    colour[..., :2] = torch.randn(H, W, 2, generator=g)  # dense channels
    picked = torch.randint(H * W, (40,), generator=g)
    colour.view(-1, 7)[picked, 2:6] = torch.randn(40, 4, generator=g)  # sampled pixels only
    weights = (colour, torch.zeros(H, W, 1))
    weights[1].view(-1)[picked[:10]] = 1.0  # alpha gradient at a few pixels only
    _, _, g_ref = render_and_grads(rasterize_reference, params, view, weights)
    _, _, g_fast = render_and_grads(rasterize_cpu, params, view, weights)
    for name, fast, ref in zip(("means", "quats", "scales", "opacities", "colors"), g_fast, g_ref):
        scale = ref.abs().max().clamp_min(1.0)
        assert (fast - ref).abs().max() <= 1e-3 * scale, name
    assert g_ref[4][:, 2:6].abs().sum() > 0  # the sampled channels do get gradients


@pytest.mark.parametrize("n, seed", [(400, 5), (3000, 6)])
def test_static_gaussians_render_as_the_fast_rasterizer(n, seed):
    """Kept 3D covariances, per-component projection (rasterize_static) vs rasterize_cpu (the
    reference): the same images, including Gaussians behind the camera and off the image edges."""
    means, quats, scales, opacities, colors = scene(n, seed, channels=16)
    means[: n // 10, 2] = -0.5  # behind the camera: culled
    means[n // 10: n // 5, 0] += 3.0  # off the image's right edge: clamped Jacobian
    view = torch.eye(4)
    view[:3, :3] = torch.tensor([[0.96, -0.28, 0.0], [0.28, 0.96, 0.0], [0.0, 0.0, 1.0]]) @ torch.tensor(
        [[1.0, 0.0, 0.0], [0.0, 0.98, -0.2], [0.0, 0.2, 0.98]])  # a rotated camera: every covariance term matters
    view[:3, 3] = torch.tensor([0.05, -0.02, 0.1])
    ref, a_ref = rasterize_cpu(means, quats, scales, opacities, colors, view, K, W, H)
    static = StaticGaussians.of(means, quats, scales, opacities)
    fast, a_fast = rasterize_static(static, colors, view, K, W, H)
    assert a_ref.max() > 0.9 and (a_ref < 0.1).any()  # covered and empty pixels
    torch.testing.assert_close(a_fast, a_ref, atol=1e-5, rtol=0)
    hit = a_ref[..., 0] > 1e-3
    torch.testing.assert_close(fast[..., :-1], ref[..., :-1], atol=1e-5, rtol=0)
    torch.testing.assert_close(fast[..., -1][hit], ref[..., -1][hit], atol=1e-5, rtol=1e-5)
    sub = torch.arange(0, n, 3)
    part, _ = rasterize_static(static.subset(sub), colors[sub], view, K, W, H)
    torch.testing.assert_close(part, rasterize_cpu(means[sub], quats[sub], scales[sub], opacities[sub], colors[sub], view,
                                                   K, W, H)[0], atol=1e-5, rtol=1e-5)


def test_image_sizes_off_the_lane_and_tile_grid_match_reference():
    """Tiles cut by the image's right and bottom edges, and rows whose width is no multiple of the
    compositor's 8-pixel blocks."""
    k = torch.tensor([[50.0, 0, 37.0], [0, 50.0, 22.0], [0, 0, 1]])
    w, h = 75, 45
    params = scene(800, 11)
    view = torch.eye(4)
    g = torch.Generator().manual_seed(12)
    weights = (torch.randn(h, w, 5, generator=g), torch.randn(h, w, 1, generator=g))
    outs = []
    for fn in (rasterize_reference, rasterize_cpu):
        leaves = [p.clone().requires_grad_(True) for p in params]
        colors, alpha = fn(*leaves, view, k, w, h)
        ((colors * weights[0]).sum() + (alpha * weights[1]).sum()).backward()
        outs.append((colors.detach(), alpha.detach(), [p.grad for p in leaves]))
    (c_ref, a_ref, g_ref), (c_fast, a_fast, g_fast) = outs
    assert (a_ref[:, -3:] > 0.1).any() and (a_ref[-3:] > 0.1).any()  # the edges are drawn on
    torch.testing.assert_close(a_fast, a_ref, atol=1e-3, rtol=0)
    torch.testing.assert_close(c_fast[..., :-1], c_ref[..., :-1], atol=1e-3, rtol=0)
    for name, fast, ref in zip(("means", "quats", "scales", "opacities", "colors"), g_fast, g_ref):
        assert (fast - ref).abs().max() <= 1e-3 * ref.abs().max().clamp_min(1.0), name


def test_build_without_simd_flags_renders_the_same(tmp_path, monkeypatch):
    """The compositor compiled without AVX2 (a CPU without it; its vectors then take two SSE
    instructions each) gives the default build's images and gradients."""
    import ctypes

    import m3_memory.render.cpu as cpu

    default = cpu.library()
    monkeypatch.setenv("M3_CACHE", str(tmp_path))
    monkeypatch.setattr(cpu, "flags", lambda source: cpu.FLAGS)
    path, why = cpu.compile_library()
    assert path is not None, why
    plain = ctypes.CDLL(str(path))
    means, quats, scales, opacities, colors = scene(1500, 13)
    view = torch.eye(4)
    captured = []
    forward = cpu._Composite.forward

    def capture(ctx, *args):
        captured.extend(args)
        return forward(ctx, *args)

    monkeypatch.setattr(cpu._Composite, "forward", staticmethod(capture))
    rasterize_cpu(means, quats, scales, opacities, colors, view, K, W, H)
    m2, con, op, feats, extent, width, height = captured
    n, d = feats.shape
    g = torch.Generator().manual_seed(14)
    grad_out, grad_alpha = torch.randn(height, width, d, generator=g), torch.randn(height, width, generator=g)
    p = cpu._ptr
    results = []
    for lib in (default, plain):
        out, alpha = torch.zeros(height, width, d), torch.zeros(height, width)
        last = torch.zeros(height, width, dtype=torch.int32)
        grads = [torch.zeros_like(t) for t in (m2, con, op, feats)]
        lib.m3_composite_forward(n, d, width, height, p(m2), p(con), p(op), p(feats), p(extent), p(out), p(alpha),
                                 p(last))
        lib.m3_composite_backward(n, d, width, height, p(m2), p(con), p(op), p(feats), p(extent), p(alpha), p(last),
                                  p(grad_out), p(grad_alpha), *(p(t) for t in grads))
        results.append((out, alpha, grads))
    (o1, a1, g1), (o2, a2, g2) = results
    assert a1.max() > 0.5
    torch.testing.assert_close(o2, o1, atol=1e-4, rtol=0)
    torch.testing.assert_close(a2, a1, atol=1e-4, rtol=0)
    for x, y in zip(g2, g1):
        assert (x - y).abs().max() <= 1e-3 * y.abs().max().clamp_min(1e-6)
