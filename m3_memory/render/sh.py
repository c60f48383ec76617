"""View-dependent colour from real spherical harmonics (degree 0 to 3), 3DGS's basis order.

``colour = 0.5 + sum_k c_k Y_k(dir)`` clamped at 0, with ``dir`` the unit vector from the
camera centre to the Gaussian in the world frame.
"""

from __future__ import annotations

import torch

C0 = 0.28209479177387814
C1 = 0.4886025119029199
C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154, -0.4570457994644658,
      1.445305721320277, -0.5900435899266435)


def sh_degree_of(num_rest: int) -> int:
    """Degree from the number of non-DC coefficients per channel (0, 3, 8, 15 -> 0..3)."""
    degrees = {0: 0, 3: 1, 8: 2, 15: 3}
    if num_rest not in degrees:
        raise ValueError(f"{num_rest} higher-order SH coefficients per channel is not a degree 0-3 layout")
    return degrees[num_rest]


def sh_basis(dirs: torch.Tensor, degree: int) -> torch.Tensor:
    """Unit directions [N, 3] -> basis values [N, (degree + 1)^2]."""
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, C0)]
    if degree >= 1:
        out += [-C1 * y, C1 * z, -C1 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        out += [C2[0] * x * y, C2[1] * y * z, C2[2] * (2 * zz - xx - yy), C2[3] * x * z, C2[4] * (xx - yy)]
    if degree >= 3:
        out += [C3[0] * y * (3 * xx - yy), C3[1] * x * y * z, C3[2] * y * (4 * zz - xx - yy),
                C3[3] * z * (2 * zz - 3 * xx - 3 * yy), C3[4] * x * (4 * zz - xx - yy), C3[5] * z * (xx - yy),
                C3[6] * x * (xx - 3 * yy)]
    return torch.stack(out, dim=-1)


def sh_to_rgb(sh_dc: torch.Tensor, sh_rest: torch.Tensor, means: torch.Tensor, cam_centre: torch.Tensor,
              degree: int | None = None) -> torch.Tensor:
    """Colours [N, 3] in [0, inf) seen from ``cam_centre`` [3] (world, m).

    sh_dc [N, 3]; sh_rest [N, K, 3] with K in {0, 3, 8, 15}; means [N, 3] world (m).
    degree: use only bands up to this degree (default: all that ``sh_rest`` holds).
    """
    full = sh_degree_of(sh_rest.shape[1])
    degree = full if degree is None else min(degree, full)
    if degree == 0:
        return torch.clamp_min(0.5 + C0 * sh_dc, 0.0)
    dirs = torch.nn.functional.normalize(means - cam_centre, dim=-1)
    basis = sh_basis(dirs, degree)  # [N, B]
    coeffs = torch.cat([sh_dc[:, None, :], sh_rest[:, : basis.shape[1] - 1]], dim=1)  # [N, B, 3]
    return torch.clamp_min(0.5 + (basis[..., None] * coeffs).sum(1), 0.0)
