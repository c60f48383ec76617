"""The picture of a query: the memory's rendered view with the relevancy heatmap over it,
the target region outlined and the 3D target point marked."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402
from scipy import ndimage  # noqa: E402

from m3_memory.conventions import invert_T  # noqa: E402
from m3_memory.memory.artifact import Memory  # noqa: E402
from m3_memory.query.api import QueryResult  # noqa: E402
from m3_memory.query.camera import Camera  # noqa: E402
from m3_memory.query.render import render_rgb  # noqa: E402


def heatmap_overlay(memory: Memory, camera: Camera, result: QueryResult, path: str | Path) -> None:
    """Write a PNG: rendered view | view with the heatmap (turbo) blended in, the region's
    outline in white and the target point as a ring; the text and score in the title line."""
    sheet = overlay_sheet(memory, camera, result)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


def overlay_sheet(memory: Memory, camera: Camera, result: QueryResult) -> Image.Image:
    """The picture :func:`heatmap_overlay` writes, as an RGB image."""
    rgb = render_rgb(memory, camera).astype(np.float32) / 255  # [H, W, 3]
    heat = result.heatmap if result.heatmap.shape == rgb.shape[:2] else np.zeros(rgb.shape[:2], np.float32)
    colored = plt.get_cmap("turbo")(heat)[..., :3]
    weight = 0.65 * (heat > 0)[..., None]
    blend = rgb * (1 - weight) + colored * weight
    if result.mask.shape == rgb.shape[:2] and result.mask.any():
        edge = result.mask & ~ndimage.binary_erosion(result.mask)
        blend[edge] = 1.0
    left = Image.fromarray((rgb * 255).round().astype(np.uint8))
    right = Image.fromarray((blend * 255).round().astype(np.uint8))
    h, w = rgb.shape[:2]
    head = 18
    sheet = Image.new("RGB", (2 * w + 4, h + head), "white")
    sheet.paste(left, (0, head))
    sheet.paste(right, (w + 4, head))
    draw = ImageDraw.Draw(sheet)
    status = f"score {result.score:.3f}" + ("" if result.found else " - nothing relevant")
    draw.text((2, 2), f"'{result.text}': {status}", fill=(0, 0, 0))
    if result.point_world is not None:
        p = invert_T(camera.T_world_cam) @ np.append(result.point_world, 1.0)
        if p[2] > 0:
            u, v = camera.K[0, 0] * p[0] / p[2] + camera.K[0, 2], camera.K[1, 1] * p[1] / p[2] + camera.K[1, 2]
            x, y, r = w + 4 + u, head + v, max(4, w // 60)
            draw.ellipse((x - r, y - r, x + r, y + r), outline=(255, 0, 255), width=2)
    return sheet
