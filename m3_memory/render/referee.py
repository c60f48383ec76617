"""gsplat's own PyTorch code as the referee of the CPU rasterizers (tests and bench/gsplat_parity.py).

Projection, screen-space radii, tile lists and spherical harmonics come straight from
``gsplat.cuda._torch_impl`` (``_quat_scale_to_covar_preci``, ``_fully_fused_projection``,
``_isect_tiles``, ``_isect_offset_encode``, ``_spherical_harmonics``), which run on the CPU.
gsplat's compositing reference ``_rasterize_to_pixels`` cannot: it calls the CUDA kernel
``rasterize_to_indices_in_range`` (and nerfacc). So :func:`gsplat_render` composites gsplat's
projected Gaussians over gsplat's depth-sorted tile lists with that kernel's rules: ``alpha =
min(0.999, o exp(-sigma))``, skipped when ``sigma < 0`` or ``alpha < 1/255``, the pixel ends at the
Gaussian that would bring its transmittance to 1e-4 or below (excluded); "ED" is accumulated
depth over accumulated alpha. Everything is differentiable (autograd), in any float dtype.
"""

from __future__ import annotations

import math

import torch

TILE = 16


def gsplat_project(means: torch.Tensor, quats: torch.Tensor, scales: torch.Tensor, viewmat: torch.Tensor,
                   K: torch.Tensor, width: int, height: int, near: float = 0.01, far: float = 1e10, eps2d: float = 0.3
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """gsplat's projection of one camera: (radii [N, 2] int32, means2d [N, 2] px, depths [N] m,
    conics [N, 3] upper triangle of the inverse 2D covariance)."""
    from gsplat.cuda._torch_impl import _fully_fused_projection, _quat_scale_to_covar_preci

    covars, _ = _quat_scale_to_covar_preci(quats, scales, compute_covar=True, compute_preci=False)
    radii, means2d, depths, conics, _ = _fully_fused_projection(means, covars, viewmat[None], K[None], width, height,
                                                                eps2d=eps2d, near_plane=near, far_plane=far)
    return radii[0], means2d[0], depths[0], conics[0]


def projection_pair(viewmat: torch.Tensor, K: torch.Tensor, width: int, height: int):
    """Our projection (render/reference.py) and gsplat's as two functions of (means [N, 3], quats
    [N, 4], scales [N, 3]) with the same outputs, for :func:`values_and_grads`: means2d [N, 2] px,
    conics [N, 3] (upper triangle of the inverse 2D covariance), depths [N] m."""
    from m3_memory.render.reference import project

    def ours(means, quats, scales):
        means2d, conics, depths, _ = project(means, quats, scales, viewmat, K, width, height)
        return means2d, torch.stack([conics[:, 0, 0], conics[:, 0, 1], conics[:, 1, 1]], -1), depths

    def theirs(means, quats, scales):
        _, means2d, depths, conics = gsplat_project(means, quats, scales, viewmat, K, width, height)
        return means2d, conics, depths

    return ours, theirs


def gsplat_render(means: torch.Tensor, quats: torch.Tensor, scales: torch.Tensor, opacities: torch.Tensor,
                  colors: torch.Tensor, viewmat: torch.Tensor, K: torch.Tensor, width: int, height: int,
                  expected_depth: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """One camera as gsplat renders it (see the module): (colors [H, W, D (+1)], alphas [H, W, 1]).
    Arguments as :func:`m3_memory.render.reference.rasterize_reference`'s."""
    from gsplat.cuda._torch_impl import _isect_offset_encode, _isect_tiles

    radii, means2d, depths, conics = gsplat_project(means, quats, scales, viewmat, K, width, height)
    feats = torch.cat([colors, depths[:, None]], dim=1) if expected_depth else colors  # [N, D (+1)]
    tiles_x, tiles_y = math.ceil(width / TILE), math.ceil(height / TILE)
    with torch.no_grad():
        _, isect_ids, flatten_ids = _isect_tiles(means2d[None].float(), radii[None], depths[None].float(), TILE,
                                                 tiles_x, tiles_y)
        offsets = _isect_offset_encode(isect_ids, 1, tiles_x, tiles_y).flatten().tolist() + [len(flatten_ids)]
    out = torch.zeros(height, width, feats.shape[1], dtype=means.dtype)
    acc = torch.zeros(height, width, 1, dtype=means.dtype)
    for tile in range(tiles_x * tiles_y):
        ids = flatten_ids[offsets[tile]:offsets[tile + 1]].long()  # front to back
        if len(ids) == 0:
            continue
        ty, tx = divmod(tile, tiles_x)
        v, u = torch.meshgrid(torch.arange(ty * TILE, min(height, ty * TILE + TILE)),
                              torch.arange(tx * TILE, min(width, tx * TILE + TILE)), indexing="ij")
        pix = torch.stack([u.reshape(-1), v.reshape(-1)], -1).to(means.dtype) + 0.5  # [P, 2] pixel centres
        d = pix[:, None] - means2d[ids][None]  # [P, n, 2]
        c = conics[ids]
        sigma = 0.5 * (c[:, 0] * d[..., 0] ** 2 + c[:, 2] * d[..., 1] ** 2) + c[:, 1] * d[..., 0] * d[..., 1]
        alpha = torch.clamp_max(opacities[ids] * torch.exp(-sigma), 0.999)
        alpha = torch.where((sigma >= 0) & (alpha >= 1 / 255), alpha, torch.zeros_like(alpha))
        after = torch.cumprod(1 - alpha, dim=1)
        before = torch.cat([torch.ones_like(after[:, :1]), after[:, :-1]], dim=1)
        w = torch.where(after > 1e-4, alpha * before, torch.zeros_like(alpha))  # [P, n]
        out[v.reshape(-1), u.reshape(-1)] = w @ feats[ids]
        acc[v.reshape(-1), u.reshape(-1)] = w.sum(1, keepdim=True)
    if expected_depth:
        out = torch.cat([out[..., :-1], out[..., -1:] / acc.clamp_min(1e-10)], dim=-1)
    return out, acc


def gsplat_sh_colors(sh_dc: torch.Tensor, sh_rest: torch.Tensor, means: torch.Tensor, cam_centre: torch.Tensor,
                     degree: int) -> torch.Tensor:
    """Colours [N, 3] as gsplat's ``rasterization(sh_degree=degree)`` makes them: ``max(0, 0.5 +
    SH(dir))`` with gsplat's ``_spherical_harmonics``; sh_dc [N, 3], sh_rest [N, K, 3]."""
    from gsplat.cuda._torch_impl import _spherical_harmonics

    coeffs = torch.cat([sh_dc[:, None], sh_rest], dim=1)  # [N, 1 + K, 3]
    return torch.clamp_min(_spherical_harmonics(degree, means - cam_centre, coeffs) + 0.5, 0.0)


def random_scene(seed: int, n: int = 120, dtype: torch.dtype = torch.float64
                 ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """A random test scene: ([means, quats, scales, opacities, colors [N, 4]], viewmat [4, 4], K
    [3, 3] in gsplat's pixel convention) for a 40x30 camera, slightly rotated and moved; most
    Gaussians in view, some off screen, four behind the camera."""
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g) - 0.5) * torch.tensor([2.8, 2.0, 1.0]) + torch.tensor([0, 0, 2.0])
    means[:4, 2] = -0.5
    args = [means, torch.randn(n, 4, generator=g), 0.01 + 0.06 * torch.rand(n, 3, generator=g),
            0.1 + 0.85 * torch.rand(n, generator=g), torch.rand(n, 4, generator=g)]
    a, b = (torch.randn(2, generator=g, dtype=torch.float64) * 0.1).unbind()
    rx = torch.tensor([[1.0, 0, 0], [0, a.cos(), -a.sin()], [0, a.sin(), a.cos()]], dtype=torch.float64)
    ry = torch.tensor([[b.cos(), 0, b.sin()], [0, 1.0, 0], [-b.sin(), 0, b.cos()]], dtype=torch.float64)
    view = torch.eye(4, dtype=torch.float64)
    view[:3, :3] = rx @ ry
    view[:3, 3] = torch.randn(3, generator=g, dtype=torch.float64) * 0.05
    K = torch.tensor([[40.0, 0, 20.5], [0, 42.0, 15.5], [0, 0, 1]])
    return [t.to(dtype) for t in args], view.to(dtype), K.to(dtype)


def values_and_grads(fn, args: list[torch.Tensor], weights: list[torch.Tensor]
                     ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Outputs of ``fn(*args)`` and the gradients of ``sum(weight * output)`` w.r.t. every arg
    (zeros where an output does not depend on it)."""
    leaves = [a.detach().clone().requires_grad_(True) for a in args]
    outs = fn(*leaves)
    sum((w * o).sum() for w, o in zip(weights, outs)).backward()
    return [o.detach() for o in outs], [torch.zeros_like(x) if x.grad is None else x.grad for x in leaves]


def max_difference(ours: list[torch.Tensor], theirs: list[torch.Tensor]) -> float:
    """Largest ``|ours - theirs| / max(1, max |theirs|)`` over matching tensors."""
    return max((a.double() - b.double()).abs().max().item() / max(1.0, b.abs().max().item())
               for a, b in zip(ours, theirs))
