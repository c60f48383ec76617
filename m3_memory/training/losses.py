"""Training losses: L1 + SSIM on colour, cosine + MSE on memory-attention features, and an
expected-depth loss against the sensor's depth."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Decoder = Callable[[torch.Tensor], torch.Tensor]  # queries [P, l] -> features [P, d]


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """The SSIM window's 1D factor [size] (sums to 1); the 2D window is its outer product."""
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(a: torch.Tensor, b: torch.Tensor, size: int = 11) -> torch.Tensor:
    """Mean structural similarity of two images [H, W, C] in [0, 1] (Gaussian window 11, sigma 1.5,
    zero padding). The window is separable, so its local means are two 1D passes (rows, then
    columns) over the five maps x, y, x^2, y^2, xy at once: 2 x 11 taps per pixel instead of 121,
    the same values to float rounding."""
    c = a.shape[-1]
    x, y = a.permute(2, 0, 1)[None], b.permute(2, 0, 1)[None]  # [1, C, H, W]
    maps = torch.cat([x, y, x * x, y * y, x * y], dim=1)  # [1, 5C, H, W]
    k = maps.shape[1]
    g = _gaussian_window(size).to(a)
    rows = F.conv2d(maps, g.view(1, 1, 1, size).expand(k, 1, 1, size), padding=(0, size // 2), groups=k)
    blurred = F.conv2d(rows, g.view(1, 1, size, 1).expand(k, 1, size, 1), padding=(size // 2, 0), groups=k)
    mx, my, xx, yy, xy = blurred.split(c, dim=1)
    sxx, syy, sxy = xx - mx**2, yy - my**2, xy - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return s.mean()


def rgb_loss(render: torch.Tensor, target: torch.Tensor, ssim_weight: float = 0.2) -> torch.Tensor:
    """``(1 - w) L1 + w (1 - SSIM)`` on [H, W, 3] images in [0, 1]."""
    return (1 - ssim_weight) * (render - target).abs().mean() + ssim_weight * (1 - ssim(render, target))


DEPTH_LOSSES = ("relative", "inverse")


def depth_loss(render: torch.Tensor, target: torch.Tensor, kind: str = "inverse") -> torch.Tensor:
    """Expected-depth loss on the sensor's valid pixels: render [H, W] expected depth (m),
    target [H, W] sensor depth (m, 0 = invalid). Pixels without valid depth, and pixels where
    nothing is rendered (depth 0), take no part (sparse depth is fine); a view without any gives 0.

    ``relative``: L1 weighted by 1 / depth, ``mean(|d - d*| / d*)``; a depth sensor's noise
    grows with depth, so far pixels count less. ``inverse``: L1 on inverse depth scaled by
    the view's median depth, ``median(d*) mean(|1/d - 1/d*|)`` (weight 1 / d^2 in effect).
    Both are unitless and L1, so a few wrong depths pull little.
    """
    valid = (target > 0) & (render > 1e-3)  # nothing rendered there (no Gaussian): no depth to correct
    if not valid.any():
        return render.sum() * 0
    d, t = render[valid], target[valid]
    if kind == "relative":
        return ((d - t).abs() / t).mean()
    if kind == "inverse":
        return t.median() * (1 / d - 1 / t).abs().mean()
    raise ValueError(f"unknown depth loss {kind!r}; use one of {', '.join(DEPTH_LOSSES)}")


def depth_errors(renders: list[torch.Tensor], targets: list[torch.Tensor]) -> dict[str, float]:
    """Held-out depth error over all valid pixels of all views (renders and targets [H, W] m,
    target 0 = invalid): ``depth_median_m`` and ``depth_p90_m`` of ``|d - d*|`` in metres and
    ``depth_valid`` (share of pixels with sensor depth); {} when no view has depth."""
    errors = [(r[t > 0] - t[t > 0]).abs() for r, t in zip(renders, targets)]
    err = torch.cat(errors) if errors else torch.zeros(0)
    if err.numel() == 0:
        return {}
    total = sum(t.numel() for t in targets)
    return {"depth_median_m": float(err.median()), "depth_p90_m": float(torch.quantile(err.float(), 0.9)),
            "depth_valid": err.numel() / total}


def psnr(render: torch.Tensor, target: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB of images in [0, 1]."""
    mse = torch.mean((render.clamp(0, 1) - target) ** 2).item()
    return float("inf") if mse == 0 else -10.0 * torch.log10(torch.tensor(mse)).item()


def sample_pixels(height: int, width: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` pixels [count, 2] (column u, row v; int64) drawn uniformly from the render."""
    u = torch.randint(width, (count,), generator=generator)
    v = torch.randint(height, (count,), generator=generator)
    return torch.stack([u, v], dim=-1)


def map_pixel_centres(h: int, w: int, width: int, height: int) -> torch.Tensor:
    """Centres of an h x w map's pixels [h * w, 2] (row-major) in the coordinates of a
    width x height render of the same image (pixels, centres at +0.5)."""
    v, u = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack([(u.reshape(-1) + 0.5) * width / w, (v.reshape(-1) + 0.5) * height / h], dim=-1)


def lookup(maps: torch.Tensor, uv: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Bilinear values of ``maps`` [h, w, d] (covering the same image as a width x height
    render) at render pixel coordinates ``uv`` [P, 2] -> [P, d]."""
    grid = torch.stack([uv[:, 0] / width * 2 - 1, uv[:, 1] / height * 2 - 1], dim=-1)  # [P, 2] in [-1, 1]
    out = F.grid_sample(maps.permute(2, 0, 1)[None].float(), grid[None, None].to(maps.device), mode="bilinear",
                        padding_mode="border", align_corners=False)  # [1, d, 1, P]
    return out[0, :, 0].T


def labeled_lookup(maps: torch.Tensor, uv: torch.Tensor, width: int, height: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Like :func:`lookup`, but all-zero (unlabeled) map pixels take no part: values are
    interpolated over labeled neighbours only, and points mostly over unlabeled pixels are
    flagged. Returns (values [P, d], labeled [P] bool)."""
    labeled = (maps != 0).any(dim=-1, keepdim=True).float()  # [h, w, 1]
    weight = lookup(labeled, uv, width, height)  # [P, 1]
    values = lookup(maps, uv, width, height) / weight.clamp_min(1e-6)
    return values, weight[:, 0] > 0.5


def feature_loss(query_map: torch.Tensor, target: torch.Tensor, decode: Decoder, uv: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine distance + MSE between the features ``decode`` makes of the rendered queries (M3:
    a :class:`MemoryBank`, memory attention; a distillation baseline: its decoder) and the model's
    own map, at render pixels ``uv`` [P, 2] (from :func:`sample_pixels`).

    query_map [H, W, l]; target [h, w, d] (any resolution, looked up bilinearly at the pixel
    centres); returns (loss, mean cosine). Ground-truth pixels whose feature is all zero
    (unlabeled) are ignored.
    """
    height, width = query_map.shape[:2]
    q = query_map[uv[:, 1], uv[:, 0]]  # [P, l]
    gt, keep = labeled_lookup(target, uv.float() + 0.5, width, height)  # [P, d], [P]
    if not keep.any():
        zero = query_map.sum() * 0
        return zero, zero.detach()
    pred = decode(q[keep])  # [P', d]
    cos = F.cosine_similarity(pred, gt[keep], dim=-1)
    return (1 - cos).mean() + F.mse_loss(pred, gt[keep]), cos.mean().detach()
