"""One rendering function with gsplat's ``rasterization`` signature and backends chosen by device.

- CUDA tensors: gsplat's CUDA kernels (compiled by gsplat on first use).
- CPU: the fast C++ compositor (:mod:`m3_memory.render.cpu`), or the plain-PyTorch reference
  where no C++ compiler exists (:mod:`m3_memory.render.reference`).

Every backend returns gsplat's ``meta``/``info`` for density control (``means2d`` with its
gradient after backward, ``radii``, ``width``, ``height``, ``n_cameras``, ``gaussian_ids``), so
gsplat's strategies (:mod:`m3_memory.training.strategy`) serve every device.
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
        return "gsplat"
    return "cpu" if library() is not None else "reference"


def rasterization(means: torch.Tensor, quats: torch.Tensor, scales: torch.Tensor, opacities: torch.Tensor,
                  colors: torch.Tensor, viewmats: torch.Tensor, Ks: torch.Tensor, width: int, height: int,
                  near_plane: float = 0.01, far_plane: float = 1e10, eps2d: float = 0.3, render_mode: str = "RGB",
                  backend: str = "auto", packed: bool = False) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Render C cameras: (colors [C, H, W, D (+1 with "RGB+ED")], alphas [C, H, W, 1], meta).

    means [N, 3] world (m), quats [N, 4] wxyz, scales [N, 3] (m), opacities [N] in [0, 1],
    colors [N, D] (any D: gsplat's ``sh_degree=None``); viewmats [C, 4, 4] world-to-camera
    (OpenCV); Ks [C, 3, 3] with gsplat's pixel centres at +0.5 (see ``gsplat_K``).
    render_mode "RGB+ED" appends the expected depth (m). packed: gsplat's packed mode (CUDA
    only; less memory when few Gaussians are in view; the CPU backends ignore it).

    meta (gsplat's): "means2d" [C, N, 2] px (packed: [nnz, 2]) whose ``.grad`` holds the loss
    gradient w.r.t. the projected centres after backward; "radii" [C, N, 2] int32 px (0: not
    drawn); "width", "height", "n_cameras", "gaussian_ids" (packed only, else None); plus
    "visible" [C, N] bool and "backend" (what ran).
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
        return _gsplat(means, quats, scales, opacities, colors, viewmats, Ks, width, height, near_plane, far_plane,
                       eps2d, render_mode, packed)
    fn = rasterize_cpu if name == "cpu" else rasterize_reference
    C, N = viewmats.shape[0], means.shape[0]
    track = torch.is_grad_enabled() and any(t.requires_grad for t in (means, quats, scales))
    # 3DGS's screen-space points: zeros added to the projected centres, so their gradient is the centres'
    offset = torch.zeros(C, N, 2, dtype=torch.float32, device=means.device, requires_grad=track)
    infos = [{"offset": offset[c]} for c in range(C)]
    outs = [fn(means, quats, scales, opacities, colors, viewmats[c], Ks[c], width, height, near_plane, far_plane,
               eps2d, expected_depth=render_mode == "RGB+ED", info=infos[c]) for c in range(C)]
    radii = torch.stack([i["radii"] for i in infos])  # [C, N, 2]
    meta = {"backend": name, "means2d": offset, "radii": radii, "visible": (radii > 0).all(-1), "width": width,
            "height": height, "n_cameras": C, "gaussian_ids": None}
    return torch.stack([o[0] for o in outs]), torch.stack([o[1] for o in outs]), meta


def _gsplat(means, quats, scales, opacities, colors, viewmats, Ks, width, height, near_plane, far_plane, eps2d,
            render_mode, packed) -> tuple[torch.Tensor, torch.Tensor, dict]:
    from gsplat import rasterization as gsplat_rasterization

    colors_out, alphas, meta = gsplat_rasterization(
        means, quats, scales, opacities, colors, viewmats, Ks, width, height, near_plane=near_plane,
        far_plane=far_plane, eps2d=eps2d, sh_degree=None, render_mode=render_mode, packed=packed)
    if meta["means2d"].requires_grad:
        meta["means2d"].retain_grad()  # not a leaf: without this density control sees no gradient
    radii = meta["radii"]
    if packed:
        visible = torch.zeros(viewmats.shape[0], means.shape[0], dtype=torch.bool, device=means.device)
        visible[meta["camera_ids"], meta["gaussian_ids"]] = (radii > 0).all(-1)
    else:
        visible = (radii > 0).all(-1)
    return colors_out, alphas, {**meta, "visible": visible, "backend": "gsplat"}


def means2d_grad(meta: dict) -> torch.Tensor | None:
    """Gradient of the loss w.r.t. the projected centres after backward, in normalised device
    units (px scaled by width/2, height/2, as 3DGS thresholds it): [C, N, 2] ([nnz, 2] when
    packed), or None when nothing required gradients."""
    g = meta["means2d"].grad
    if g is None:
        return None
    return g * torch.tensor([meta["width"] / 2, meta["height"] / 2], dtype=g.dtype, device=g.device)
