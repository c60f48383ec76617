import torch

from m3_memory.memory.attention import MemoryBank
from m3_memory.training.losses import depth_errors, depth_loss, feature_loss, lookup, psnr, rgb_loss, sample_pixels, ssim


def test_ssim_and_psnr():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(32, 40, 3, generator=g)
    assert abs(ssim(a, a).item() - 1) < 1e-5 and rgb_loss(a, a).item() < 1e-5
    noise = torch.randn(32, 40, 3, generator=g)
    scores = [ssim(a, (a + s * noise).clamp(0, 1)).item() for s in (0.05, 0.1, 0.3)]
    assert scores[0] > scores[1] > scores[2] and scores[2] < 0.75
    assert abs(psnr(a, (a + 0.1).clamp(max=1)) - 20) < 0.6  # mse ~ 0.01 -> ~20 dB (less where clamped)


def ssim_2d_window(a, b, size=11, sigma=1.5):
    """SSIM with the full 2D Gaussian window, one 121-tap convolution per map: the reference
    (the window is the outer product of the float32 1D window, taken in ``a``'s precision)."""
    c = a.shape[-1]
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    g = g.to(a)
    w = (g[:, None] * g[None, :])[None, None].repeat(c, 1, 1, 1)
    blur = lambda t: torch.nn.functional.conv2d(t, w, padding=size // 2, groups=c)  # noqa: E731
    x, y = a.permute(2, 0, 1)[None], b.permute(2, 0, 1)[None]
    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    return (((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))).mean()


def test_separable_ssim_equals_the_2d_window():
    g = torch.Generator().manual_seed(3)
    a = torch.rand(37, 53, 3, generator=g, dtype=torch.float64)
    b = (a + 0.2 * torch.randn(37, 53, 3, generator=g, dtype=torch.float64)).clamp(0, 1)
    leaves = [a.clone().requires_grad_(True) for _ in range(2)]
    values = [ssim(leaves[0], b), ssim_2d_window(leaves[1], b)]
    for v, leaf in zip(values, leaves):
        v.backward()
    assert abs(values[0].item() - values[1].item()) < 1e-12
    torch.testing.assert_close(leaves[0].grad, leaves[1].grad, atol=1e-12, rtol=1e-9)
    a32, b32 = a.float(), b.float()  # float32, as training runs it: float rounding apart
    assert abs(ssim(a32, b32).item() - ssim_2d_window(a32, b32).item()) < 1e-5


def test_lookup_hits_pixel_centres_and_interpolates():
    m = torch.arange(12.0).reshape(3, 4, 1)  # [h, w, 1]
    # a 8 x 6 render over the same image: render pixel centres map to map coordinates / 2
    uv = torch.tensor([[1.0, 1.0], [3.0, 1.0], [2.0, 1.0]])  # centres of map pixels (0,0), (1,0), between
    out = lookup(m, uv, 8, 6)[:, 0]
    torch.testing.assert_close(out, torch.tensor([0.0, 1.0, 0.5]))


def test_feature_loss_is_zero_for_a_perfect_decoder_and_ignores_unlabeled():
    g = torch.Generator().manual_seed(1)
    psc = torch.linalg.qr(torch.randn(8, 8, generator=g))[0][:4] * 3  # 4 orthogonal rows of norm 3
    bank = MemoryBank("m", psc, torch.eye(8), temperature=1e-3)  # W = I: a query decodes to its nearest row
    labels = torch.randint(4, (6, 5), generator=g)
    queries = psc[labels]  # [6, 5, 8] rendered queries
    target = psc[labels].clone()  # [6, 5, 8] ground truth at the render's own resolution
    target[0] = 0  # unlabeled row
    uv = sample_pixels(6, 5, 200, g)
    loss, cos = feature_loss(queries, target, bank, uv)
    assert loss.item() < 1e-3 and cos.item() > 0.999
    loss_wrong, _ = feature_loss(queries.roll(1, dims=-1), target, bank, uv)
    assert loss_wrong.item() > 0.1


def test_depth_loss_uses_valid_pixels_only_and_weights_by_depth():
    target = torch.tensor([[1.0, 2.0], [0.0, 4.0]])  # one invalid pixel
    render = target.clone()
    render[1, 0] = 99.0  # wrong where the sensor has no depth: ignored
    for kind in ("relative", "inverse"):
        assert depth_loss(render, target, kind).item() == 0
    near, far = target.clone(), target.clone()
    near[0, 0] += 0.1  # 10 cm off at 1 m
    far[1, 1] += 0.1  # 10 cm off at 4 m
    for kind in ("relative", "inverse"):
        assert depth_loss(near, target, kind).item() > 3 * depth_loss(far, target, kind).item() > 0
    assert depth_loss(render, torch.zeros(2, 2)).item() == 0  # a view without depth


def test_depth_errors_pool_valid_pixels_in_metres():
    target = torch.tensor([[1.0, 2.0], [0.0, 4.0]])
    render = target + torch.tensor([[0.01, -0.02], [5.0, 0.03]])
    e = depth_errors([render], [target])
    assert abs(e["depth_median_m"] - 0.02) < 1e-6 and 0.02 < e["depth_p90_m"] <= 0.03 and e["depth_valid"] == 0.75
    assert depth_errors([render], [torch.zeros(2, 2)]) == {}
