"""One rendering function with gsplat's ``rasterization`` signature and backends chosen by device.

- CUDA tensors and gsplat installed (``pip install m3_memory[cuda]``): gsplat.
- CPU: the fast C++ compositor (:mod:`m3_memory.render.cpu`), or the plain-PyTorch reference
  where no C++ compiler exists (:mod:`m3_memory.render.reference`).
"""

from __future__ import annotations

import torch

from m3_memory.errors import InputError
from m3_memory.render.cpu import library, rasterize_cpu
from m3_memory.render.reference import rasterize_reference

MODES = ("RGB", "RGB+ED")
BACKENDS = ("auto", "gsplat", "cpu", "reference")


def choose_backend(device: torch.device) -> str:
    """The backend ``auto`` picks for tensors on ``device``."""
    if device.type == "cuda":
        try:
            import gsplat  # noqa: F401
        except ImportError:
            return "reference"
        return "gsplat"
    return "cpu" if library() is not None else "reference"


def rasterization(means: torch.Tensor, quats: torch.Tensor, scales: torch.Tensor, opacities: torch.Tensor,
                  colors: torch.Tensor, viewmats: torch.Tensor, Ks: torch.Tensor, width: int, height: int,
                  near_plane: float = 0.01, far_plane: float = 1e10, eps2d: float = 0.3, render_mode: str = "RGB",
                  backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Render C cameras: (colors [C, H, W, D (+1 with "RGB+ED")], alphas [C, H, W, 1], meta).

    means [N, 3] world (m), quats [N, 4] wxyz, scales [N, 3] (m), opacities [N] in [0, 1],
    colors [N, D] (any D: gsplat's ``sh_degree=None``); viewmats [C, 4, 4] world-to-camera
    (OpenCV); Ks [C, 3, 3] with gsplat's pixel centres at +0.5 (see ``gsplat_K``).
    render_mode "RGB+ED" appends the expected depth (m). meta["backend"] names what ran.
    """
    if render_mode not in MODES:
        raise InputError(render_mode, f"unknown render mode; use one of {', '.join(MODES)}")
    if backend not in BACKENDS:
        raise InputError(backend, f"unknown rendering backend; use one of {', '.join(BACKENDS)}")
    if viewmats.ndim != 3 or Ks.ndim != 3 or viewmats.shape[0] != Ks.shape[0]:
        raise InputError("cameras", f"viewmats [C, 4, 4] and Ks [C, 3, 3] expected, got {list(viewmats.shape)} "
                         f"and {list(Ks.shape)}")
    name = choose_backend(means.device) if backend == "auto" else backend
    if name == "gsplat":
        from gsplat import rasterization as gsplat_rasterization

        colors_out, alphas, meta = gsplat_rasterization(
            means, quats, scales, opacities, colors, viewmats, Ks, width, height, near_plane=near_plane,
            far_plane=far_plane, eps2d=eps2d, sh_degree=None, render_mode=render_mode)
        return colors_out, alphas, {**meta, "backend": "gsplat"}
    fn = rasterize_cpu if name == "cpu" else rasterize_reference
    outs = [fn(means, quats, scales, opacities, colors, viewmats[c], Ks[c], width, height, near_plane, far_plane,
               eps2d, expected_depth=render_mode == "RGB+ED") for c in range(viewmats.shape[0])]
    return torch.stack([o[0] for o in outs]), torch.stack([o[1] for o in outs]), {"backend": name}
