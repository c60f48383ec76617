"""Why the memory answered as it did: the components memory attention drew on, and their sources.

A rendered feature is ``softmax(cos(q W, PSC) / T) @ PSC`` (memory attention), a convex
combination of stored features. For a pixel, a region or a set of Gaussians, the attention
weights (averaged over their queries) rank the principal scene components; the memory's trace
(:mod:`m3_memory.memory.trace`) says which source view, recording frame and feature-map
pixel each came from, so the answer can be shown as image patches of the scan with weights.

Patches are cropped from the source recording when it can be read (``Memory.source``), else
only the frame and pixel are named. Memories written before the trace have none
(:attr:`Trace.recorded` False).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from m3_memory.errors import InputError
from m3_memory.memory.artifact import Memory
from m3_memory.query.camera import Camera
from m3_memory.query.render import MIN_ALPHA, render_queries
from m3_memory.query.spatial import NEIGHBOURS, neighbourhood_queries

TOP = 8  # components shown by default
NOT_RECORDED = "the attention trace is not recorded in this memory (built before m3 recorded it; rebuild to get it)"


@dataclass
class TracedComponent:
    """One principal scene component behind an answer: its row in the bank, its attention weight
    (mean softmax weight over the traced queries, in [0, 1]) and where it came from: source view
    (index into ``Memory.cameras``), recording frame, feature-map pixel (row, col) and that pixel's
    box (left, top, right, bottom) in the view's image (pixels)."""

    component: int
    weight: float
    view: int
    frame: int
    pixel: tuple[int, int]
    box: tuple[int, int, int, int]

    def to_json(self) -> dict:
        return {"component": self.component, "weight": self.weight, "view": self.view, "frame": self.frame,
                "pixel": list(self.pixel), "box": list(self.box)}


@dataclass
class Trace:
    """The components memory attention drew on for one question, strongest first. recorded: the
    memory holds a trace (else ``components`` is empty and ``message`` says so). covered: the
    total attention weight of the listed components."""

    model: str
    recorded: bool
    components: list[TracedComponent] = field(default_factory=list)
    message: str = ""

    @property
    def covered(self) -> float:
        return float(sum(c.weight for c in self.components))

    def to_json(self) -> dict:
        return {"model": self.model, "recorded": self.recorded, "message": self.message, "covered": self.covered,
                "components": [c.to_json() for c in self.components]}


def attention_weights(memory: Memory, queries: torch.Tensor, model: str = "clip", chunk: int = 2048) -> torch.Tensor:
    """Mean memory-attention weights ``[t]`` of queries ``[M, l]`` of ``model`` (each row a softmax
    over the bank's components, as :func:`m3_memory.memory.attention.memory_attention` forms it)."""
    bank = memory.banks[model]
    q = queries.reshape(-1, bank.query_dim).float()
    if q.shape[0] == 0:
        raise InputError("trace", "no queries to trace (the pixel or region shows nothing of the memory)")
    keys = torch.nn.functional.normalize(bank.psc.float(), dim=-1)  # [t, d]
    W = bank.W.float()
    total = torch.zeros(bank.psc.shape[0])
    with torch.no_grad():
        for start in range(0, q.shape[0], chunk):
            x = torch.nn.functional.normalize(q[start:start + chunk] @ W, dim=-1)  # [c, d]
            total += torch.softmax(x @ keys.T / bank.temperature, dim=-1).sum(0)
    return total / q.shape[0]


def trace_queries(memory: Memory, queries: torch.Tensor, model: str = "clip", top: int = TOP) -> Trace:
    """The ``top`` components with the largest mean attention weight for queries ``[M, l]``."""
    if model not in memory.banks:
        raise InputError(model, f"not in this memory (models: {', '.join(memory.banks)})")
    sources = memory.sources.get(model)
    if sources is None:
        return Trace(model, False, message=NOT_RECORDED)
    weights = attention_weights(memory, queries, model)
    order = torch.argsort(weights, descending=True)[:top].tolist()
    table = sources.table
    out = []
    for k in order:
        view, frame, r, c = (int(v) for v in table[k, :4])
        cam = memory.cameras[view] if 0 <= view < len(memory.cameras) else None
        box = sources.patch_box(k, cam.width, cam.height) if cam is not None else (0, 0, 0, 0)
        out.append(TracedComponent(k, float(weights[k]), view, frame, (r, c), box))
    return Trace(model, True, out, f"top {len(out)} of {len(weights)} components hold "
                 f"{sum(x.weight for x in out):.0%} of the attention")


def trace_region(memory: Memory, camera: Camera, mask: np.ndarray, model: str = "clip", top: int = TOP,
                 min_alpha: float = MIN_ALPHA, backend: str = "auto") -> Trace:
    """The components behind the rendered pixels ``mask`` (bool [H, W] at ``camera``'s resolution)
    that the Gaussians cover (alpha >= ``min_alpha``)."""
    if model in memory.banks and model not in memory.sources:
        return Trace(model, False, message=NOT_RECORDED)
    q, _, alpha = render_queries(memory, camera, model, backend)  # [H, W, l], [H, W]
    mask = torch.as_tensor(np.asarray(mask, bool))
    if mask.shape != alpha.shape:
        raise InputError("trace", f"mask is {list(mask.shape)}, the camera renders {list(alpha.shape)}")
    return trace_queries(memory, q[mask & (alpha >= min_alpha)], model, top)


def trace_pixel(memory: Memory, camera: Camera, u: int, v: int, model: str = "clip", top: int = TOP,
                backend: str = "auto") -> Trace:
    """The components behind the rendered pixel at column ``u``, row ``v`` of ``camera``."""
    if not (0 <= u < camera.width and 0 <= v < camera.height):
        raise InputError("pixel", f"({u}, {v}) is outside the {camera.width}x{camera.height} image")
    mask = np.zeros((camera.height, camera.width), bool)
    mask[v, u] = True
    return trace_region(memory, camera, mask, model, top, min_alpha=0.0, backend=backend)


def trace_gaussians(memory: Memory, index: np.ndarray, model: str = "clip", top: int = TOP,
                    neighbours: int = NEIGHBOURS) -> Trace:
    """The components behind the decoded features of the Gaussians ``index`` (each decoded from
    its neighbourhood's query, as :func:`m3_memory.query.api.query_gaussians` does)."""
    if model in memory.banks and model not in memory.sources:
        return Trace(model, False, message=NOT_RECORDED)
    return trace_queries(memory, neighbourhood_queries(memory, model, neighbours, np.asarray(index)), model, top)


def explain_result(memory: Memory, result, camera: Camera | None, model: str = "clip", top: int = TOP) -> Trace:
    """The components behind a query's target: its region's rendered pixels when it was found in
    a view (``camera``), else its Gaussians (:func:`m3_memory.query.api.query_gaussians`)."""
    if model in memory.banks and model not in memory.sources:
        return Trace(model, False, message=NOT_RECORDED)
    if camera is not None and result.mask.shape == (camera.height, camera.width) and result.mask.any():
        return trace_region(memory, camera, result.mask, model, top)
    if len(result.gaussians):
        return trace_gaussians(memory, result.gaussians, model, top)
    return Trace(model, True, message="no target to explain")


def source_patches(memory: Memory, trace: Trace, context: float = 2.0, size: int = 96) -> list[np.ndarray] | None:
    """RGB crops uint8 ``[size, size, 3]`` of the source image around each traced component's
    patch (``context`` times the patch, the patch outlined in magenta), from the recording the
    memory was built from; None when it cannot be read (moved, deleted, another machine)."""
    from PIL import Image, ImageDraw

    from m3_memory.recording import open_recording

    if not trace.components or not memory.source or not Path(memory.source).exists():
        return None
    wanted = {c.frame for c in trace.components}
    images = {}
    try:
        for i, frame in enumerate(open_recording(memory.source)):
            if i in wanted:
                images[i] = frame.rgb
            if len(images) == len(wanted):
                break
    except InputError:
        return None
    if len(images) < len(wanted):
        return None
    crops = []
    for c in trace.components:
        img = Image.fromarray(images[c.frame])
        cam = memory.cameras[c.view]
        sx, sy = img.width / cam.width, img.height / cam.height  # the recording at its own resolution
        left, top, right, bottom = c.box[0] * sx, c.box[1] * sy, c.box[2] * sx, c.box[3] * sy
        half = max(right - left, bottom - top) * context / 2
        cx, cy = (left + right) / 2, (top + bottom) / 2
        window = (cx - half, cy - half, cx + half, cy + half)
        crop = img.crop(tuple(round(x) for x in window)).resize((size, size), Image.NEAREST)
        scale = size / (2 * half)
        draw = ImageDraw.Draw(crop)
        draw.rectangle(((left - window[0]) * scale, (top - window[1]) * scale, (right - window[0]) * scale - 1,
                        (bottom - window[1]) * scale - 1), outline=(255, 0, 255), width=2)
        crops.append(np.asarray(crop))
    return crops


def explain_sheet(memory: Memory, camera: Camera | None, result, trace: Trace, path: str | Path | None = None,
                  patches: list[np.ndarray] | None = None, tile: int = 96):
    """A PNG sheet explaining a query ``result`` (:class:`m3_memory.query.api.QueryResult`): the
    query view and its heatmap (when ``camera`` is given), then one tile per traced component: the
    source patch (``patches``, default :func:`source_patches`; a grey tile naming frame and pixel
    when the recording cannot be read) with its attention weight. Returns the PIL image; written to
    ``path`` when given."""
    from PIL import Image, ImageDraw

    from m3_memory.query.picture import overlay_sheet

    top = overlay_sheet(memory, camera, result) if camera is not None else None
    if patches is None and trace.recorded:
        patches = source_patches(memory, trace, size=tile)
    line = 14
    n = max(1, len(trace.components))
    width = max(top.width if top is not None else 0, n * (tile + 4), 480)
    height = (top.height + 4 if top is not None else 0) + line + (tile + 2 * line if trace.components else line)
    sheet = Image.new("RGB", (width, height), "white")
    y = 0
    if top is not None:
        sheet.paste(top, (0, 0))
        y = top.height + 4
    draw = ImageDraw.Draw(sheet)
    head = (f"memory attention ({trace.model}): {trace.message}" if trace.recorded else trace.message)
    draw.text((2, y), head, fill=(0, 0, 0))
    y += line
    for i, c in enumerate(trace.components):
        x = i * (tile + 4)
        if patches is not None:
            sheet.paste(Image.fromarray(patches[i]).resize((tile, tile)), (x, y))
        else:
            draw.rectangle((x, y, x + tile - 1, y + tile - 1), fill=(200, 200, 200))
            draw.text((x + 4, y + tile // 2 - 12), f"frame {c.frame}", fill=(0, 0, 0))
            draw.text((x + 4, y + tile // 2), f"px ({c.pixel[0]}, {c.pixel[1]})", fill=(0, 0, 0))
        draw.text((x + 2, y + tile + 1), f"w {c.weight:.3f}", fill=(0, 0, 0))
        draw.text((x + 2, y + tile + 1 + line), f"view {c.view} #{c.component}", fill=(90, 90, 90))
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        sheet.save(path)
    return sheet
