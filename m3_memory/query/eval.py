"""Held-out evaluation of feature predictors side by side (paper, Tables 1 and 2).

Rows are *predictors*: anything with a ``name``, a ``parameters`` count (None when it is not a
3D representation) and ``features(view) -> [h, w, d]`` covering the view's image in the
foundation model's space. Built in: the model's own 2D maps (:class:`RawMaps`, the upper
bound), the M3 memory rendered at the view's camera (:class:`MemoryMaps`) and a Feature-3DGS-style
distillation baseline trained with the memory's budget (:class:`Distilled`).

On each held-out view (the memory's "test" cameras, every 8th):

- feature fidelity against the model's own map of the view: mean cosine similarity (and cosine
  distance 1 - cos) and mean L2 distance, with the prediction bilinearly sampled at the centres
  of the map's pixels; all-zero (unlabeled) map pixels are skipped;
- text grounding against object masks, per (view, object in view): the paper's protocol, cosine
  of every pixel's feature (bilinearly upsampled to the image) with the object's name, binarised
  with Otsu's threshold, IoU with the mask; and m3's query protocol (LERF relevancy, Otsu, largest
  connected component, :func:`~m3_memory.query.relevancy.target_region`). Aggregates: mIoU (mean
  IoU), cIoU (summed intersections over summed unions), AP50/AP60 (share of pairs with IoU > 0.5 / 0.6);
- retrieval I2T/T2I at 1/5/10 between the views and the object names (no distractor texts: the
  negatives are no distractors, the fixture's are background classes seen in every view),
  and, for predictors that render colour, PSNR / SSIM / LPIPS (:mod:`m3_memory.query.metrics`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from m3_memory.device import warn_cpu_fallback
from m3_memory.errors import InputError
from m3_memory.foundation import FoundationModel
from m3_memory.memory.artifact import Memory
from m3_memory.progress import progress
from m3_memory.query.camera import Camera
from m3_memory.query.labels import upsampled
from m3_memory.query.metrics import image_quality, lpips_unavailable, retrieval
from m3_memory.query.relevancy import cosine_map, relevancy_map, target_region, threshold_value
from m3_memory.query.render import render_features, render_queries, render_rgb
from m3_memory.recording.frame import Frame
from m3_memory.training.distill import DistillTrainer
from m3_memory.training.losses import depth_errors, lookup, map_pixel_centres

MIN_MASK_FRACTION = 0.001  # an object counts as in view when its mask covers this share of the image


@dataclass
class EvalView:
    """One held-out view: its index in the recording, colour image uint8 [H, W, 3], object masks
    (name -> bool [H, W]), the camera it was taken with (memory frame) and its depth."""

    index: int
    name: str
    rgb: np.ndarray
    masks: dict[str, np.ndarray]
    camera: Camera
    depth: np.ndarray | None = None  # the sensor's [H, W] float32 metres, 0 = invalid


class Predictor(Protocol):
    name: str
    parameters: int | None

    def features(self, view: EvalView) -> torch.Tensor:
        """Features [h, w, d] covering the view's image (any h, w) in the model's space."""

    def rgb(self, view: EvalView) -> np.ndarray | None:
        """The colour image uint8 [H, W, 3] it renders at the view's camera (None: it renders none)."""


@dataclass
class RawMaps:
    """The foundation model's own dense maps of the view (the upper bound of any memory)."""

    model: FoundationModel
    name: str = "raw 2D maps"
    parameters: int | None = None

    def features(self, view: EvalView) -> torch.Tensor:
        return self.model.encode_image(view.rgb)

    def rgb(self, view: EvalView) -> None:
        return None


@dataclass
class MemoryMaps:
    """The M3 memory rendered at the view's camera and decoded by memory attention (the build's
    learned background query where no Gaussian covers a pixel)."""

    memory: Memory
    model: str = "clip"
    name: str = "M3 memory"
    device: str = "cpu"  # where the view is rendered and decoded

    @property
    def parameters(self) -> int:
        return self.memory.gaussians.parameter_count() + sum(b.psc.numel() + b.W.numel() for b in self.memory.banks.values())

    def features(self, view: EvalView) -> torch.Tensor:
        return render_features(self.memory, view.camera, self.model, background=True, device=self.device).features

    def rgb(self, view: EvalView) -> np.ndarray:
        return render_rgb(self.memory, view.camera, device=self.device)

    def depth(self, view: EvalView) -> torch.Tensor:
        """The memory's expected depth [H, W] (m) at the view's camera."""
        return render_queries(self.memory, view.camera, self.model, device=self.device)[1].cpu()


@dataclass
class Distilled:
    """A Feature-3DGS-style baseline (:mod:`m3_memory.training.distill`) rendered at the view's
    camera and decoded by its linear layer."""

    trainer: DistillTrainer
    model: str = "clip"

    @property
    def name(self) -> str:
        return f"F-3DGS-style l={self.trainer.feature_dim}"

    @property
    def parameters(self) -> int:
        return self.trainer.parameter_count()

    def features(self, view: EvalView) -> torch.Tensor:
        c = view.camera
        return self.trainer.features_at(c.T_world_cam, c.K, c.width, c.height, self.model).cpu()

    @torch.no_grad()
    def rgb(self, view: EvalView) -> np.ndarray:
        c = view.camera
        rgb = self.trainer.render_camera(c.T_world_cam, c.K, c.width, c.height)[0]
        return (rgb.clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)


@dataclass
class Scores:
    """Grounding aggregates over (view, object) pairs."""

    mIoU: float
    cIoU: float
    AP50: float
    AP60: float
    pairs: int

    @classmethod
    def of(cls, inter: Sequence[int], union: Sequence[int]) -> "Scores":
        iou = np.array(inter, float) / np.maximum(np.array(union, float), 1)
        return cls(float(iou.mean()) if len(iou) else 0.0, float(np.sum(inter) / max(np.sum(union), 1)),
                   float((iou > 0.5).mean()) if len(iou) else 0.0, float((iou > 0.6).mean()) if len(iou) else 0.0, len(iou))


@dataclass
class Row:
    """One predictor's results."""

    name: str
    parameters: int | None
    cosine: float
    l2: float
    paper: Scores
    query: Scores
    seconds_per_view: float
    pairs: list[dict] = field(default_factory=list)
    retrieval: dict[str, float] = field(default_factory=dict)  # I2T@k, T2I@k
    # mean PSNR (dB), SSIM, LPIPS over the views, depth error (m); None: renders no colour
    image: dict[str, float | None] | None = None

    def to_json(self) -> dict:
        return {"name": self.name, "parameters": self.parameters, "cosine": self.cosine, "cosine_distance": 1 - self.cosine,
                "l2": self.l2, "grounding_paper": vars(self.paper), "grounding_query": vars(self.query),
                "retrieval": self.retrieval, "image": self.image, "seconds_per_view": self.seconds_per_view,
                "pairs": self.pairs}


def heldout_views(memory: Memory, frames: Sequence[Frame], split: str = "test") -> list[EvalView]:
    """The memory's ``split`` cameras ("test": held out; "all") with the recording's frames of the
    same index (colour and masks); the frames must be the memory's source recording, in order."""
    if not memory.cameras:
        raise InputError("memory", "stores no source cameras: cannot tell its held-out views")
    if len(frames) != len(memory.cameras):
        raise InputError("masks", f"the recording has {len(frames)} frames, the memory was built from "
                         f"{len(memory.cameras)}: not its source recording")
    views = []
    for i, (cam, f) in enumerate(zip(memory.cameras, frames)):
        if split == "all" or cam.split == split:
            camera = Camera.from_view(cam)
            if f.rgb.shape[:2] != (cam.height, cam.width):
                raise InputError("masks", f"frame {i} is {f.rgb.shape[1]}x{f.rgb.shape[0]}, the memory's camera "
                                 f"{cam.width}x{cam.height}: not its source recording")
            views.append(EvalView(i, f.name or f"frame {i}", f.rgb, f.masks, camera, f.depth))
    if not views:
        raise InputError("memory", f"has no {split!r} cameras to evaluate on")
    return views


def fidelity(pred: torch.Tensor, target: torch.Tensor) -> tuple[float, float, int]:
    """(mean cosine, mean L2, pixel count) of ``pred`` [H', W', d] sampled at the centres of
    ``target``'s [h, w, d] pixels; all-zero target pixels skipped."""
    h, w = target.shape[:2]
    uv = map_pixel_centres(h, w, pred.shape[1], pred.shape[0])
    p = lookup(pred, uv, pred.shape[1], pred.shape[0])  # [h*w, d]
    gt = target.reshape(-1, target.shape[-1]).float()
    keep = gt.abs().sum(-1) > 0
    cos = F.cosine_similarity(p[keep], gt[keep], dim=-1)
    return float(cos.mean()), float((p[keep] - gt[keep]).norm(dim=-1).mean()), int(keep.sum())


def text_of(obj: str) -> str:
    """An object's name as a query: underscores (APC names) become spaces."""
    return obj.replace("_", " ")


def evaluate(predictors: Sequence[Predictor], views: Sequence[EvalView], text_model: FoundationModel,
             negatives: Sequence[str]) -> list[Row]:
    """Fidelity and grounding of every predictor on ``views`` (module doc). The text model is the
    one whose space the predictors' features are in; its own maps are the fidelity targets."""
    import time

    objects = sorted({o for v in views for o, m in v.masks.items() if m.mean() >= MIN_MASK_FRACTION})
    if not objects:
        raise InputError("masks", "no object mask covers any held-out view: nothing to ground")
    warn_cpu_fallback()
    emb = text_model.encode_text([text_of(o) for o in objects] + list(negatives))  # [k + n, d]
    text, neg = dict(zip(objects, emb[:len(objects)])), emb[len(objects):]
    targets = [text_model.encode_image(v.rgb) for v in progress(views, "eval: the model's own maps", unit="view",
                                                                leave=False)]  # [h, w, d] each
    present = np.array([[o in v.masks and v.masks[o].mean() >= MIN_MASK_FRACTION for o in objects] for v in views])
    no_lpips = lpips_unavailable()
    rows = []
    for p in predictors:
        cos_sum, l2_sum, count, seconds = 0.0, 0.0, 0, 0.0
        inter = {"paper": [], "query": []}
        union = {"paper": [], "query": []}
        pairs, maps, quality, depths = [], [], [], []
        for v, target in progress(list(zip(views, targets)), f"eval {p.name}", unit="view", leave=False):
            start = time.perf_counter()
            f = p.features(v)
            seconds += time.perf_counter() - start
            maps.append(f)
            rendered = p.rgb(v)
            if rendered is not None:
                quality.append(image_quality(rendered, v.rgb, with_lpips=no_lpips is None))
            if hasattr(p, "depth") and v.depth is not None:
                depths.append((p.depth(v), torch.from_numpy(np.asarray(v.depth, dtype=np.float32))))
            c, l2, n = fidelity(f, target)
            cos_sum, l2_sum, count = cos_sum + c * n, l2_sum + l2 * n, count + n
            up = upsampled(f, *v.rgb.shape[:2])  # [H, W, d]
            everywhere = np.ones(v.rgb.shape[:2], bool)
            for o in objects:
                gt = v.masks.get(o)
                if gt is None or gt.mean() < MIN_MASK_FRACTION:
                    continue
                s = cosine_map(up, text[o]).numpy()
                found = {"paper": s > threshold_value(s, everywhere, "otsu"),
                         "query": target_region(relevancy_map(up, text[o], neg).numpy(), everywhere)}
                pair = {"view": v.name, "object": o}
                for k, m in found.items():
                    i, u = int((m & gt).sum()), int((m | gt).sum())
                    inter[k].append(i)
                    union[k].append(u)
                    pair[f"iou_{k}"] = i / max(u, 1)
                pairs.append(pair)
        image = None
        if quality:
            image = {k: None if quality[0][k] is None else float(np.mean([q[k] for q in quality])) for k in quality[0]}
            if no_lpips:
                image["lpips_unavailable"] = no_lpips
            if depths:  # held-out depth error against the sensor (m): depth_median_m, depth_p90_m, depth_valid
                image.update(depth_errors(*map(list, zip(*depths))))
        rows.append(Row(p.name, p.parameters, cos_sum / max(count, 1), l2_sum / max(count, 1),
                        Scores.of(inter["paper"], union["paper"]), Scores.of(inter["query"], union["query"]),
                        seconds / len(views), pairs, retrieval(maps, present, emb[:len(objects)], emb[:0]), image))
    return rows


def write_report(rows: Sequence[Row], out: str | Path, about: dict) -> tuple[Path, Path]:
    """``eval.json`` (``about`` + every row) and ``eval.png`` (a table and grounding bars) in ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    raw = next((r for r in rows if r.parameters is None), None)
    data = {**about, "rows": [r.to_json() for r in rows]}
    memory = next((r for r in rows if r.name == MemoryMaps.name), None)
    for r, d in zip(rows, data["rows"]):
        if raw is not None and raw.paper.mIoU > 0:
            d["mIoU_vs_raw"] = r.paper.mIoU / raw.paper.mIoU
        if raw is not None and raw.query.mIoU > 0:
            d["mIoU_query_vs_raw"] = r.query.mIoU / raw.query.mIoU
        if memory is not None and r.parameters:
            d["parameters_vs_memory"] = r.parameters / memory.parameters
    json_path, png_path = out / "eval.json", out / "eval.png"
    json_path.write_text(json.dumps(data, indent=1))
    fig, (ax_t, ax_b) = plt.subplots(2, 1, figsize=(12, 5.5), gridspec_kw={"height_ratios": [1, 1.6]})
    ax_t.axis("off")
    cells = [[r.name, "-" if r.parameters is None else f"{r.parameters / 1e6:.2f} M", *image_cells(r.image),
              f"{r.cosine:.3f}", f"{r.l2:.3f}", f"{r.paper.mIoU:.3f}", f"{r.paper.cIoU:.3f}", f"{r.paper.AP50:.2f}",
              f"{r.paper.AP60:.2f}", f"{r.query.mIoU:.3f}",
              *(f"{r.retrieval.get(k, 0):.2f}" for k in ("I2T@1", "I2T@5", "T2I@1", "T2I@5"))] for r in rows]
    table = ax_t.table(cells, colLabels=["row", "params", "PSNR", "SSIM", "LPIPS", "cos", "L2", "mIoU", "cIoU", "AP50",
                                         "AP60", "mIoU (query)", "I2T@1", "I2T@5", "T2I@1", "T2I@5"], loc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(7)
    metrics = [(p, m) for p in ("paper", "query") for m in ("mIoU", "cIoU", "AP50", "AP60")]
    x = np.arange(len(metrics))
    for i, r in enumerate(rows):
        ax_b.bar(x + (i - (len(rows) - 1) / 2) * 0.8 / len(rows), [getattr(getattr(r, p), m) for p, m in metrics],
                 0.8 / len(rows), label=r.name)
    ax_b.set_xticks(x, [f"{m}\n{p}" for p, m in metrics], fontsize=8)
    ax_b.set_ylim(0, 1)
    ax_b.set_ylabel("grounding")
    ax_b.set_title("paper: cosine + Otsu; query: relevancy + Otsu + largest component", fontsize=8)
    ax_b.legend(fontsize=8)
    fig.suptitle(f"{about.get('memory', '')}: {about.get('views', '?')} held-out views, {rows[0].paper.pairs} "
                 "(view, object) pairs", fontsize=9)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return json_path, png_path


def image_cells(image: dict | None) -> list[str]:
    """PSNR, SSIM and LPIPS of a row as table cells ("-" where not measured)."""
    if image is None:
        return ["-", "-", "-"]
    return [f"{image['psnr']:.2f}", f"{image['ssim']:.3f}", "-" if image.get("lpips") is None else f"{image['lpips']:.3f}"]


def apc_segm_masks(folder: str | Path, frames: Sequence[Frame]) -> list[dict[str, np.ndarray]]:
    """Object masks of an APC 2016 scene from its ``segm/frame-XXXXXX.segm.png`` label images.

    The scene's ``masks/`` are conservative (thresholded confidence: about a third of each object);
    ``segm/`` labels whole objects but does not name its label values, so each value is given the
    object whose ``masks/`` mask it overlaps most, over all frames. Returns one name -> bool [H, W]
    dict per frame (objects with no label value are left out)."""
    from m3_memory.recording.images import read_u8

    folder = Path(folder)
    labels = []
    for f in frames:
        path = folder / "segm" / f"{f.name}.segm.png"
        if not path.is_file():
            raise InputError(path, "missing: the APC scene's segm/ label image of this frame")
        labels.append(read_u8(path).astype(np.int64))  # [H, W]
    overlap: dict[int, dict[str, int]] = {}
    for f, lab in zip(frames, labels):
        for obj, m in f.masks.items():
            values, counts = np.unique(lab[m], return_counts=True)
            for value, count in zip(values.tolist(), counts.tolist()):
                if value:
                    overlap.setdefault(value, {}).setdefault(obj, 0)
                    overlap[value][obj] += count
    name = {value: max(votes, key=votes.get) for value, votes in overlap.items()}
    out = []
    for lab in labels:
        masks: dict[str, np.ndarray] = {}
        for value, obj in name.items():
            masks[obj] = masks.get(obj, np.zeros(lab.shape, bool)) | (lab == value)
        out.append(masks)
    return out
