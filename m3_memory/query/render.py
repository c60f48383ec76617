"""Read the memory at a camera: render principal queries and expected depth, decode to features.

The Gaussians alpha-composite one model's query slice ``[N, l]`` into a query map ``[H, W, l]``
(plus expected depth), and memory attention turns every covered pixel into a feature in the
foundation model's own space (paper, section 3). Attention normalises ``q W``, so the query's
scale (alpha) does not change the feature; pixels the Gaussians barely cover are flagged
invalid instead.

:func:`render_scores` is what text queries use: the text scores of every covered pixel straight
from the rendered queries (:func:`m3_memory.query.relevancy.query_scores`), never forming the
``[H, W, d]`` feature map that :func:`render_features` (the reference) decodes.
"""

from __future__ import annotations

import ctypes
import logging
from collections import OrderedDict
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import torch

from m3_memory.device import resolve_device
from m3_memory.memory.artifact import Memory
from m3_memory.memory.attention import bank_spectrum, memory_attention
from m3_memory.query.camera import Camera
from m3_memory.query.memo import memo
from m3_memory.query.relevancy import SCORE_TOL, leading_components, query_norms, query_scores
from m3_memory.render.cpu import MAX_EXTENT, StaticGaussians, compile_library, composite_sorted, rasterize_static
from m3_memory.render.rasterization import choose_backend, rasterization
from m3_memory.render.reference import ALPHA_MIN, gsplat_K
from m3_memory.render.sh import sh_to_rgb

MIN_ALPHA = 0.5  # pixels with less accumulated opacity show (mostly) nothing of the memory
IN_VIEW_SIGMAS = 4.0  # in_view's margin, in the largest scale
PROJECT_SOURCE = Path(__file__).resolve().parent / "csrc" / "project.cpp"
log = logging.getLogger("m3")


@dataclass
class RenderedView:
    """What the memory shows at one camera. features [H, W, d] (zeros where invalid);
    depth [H, W] expected depth along the optical axis (m, 0 where invalid); alpha [H, W]
    accumulated opacity; valid [H, W] bool (alpha >= the threshold used)."""

    features: torch.Tensor
    depth: torch.Tensor
    alpha: torch.Tensor
    valid: torch.Tensor


def in_view(memory: Memory, camera: Camera, sigmas: float = IN_VIEW_SIGMAS) -> torch.Tensor:
    """Indices [n] of the Gaussians that can touch ``camera``'s image: in front of it, and with the
    projected centre within ``sigmas`` times the largest scale (in pixels at that depth) of the
    image. The rasterizers cut Gaussians at <= 3.33 sigma, so the others cannot change a pixel;
    dropping them first saves their projection, sorting and binning (most of a tabletop memory's
    floor is out of any one view)."""
    g = memory.gaussians
    T = torch.from_numpy(camera.T_world_cam).inverse().float().to(g.means.device)  # [4, 4] world -> camera
    p = g.means @ T[:3, :3].T + T[:3, 3]  # [N, 3] camera frame
    z = p[:, 2].clamp_min(1e-6)
    K = camera.K
    u, v = K[0, 0] * p[:, 0] / z + K[0, 2], K[1, 1] * p[:, 1] / z + K[1, 2]
    r = sigmas * g.log_scales.amax(dim=1).exp() * max(K[0, 0], K[1, 1]) / z + 1  # [N] px
    ok = (p[:, 2] > 0.01) & (u > -0.5 - r) & (u < camera.width - 0.5 + r) & (v > -0.5 - r) & (v < camera.height - 0.5 + r)
    return ok.nonzero().squeeze(1)


VIEWS_KEPT = 4  # rendered views kept per memory (render_queries): a robot asks several texts at one camera


def render_queries(memory: Memory, camera: Camera, model: str = "clip", backend: str = "auto",
                   device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(queries [H, W, l], expected depth [H, W] in m, alpha [H, W]) of ``model``'s slice at ``camera``,
    rendered on ``device`` (and left there).

    They do not depend on the text: the last :data:`VIEWS_KEPT` cameras' are kept per memory (and
    device), so a second text at the same camera renders nothing. The returned tensors are shared:
    do not edit them in place."""
    memory = memory.on(resolve_device(device))
    g = memory.gaussians
    key = _view_key(memory, camera, model, backend)
    views = memo(memory).setdefault("views", OrderedDict())
    if key in views:
        views.move_to_end(key)
        return views[key]
    viewmat = torch.from_numpy(camera.T_world_cam).inverse().float()[None].to(g.means.device)  # [1, 4, 4] world -> camera
    K = gsplat_K(torch.from_numpy(camera.K).float())[None].to(g.means.device)  # [1, 3, 3]
    cpu = (choose_backend(g.means.device) if backend == "auto" else backend) == "cpu"
    if cpu and project_library() is not None:  # culling, projection and extents in one compiled pass
        return _keep(views, key, render_compiled(static_gaussians(memory), memory.queries_of(model), viewmat[0], K[0],
                                                 camera))
    keep = in_view(memory, camera)  # [n] of N
    queries = memory.queries_of(model)[keep]  # [n, l]
    if cpu:  # only projection and compositing
        out, alpha = rasterize_static(static_gaussians(memory).subset(keep), queries, viewmat[0], K[0], camera.width,
                                      camera.height)
        return _keep(views, key, (out[..., :-1], out[..., -1], alpha[..., 0]))
    with torch.no_grad():
        out, alpha, _ = rasterization(g.means[keep], g.quats[keep], g.log_scales[keep].exp(),
                                      torch.sigmoid(g.opacity_logits[keep]), queries, viewmat, K, camera.width,
                                      camera.height, render_mode="RGB+ED", backend=backend)
    return _keep(views, key, (out[0, ..., :-1], out[0, ..., -1], alpha[0, ..., 0]))


@cache
def project_library() -> ctypes.CDLL | None:
    """The compiled projection of :func:`render_compiled` (``csrc/project.cpp``), built on first use
    into the kernel cache; None where it cannot be built (then torch projects: ``rasterize_static``)."""
    target, why = compile_library(PROJECT_SOURCE)
    if target is None:
        log.info("the compiled query projection could not be built (%s); torch projects", why)
        return None
    lib = ctypes.CDLL(str(target))
    lib.m3_project.argtypes = [ctypes.c_int] + [ctypes.c_void_p] * 7 + [ctypes.c_int] * 2 + [ctypes.c_void_p] * 6
    lib.m3_project.restype = ctypes.c_int
    return lib


def render_compiled(g: StaticGaussians, queries: torch.Tensor, viewmat: torch.Tensor, K: torch.Tensor, camera: Camera,
                    near: float = 0.01, far: float = 1e10, eps2d: float = 0.3
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``render_queries``' CPU render through :func:`project_library`: :func:`in_view`'s culling,
    ``render.cpu.project_static``'s projection and the compositor's extents in one compiled pass
    over the N Gaussians (no per-Gaussian torch operations), then the depth sort and the compositor.
    queries [N, l]; viewmat [4, 4] world-to-camera; K [3, 3] gsplat's -> (queries [H, W, l],
    expected depth [H, W] m, alpha [H, W]); equal to ``rasterize_static`` on :func:`in_view`'s
    Gaussians to float32 rounding (tested)."""
    N = g.means.shape[0]
    view = torch.cat([viewmat[:3, :3].reshape(-1), viewmat[:3, 3]]).float().contiguous()  # [12]
    cam = torch.tensor([K[0, 0], K[1, 1], K[0, 2], K[1, 2], camera.K[0, 0], camera.K[1, 1], camera.K[0, 2],
                        camera.K[1, 2]], dtype=torch.float32)
    lim = torch.tensor([near, far, eps2d, IN_VIEW_SIGMAS, ALPHA_MIN, MAX_EXTENT, 0.0], dtype=torch.float32)
    index = torch.empty(N, dtype=torch.int64)
    means2d, conic, extent = torch.empty(N, 2), torch.empty(N, 3), torch.empty(N, 2)
    depth, opacity = torch.empty(N), torch.empty(N)
    p = (g.means @ viewmat[:3, :3].T + viewmat[:3, 3]).contiguous()  # [N, 3] camera frame, as in_view computes it
    ptr = [ctypes.c_void_p(x.data_ptr()) for x in (p, g.cov, g.opacities, g.max_scale, view, cam, lim)]
    n = project_library().m3_project(N, *ptr, camera.width, camera.height,
                                     *(ctypes.c_void_p(x.data_ptr()) for x in (index, means2d, conic, depth, opacity,
                                                                               extent)))
    order = torch.argsort(depth[:n])  # front to back, as rasterize_static sorts
    feats = torch.cat([queries[index[:n][order]].float(), depth[:n][order, None]], dim=1)  # [n, l + 1]
    out, alpha = composite_sorted(means2d[:n][order].contiguous(), conic[:n][order].contiguous(),
                                  opacity[:n][order].contiguous(), feats.contiguous(), extent[:n][order].contiguous(),
                                  camera.width, camera.height)
    return out[..., :-1], out[..., -1] / alpha.clamp_min(1e-10), alpha


def static_gaussians(memory: Memory) -> StaticGaussians:
    """The memory's camera-independent render quantities (3D covariances, opacities), computed once
    per loaded memory (and device) and kept: a query's render then only projects and composites."""
    g = memory.gaussians
    key = tuple((id(x), x._version) for x in (g.means, g.quats, g.log_scales, g.opacity_logits))
    store = memo(memory)
    if store.get("static", (None,))[0] != key:
        store["static"] = (key, StaticGaussians.of(g.means, g.quats, g.log_scales.exp(), torch.sigmoid(g.opacity_logits)))
    return store["static"][1]


def _view_key(memory: Memory, camera: Camera, model: str, backend: str) -> tuple:
    g = memory.gaussians
    tensors = (g.means, g.quats, g.log_scales, g.opacity_logits, g.queries, memory.banks[model].psc, memory.banks[model].W)
    return (model, backend, camera.width, camera.height, camera.K.tobytes(), camera.T_world_cam.tobytes(),
            *((id(x), x._version) for x in tensors))


def _keep(store: OrderedDict, key: tuple, value):
    """Store ``value`` as the newest of at most :data:`VIEWS_KEPT` entries; returns it."""
    store[key] = value
    while len(store) > VIEWS_KEPT:
        store.popitem(last=False)
    return value


def render_features(memory: Memory, camera: Camera, model: str = "clip", min_alpha: float = MIN_ALPHA,
                    backend: str = "auto", background: bool = False, device: torch.device | str = "cpu") -> RenderedView:
    """Features the memory holds at ``camera`` for ``model`` (see :class:`RenderedView`), rendered
    and decoded on ``device``, returned on the CPU.

    background: composite the build's learned background query where the Gaussians do not
    cover a pixel (as training renders it) and decode every pixel (all valid); for comparing
    whole feature maps, not for finding targets (the background has no depth)."""
    memory = memory.on(resolve_device(device))
    q, depth, alpha = render_queries(memory, camera, model, backend, device)
    valid = alpha >= min_alpha  # [H, W]
    stored = memory.training.get("background")
    if background:
        a, b = next(m.query_slice for m in memory.models if m.name == model)
        if stored is not None and len(stored) >= 3 + b:
            q = q + (1 - alpha[..., None]) * torch.tensor(stored[3 + a:3 + b], dtype=q.dtype, device=q.device)
        valid = torch.ones_like(valid)
    bank = memory.banks[model]
    features = torch.zeros(*valid.shape, bank.feature_dim, device=q.device)  # [H, W, d]
    with torch.no_grad():
        features[valid] = memory_attention(q[valid], bank)
    depth = torch.where(valid, depth, torch.zeros_like(depth))
    return RenderedView(features.cpu(), depth.cpu(), alpha.cpu(), valid.cpu())


@dataclass
class ScoredView:
    """Text scores the memory gives at one camera. score [H, W] (relevancy or cosine, 0 where
    invalid); depth [H, W] expected depth (m, 0 where invalid); alpha [H, W]; valid [H, W] bool."""

    score: torch.Tensor
    depth: torch.Tensor
    alpha: torch.Tensor
    valid: torch.Tensor


def render_scores(memory: Memory, camera: Camera, text: torch.Tensor, negatives: torch.Tensor, method: str,
                  model: str = "clip", min_alpha: float = MIN_ALPHA, backend: str = "auto",
                  tol: float = SCORE_TOL, device: torch.device | str = "cpu") -> ScoredView:
    """Scores of ``text`` [d] (against ``negatives`` [k, d]) at ``camera``'s pixels: the same as
    ``score_map(render_features(...).features, ...)`` on valid pixels within ``tol``, without the
    ``[H, W, d]`` decode. For a bank whose spectrum is flat (every component needed,
    :func:`~m3_memory.query.relevancy.leading_components`) the features' exact norms do not depend on
    the text and are kept with the view (:func:`render_queries`): a second text at the camera
    costs only the text's columns. Rendered and scored on ``device``, returned on the CPU."""
    memory = memory.on(resolve_device(device))
    q, depth, alpha = render_queries(memory, camera, model, backend, device)
    valid = alpha >= min_alpha  # [H, W]
    score = torch.zeros(valid.shape, device=q.device)  # [H, W]
    if valid.any():
        bank = memory.banks[model]
        norms = None
        if leading_components(bank) == bank_spectrum(bank).sv.shape[0]:  # flat spectrum: exact norms, once per view
            store, key = memo(memory).setdefault("view_norms", OrderedDict()), (_view_key(memory, camera, model, backend),
                                                                                min_alpha)
            norms = store[key] if key in store else _keep(store, key, query_norms(q[valid], bank))
        score[valid] = query_scores(q[valid], bank, text.to(q.device), negatives.to(q.device), method, tol, norms=norms)[0]
    depth = torch.where(valid, depth, torch.zeros_like(depth))
    return ScoredView(score.cpu(), depth.cpu(), alpha.cpu(), valid.cpu())


def render_rgb(memory: Memory, camera: Camera, backend: str = "auto", device: torch.device | str = "cpu") -> np.ndarray:
    """The memory's colour image at ``camera``: uint8 [H, W, 3], view-dependent colour from the
    Gaussians' spherical harmonics, the build's learned background colour where nothing is."""
    g = memory.on(resolve_device(device)).gaussians
    T = torch.from_numpy(camera.T_world_cam).float().to(g.means.device)
    colors = sh_to_rgb(g.sh_dc, g.sh_rest, g.means, T[:3, 3])  # [N, 3]
    K = gsplat_K(torch.from_numpy(camera.K).float())[None].to(g.means.device)
    with torch.no_grad():
        out, alpha, _ = rasterization(g.means, g.quats, g.log_scales.exp(), torch.sigmoid(g.opacity_logits), colors,
                                      T.inverse()[None], K, camera.width, camera.height, backend=backend)
    background = torch.tensor(memory.training.get("background", [0.0, 0.0, 0.0])[:3]).clamp(0, 1)
    rgb = out[0].cpu() + (1 - alpha[0].cpu()) * background
    return (rgb.clamp(0, 1).numpy() * 255).round().astype(np.uint8)
