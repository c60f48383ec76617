"""What the viewer shows, computed without a browser: splat arrays, relevancy colours, the camera
of a browser view, and the rendered panel (colour | relevancy heat with the target).

Frames: the memory's world (metres, z up). Browser cameras follow viser's convention, which is
OpenCV's (x right, y down, z forward) for ``T_world_cam``, with a vertical field of view.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from m3_memory.conventions import invert_T
from m3_memory.memory.artifact import Gaussians, Memory
from m3_memory.query.camera import Camera
from m3_memory.query.target import Box
from m3_memory.render.rasterization import rasterization
from m3_memory.render.reference import gsplat_K
from m3_memory.render.sh import C0

DIM = 0.35  # brightness of Gaussians below the relevancy threshold while a query is shown


@dataclass
class Splats:
    """The memory's Gaussians as viser's splat node takes them: centers [N, 3] (m), covariances
    [N, 3, 3] (m^2), rgbs [N, 3] in [0, 1] (view-independent colour), opacities [N, 1]."""

    centers: np.ndarray
    covariances: np.ndarray
    rgbs: np.ndarray
    opacities: np.ndarray


def splats_of(g: Gaussians) -> Splats:
    """:class:`Splats` of Gaussians: covariance ``R diag(s^2) R^T`` from the normalised wxyz
    quaternions and scales, colour from the degree-0 spherical harmonic, opacity sigmoid."""
    q = torch.nn.functional.normalize(g.quats.float(), dim=-1)
    w, x, y, z = q.unbind(-1)
    R = torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
                     2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
                     2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1).reshape(-1, 3, 3)
    s2 = g.log_scales.float().mul(2).exp()  # [N, 3]
    cov = (R * s2[:, None, :]) @ R.transpose(1, 2)  # [N, 3, 3]
    rgb = (0.5 + C0 * g.sh_dc.float()).clamp(0, 1)
    return Splats(g.means.float().numpy(), cov.numpy(), rgb.numpy(),
                  torch.sigmoid(g.opacity_logits.float()).numpy()[:, None])


def turbo(x: np.ndarray) -> np.ndarray:
    """The turbo colour map of ``x`` [...] in [0, 1] -> RGB [..., 3] in [0, 1]."""
    import matplotlib

    return matplotlib.colormaps["turbo"](np.clip(x, 0, 1))[..., :3]


def relevancy_colors(rgbs: np.ndarray, score: np.ndarray, bound: float) -> np.ndarray:
    """Colours [N, 3] showing relevancy: Gaussians scoring above ``bound`` in turbo (scaled from
    the bound to the highest score), the others in their own colour, dimmed."""
    out = rgbs * DIM
    hot = score > bound
    if hot.any():
        top = float(score[hot].max())
        out[hot] = turbo(0.3 + 0.7 * (score[hot] - bound) / max(top - bound, 1e-6))
    return out


def wxyz_of(R: np.ndarray) -> np.ndarray:
    """The wxyz quaternion [4] of a rotation matrix [3, 3] (viser's orientation convention)."""
    from transforms3d.quaternions import mat2quat

    return mat2quat(R)


def browser_camera(wxyz: np.ndarray, position: np.ndarray, fov: float, aspect: float, width: int = 480) -> Camera:
    """The :class:`Camera` of a browser view: orientation ``wxyz`` and ``position`` (world, m) of
    viser's OpenCV-convention camera, vertical field of view ``fov`` (rad), ``aspect`` = width /
    height; rendered ``width`` pixels wide."""
    from transforms3d.quaternions import quat2mat

    height = max(16, round(width / aspect))
    f = height / 2 / np.tan(fov / 2)
    K = np.array([[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1]])
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = quat2mat(np.asarray(wxyz, float)), np.asarray(position, float)
    return Camera(K, width, height, T)


def render_colors(memory: Memory, camera: Camera, colors: np.ndarray | None = None, backend: str = "auto") -> np.ndarray:
    """The Gaussians at ``camera`` with per-Gaussian ``colors`` [N, 3] in [0, 1] (default: their
    degree-0 colour), over the build's background colour: uint8 [H, W, 3]."""
    g = memory.gaussians
    c = torch.from_numpy(np.asarray(colors, np.float32)) if colors is not None else (0.5 + C0 * g.sh_dc).clamp(0, 1)
    viewmat = torch.from_numpy(invert_T(camera.T_world_cam)).float()[None]
    K = gsplat_K(torch.from_numpy(camera.K).float())[None]
    with torch.no_grad():
        out, alpha, _ = rasterization(g.means, g.quats, g.log_scales.exp(), torch.sigmoid(g.opacity_logits), c, viewmat, K,
                                      camera.width, camera.height, backend=backend)
    background = torch.tensor(memory.training.get("background", [0.0, 0.0, 0.0])[:3]).clamp(0, 1)
    rgb = out[0] + (1 - alpha[0]) * background
    return (rgb.clamp(0, 1).numpy() * 255).round().astype(np.uint8)


def project(camera: Camera, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates [M, 2] (u, v) of world points [M, 3] and whether each is in front [M]."""
    p = (invert_T(camera.T_world_cam) @ np.c_[points, np.ones(len(points))].T).T[:, :3]
    z = np.maximum(p[:, 2], 1e-6)
    return np.c_[camera.K[0, 0] * p[:, 0] / z + camera.K[0, 2], camera.K[1, 1] * p[:, 1] / z + camera.K[1, 2]], p[:, 2] > 0.01


BOX_EDGES = [(0, 1), (0, 2), (0, 4), (1, 3), (1, 5), (2, 3), (2, 6), (3, 7), (4, 5), (4, 6), (5, 7), (6, 7)]


def box_corners(box: Box) -> np.ndarray:
    """The 8 corners [8, 3] of an oriented box (world, m); corner i has bit k set for +extent_k / 2."""
    signs = np.array([[(i >> k & 1) * 2 - 1 for k in range(3)] for i in range(8)], float)
    return box.center + (signs * box.extent / 2) @ box.R.T


def panel(memory: Memory, camera: Camera, heat_colors: np.ndarray | None, title: str, point: np.ndarray | None = None,
          box: Box | None = None) -> np.ndarray:
    """The "render from here" picture: the memory's colour at ``camera`` | the Gaussians in their
    relevancy colours (``heat_colors`` [N, 3]; colour again when None) with the target ``point``
    (ring) and its oriented ``box`` (magenta) drawn in; ``title`` above. uint8 [H + 18, 2W + 4, 3]."""
    from PIL import Image, ImageDraw

    left = render_colors(memory, camera)
    right = render_colors(memory, camera, heat_colors) if heat_colors is not None else left
    h, w = left.shape[:2]
    head = 18
    sheet = Image.new("RGB", (2 * w + 4, h + head), "white")
    sheet.paste(Image.fromarray(left), (0, head))
    sheet.paste(Image.fromarray(right), (w + 4, head))
    draw = ImageDraw.Draw(sheet)
    draw.text((2, 2), title, fill=(0, 0, 0))
    if box is not None:
        uv, front = project(camera, box_corners(box))
        for a, b in BOX_EDGES:
            if front[a] and front[b]:
                draw.line((w + 4 + uv[a, 0], head + uv[a, 1], w + 4 + uv[b, 0], head + uv[b, 1]), fill=(255, 0, 255), width=2)
    if point is not None:
        uv, front = project(camera, np.asarray(point, float)[None])
        if front[0]:
            x, y, r = w + 4 + uv[0, 0], head + uv[0, 1], max(4, w // 50)
            draw.ellipse((x - r, y - r, x + r, y + r), outline=(255, 255, 255), width=2)
    return np.asarray(sheet)
