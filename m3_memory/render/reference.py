"""Reference 3D Gaussian rasterizer in plain PyTorch (readable, differentiable, CPU or GPU).

It follows gsplat's ``rasterization`` conventions so either can stand in for the other:

- ``viewmats`` are world-to-camera (OpenCV: x right, y down, z forward); ``Ks`` use
  gsplat's pixel convention, where pixel (row i, column j) is sampled at (j + 0.5, i + 0.5).
  m3's frames keep pixel centres at integer coordinates: convert with :func:`gsplat_K`.
- ``quats`` wxyz (normalised here), ``scales`` linear standard deviations in metres,
  ``opacities`` in [0, 1], ``colors`` any channel count (``sh_degree=None``).
- Projection: covariance ``J W Sigma W^T J^T`` with gsplat's clamp of x/z and y/z to 1.3x
  the field of view, plus ``eps2d`` (0.3 px^2) on the diagonal; Gaussians with depth
  outside (near, far) or a singular 2D covariance are culled.
- Compositing front to back by camera depth: ``alpha = min(0.999, o * exp(-d^T S^-1 d / 2))``,
  skipped below 1/255; a Gaussian that would bring transmittance to 1e-4 or below ends the
  pixel (it and all behind it are left out).
- Expected depth ("ED"): accumulated ``w_i z_i`` divided by the accumulated alpha.

Every pixel meets every Gaussian here (memory ``pixels x N``, chunked over pixels); it is
the reference the fast CPU rasterizer and gsplat are tested against, not the fast path.
"""

from __future__ import annotations

import torch

ALPHA_MAX = 0.999
ALPHA_MIN = 1.0 / 255.0
T_MIN = 1e-4


def gsplat_K(K_opencv: torch.Tensor) -> torch.Tensor:
    """m3 intrinsics (pixel centres at integers) -> gsplat's (pixel centres at +0.5)."""
    K = K_opencv.clone()
    K[..., 0, 2] += 0.5
    K[..., 1, 2] += 0.5
    return K


def quat_to_rotmat(quats: torch.Tensor) -> torch.Tensor:
    """wxyz quaternions [N, 4] (any norm) -> rotation matrices [N, 3, 3]."""
    w, x, y, z = torch.nn.functional.normalize(quats, dim=-1).unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1).reshape(-1, 3, 3)


def project(means: torch.Tensor, quats: torch.Tensor, scales: torch.Tensor, viewmat: torch.Tensor, K: torch.Tensor,
            width: int, height: int, near: float = 0.01, far: float = 1e10, eps2d: float = 0.3
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gaussians -> (means2d [N, 2] px, conics [N, 2, 2] (inverse 2D covariances), depths [N] m,
    valid [N] bool) for one camera (``viewmat`` [4, 4] world-to-camera, ``K`` [3, 3])."""
    R, t = viewmat[:3, :3], viewmat[:3, 3]
    p = means @ R.T + t  # [N, 3] camera frame
    x, y, z = p.unbind(-1)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
    lim_x_pos, lim_x_neg = (width - cx) / fx + 0.3 * tan_x, cx / fx + 0.3 * tan_x
    lim_y_pos, lim_y_neg = (height - cy) / fy + 0.3 * tan_y, cy / fy + 0.3 * tan_y
    z_safe = torch.where(z > near, z, torch.ones_like(z))
    tx = z_safe * torch.minimum(lim_x_pos, torch.maximum(-lim_x_neg, x / z_safe))
    ty = z_safe * torch.minimum(lim_y_pos, torch.maximum(-lim_y_neg, y / z_safe))
    zeros = torch.zeros_like(z)
    J = torch.stack([fx / z_safe, zeros, -fx * tx / z_safe**2,
                     zeros, fy / z_safe, -fy * ty / z_safe**2], dim=-1).reshape(-1, 2, 3)
    M = quat_to_rotmat(quats) * scales[:, None, :]  # [N, 3, 3] = R_q S
    cov_cam = R @ (M @ M.transpose(1, 2)) @ R.T  # [N, 3, 3]
    cov2d = J @ cov_cam @ J.transpose(1, 2) + eps2d * torch.eye(2, dtype=means.dtype, device=means.device)
    det = cov2d[:, 0, 0] * cov2d[:, 1, 1] - cov2d[:, 0, 1] * cov2d[:, 1, 0]
    valid = (z > near) & (z < far) & (det > 0)
    det_safe = torch.where(valid, det, torch.ones_like(det))
    conics = torch.stack([cov2d[:, 1, 1], -cov2d[:, 0, 1], -cov2d[:, 1, 0], cov2d[:, 0, 0]], -1).reshape(-1, 2, 2)
    conics = conics / det_safe[:, None, None]
    means2d = torch.stack([fx * x / z_safe + cx, fy * y / z_safe + cy], dim=-1)
    return means2d, conics, z, valid


RADIUS_SIGMAS = 3.33  # gsplat's screen-space radius, per axis, in standard deviations


def gsplat_radii(means2d: torch.Tensor, conics: torch.Tensor, valid: torch.Tensor, width: int, height: int
                 ) -> torch.Tensor:
    """gsplat's ``radii`` [N, 2] int32 (px, x and y): ``ceil(3.33 sqrt(cov2d_xx))`` and
    ``ceil(3.33 sqrt(cov2d_yy))``, 0 for culled Gaussians and those whose box misses the image."""
    with torch.no_grad():
        det = (conics[:, 0, 0] * conics[:, 1, 1] - conics[:, 0, 1] * conics[:, 1, 0]).clamp_min(1e-20)
        cov = torch.stack([conics[:, 1, 1], conics[:, 0, 0]], dim=-1) / det[:, None]  # [N, 2] cov2d diagonal
        radius = torch.ceil(RADIUS_SIGMAS * cov.clamp_min(0).sqrt())
        inside = ((means2d[:, 0] + radius[:, 0] > 0) & (means2d[:, 0] - radius[:, 0] < width)
                  & (means2d[:, 1] + radius[:, 1] > 0) & (means2d[:, 1] - radius[:, 1] < height))
        return torch.where((valid & inside)[:, None], radius, torch.zeros_like(radius)).int()


def record_info(info: dict | None, means2d: torch.Tensor, conics: torch.Tensor, valid: torch.Tensor,
                width: int, height: int) -> torch.Tensor:
    """Fill ``info`` (when given) with what density control needs, gsplat's way, and return the
    projected centres [N, 2] px to composite with.

    ``info["offset"]`` (when there): a zero [N, 2] tensor added to the centres, so that its
    ``.grad`` after backward is the loss gradient w.r.t. the projected centres (3DGS's
    screen-space points). Sets ``radii`` [N, 2] int32 (:func:`gsplat_radii`) and ``visible`` [N]."""
    if info is None:
        return means2d
    if "offset" in info:
        means2d = means2d + info["offset"]
    radii = gsplat_radii(means2d, conics, valid, width, height)
    info["radii"] = radii
    info["visible"] = (radii > 0).all(-1)
    return means2d


def rasterize_reference(means: torch.Tensor, quats: torch.Tensor, scales: torch.Tensor, opacities: torch.Tensor,
                        colors: torch.Tensor, viewmat: torch.Tensor, K: torch.Tensor, width: int, height: int,
                        near: float = 0.01, far: float = 1e10, eps2d: float = 0.3, expected_depth: bool = True,
                        pixel_chunk: int = 4096, info: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Render one camera: (colors [H, W, D (+1 expected depth)], alphas [H, W, 1]).

    means [N, 3] world, quats [N, 4] wxyz, scales [N, 3] m, opacities [N] in [0, 1],
    colors [N, D]; viewmat [4, 4] world-to-camera; K [3, 3] in gsplat's pixel convention.
    ``info``: see :func:`record_info`.
    """
    means2d, conics, depths, valid = project(means, quats, scales, viewmat, K, width, height, near, far, eps2d)
    means2d = record_info(info, means2d, conics, valid, width, height)
    order = torch.argsort(torch.where(valid, depths, torch.full_like(depths, float("inf"))))
    order = order[valid[order]]  # front to back, culled ones dropped
    m2, con, dep, op = means2d[order], conics[order], depths[order], opacities[order]
    feats = colors[order]
    if expected_depth:
        feats = torch.cat([feats, dep[:, None]], dim=1)  # [n, D + 1]
    v, u = torch.meshgrid(torch.arange(height, dtype=means.dtype, device=means.device),
                          torch.arange(width, dtype=means.dtype, device=means.device), indexing="ij")
    pix = torch.stack([u.reshape(-1) + 0.5, v.reshape(-1) + 0.5], dim=-1)  # [P, 2] pixel centres
    out_c, out_a = [], []
    for start in range(0, pix.shape[0], pixel_chunk):
        d = pix[start:start + pixel_chunk, None, :] - m2[None]  # [p, n, 2]
        sigma = 0.5 * (con[None, :, 0, 0] * d[..., 0] ** 2 + con[None, :, 1, 1] * d[..., 1] ** 2) \
            + con[None, :, 0, 1] * d[..., 0] * d[..., 1]  # [p, n]
        alpha = torch.clamp(op[None] * torch.exp(-sigma), max=ALPHA_MAX)
        alpha = torch.where((alpha >= ALPHA_MIN) & (sigma >= 0), alpha, torch.zeros_like(alpha))
        after = torch.cumprod(1 - alpha, dim=1)  # [p, n] transmittance after each Gaussian
        before = torch.cat([torch.ones_like(after[:, :1]), after[:, :-1]], dim=1)
        kept = after > T_MIN  # non-increasing: the first False ends the pixel
        w = torch.where(kept, alpha * before, torch.zeros_like(alpha))  # [p, n]
        acc = w.sum(dim=1, keepdim=True)  # [p, 1] = 1 - final transmittance
        c = w @ feats  # [p, D (+1)]
        if expected_depth:
            c = torch.cat([c[:, :-1], c[:, -1:] / acc.clamp_min(1e-10)], dim=1)
        out_c.append(c)
        out_a.append(acc)
    colors_out = torch.cat(out_c).reshape(height, width, -1)
    return colors_out, torch.cat(out_a).reshape(height, width, 1)
