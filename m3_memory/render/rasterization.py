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
    render_mode "RGB+ED" appends the expected depth (m). meta["backend"] names what ran;
    meta["means2d"] (projected centres, px; their ``.grad`` is kept after backward) and
    meta["visible"] [C, N] bool feed densification. gsplat gives means2d as one [C, N, 2]
    tensor (call ``retain_grad()`` on it before backward), the CPU backends as a list of C
    [N, 2] tensors whose gradients are already retained: see :func:`means2d_grad`.
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
            far_plane=far_plane, eps2d=eps2d, sh_degree=None, render_mode=render_mode, packed=False)
        radii = meta["radii"]
        visible = (radii > 0).all(-1) if radii.ndim == 3 else radii > 0
        return colors_out, alphas, {**meta, "visible": visible, "backend": "gsplat"}
    fn = rasterize_cpu if name == "cpu" else rasterize_reference
    infos = [{} for _ in range(viewmats.shape[0])]
    outs = [fn(means, quats, scales, opacities, colors, viewmats[c], Ks[c], width, height, near_plane, far_plane,
               eps2d, expected_depth=render_mode == "RGB+ED", info=infos[c]) for c in range(viewmats.shape[0])]
    meta = {"backend": name, "means2d": [i["means2d"] for i in infos],
            "visible": torch.stack([i["visible"] for i in infos])}
    return torch.stack([o[0] for o in outs]), torch.stack([o[1] for o in outs]), meta


def means2d_grad(meta: dict, width: int, height: int) -> torch.Tensor | None:
    """Gradient of the loss w.r.t. the projected centres after backward, in normalised
    device units (px scaled by width/2, height/2, as 3DGS thresholds it): [C, N, 2], or
    None when nothing required gradients."""
    m2 = meta["means2d"]
    grads = [m.grad for m in m2] if isinstance(m2, list) else [m2.grad]
    if any(g is None for g in grads):
        return None
    g = torch.stack(grads) if isinstance(m2, list) else grads[0]
    scale = torch.tensor([width / 2, height / 2], dtype=g.dtype, device=g.device)
    return g * scale
