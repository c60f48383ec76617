"""Grounding measured on label images, with no downloaded model (``m3 eval --labels``).

A recording with label images (the APC ``segm/`` maps, the synthetic scene's masks) gets
*region-embedding* feature maps: one fixed random unit vector per label painted into its
region, at a real model's feature resolution (1/``stride`` of the image; each map pixel takes the
label covering most of its cell), zeros where nothing is labeled. This is the kind of map the
paper builds for SEEM and LLaMA (prompts duplicated within each mask region). The memory is
built from them through the ``precomputed`` model, then held-out views are scored:

- label IoU: every pixel takes the label whose embedding is most similar (cosine) to its
  feature, the memory's rendered at the view's camera, the raw maps' bilinearly upsampled (the
  upper bound); per label, intersections and unions are summed over the views; pixels without
  a label in the ground truth are not scored. mIoU is the mean over the objects (the background
  is a label the memory must learn too, since memory attention can only return a mix of its
  bank, never "no feature"; its IoU is reported beside);
- 3D target error per (view, object): the target the memory gives (its rendered depth over the
  largest connected region it labels as the object, as a query would pick it, lifted and reduced
  by the query pipeline's
  :func:`~m3_memory.query.target.lift_region` and :func:`~m3_memory.query.target.robust_center`)
  against the same reduction of the object's ground-truth pixels lifted with the recording's
  real depth and pose, in metres. The memory's region lifted with the real depth is reported
  too, to tell segmentation error from geometry error.

Label 0 is the background (pixels of no object); -1 marks unlabeled pixels.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from m3_memory.errors import InputError
from m3_memory.memory.artifact import Memory
from m3_memory.query.camera import Camera
from m3_memory.query.relevancy import largest_component
from m3_memory.query.render import MIN_ALPHA, render_features
from m3_memory.query.target import lift_region, robust_center
from m3_memory.recording.frame import Frame

BACKGROUND = "background"
UNLABELED = -1
MIN_LABEL_FRACTION = 0.001  # an object counts as in view when it covers this share of the image
MIN_TARGET_POINTS = 10  # fewer lifted points: no 3D target


@dataclass(frozen=True)
class LabelMapConfig:
    """How region-embedding maps are made."""

    stride: int = 8  # image pixels per map pixel (1/8: a ViT-S/8 or SEEM-like resolution)
    dim: int = 64  # embedding dimension
    seed: int = 0  # seed of the random unit vectors


def label_images(frames: Sequence[Frame]) -> tuple[list[str], list[np.ndarray]]:
    """Label names (``names[0]`` is the background, then the objects sorted) and one int64 label
    image [H, W] per frame from the frames' object masks (0: no object). Where masks overlap the
    later name wins. :class:`InputError` when no frame has a mask."""
    objects = sorted({o for f in frames for o in f.masks})
    if not objects:
        raise InputError("labels", "the recording has no object masks or label images to measure grounding on")
    names = [BACKGROUND, *objects]
    out = []
    for f in frames:
        lab = np.zeros(f.rgb.shape[:2], np.int64)
        for k, o in enumerate(objects, start=1):
            m = f.masks.get(o)
            if m is not None:
                lab[m] = k
        out.append(lab)
    return names, out


def label_embeddings(count: int, cfg: LabelMapConfig) -> torch.Tensor:
    """``count`` fixed random unit vectors [count, dim] (N(0, 1) draws normalised, seeded)."""
    g = torch.Generator().manual_seed(cfg.seed)
    return F.normalize(torch.randn(count, cfg.dim, generator=g), dim=-1)


def region_map(labels: np.ndarray, embeddings: torch.Tensor, stride: int) -> torch.Tensor:
    """Label image [H, W] (-1 unlabeled) -> region-embedding map [ceil(H/stride), ceil(W/stride), d]:
    each cell gets the embedding of the label covering most of it, zeros when that is "unlabeled"."""
    H, W = labels.shape
    h, w = -(-H // stride), -(-W // stride)
    k = embeddings.shape[0]
    lab = torch.from_numpy(labels).long() + 1  # 0 = unlabeled
    onehot = F.one_hot(lab, k + 1).permute(2, 0, 1)[None].float()  # [1, k + 1, H, W]
    onehot = F.pad(onehot, (0, w * stride - W, 0, h * stride - H))  # padding counts as nothing
    share = F.avg_pool2d(onehot, stride)[0]  # [k + 1, h, w]
    winner = share.argmax(0)  # [h, w]
    table = torch.cat([embeddings.new_zeros(1, embeddings.shape[1]), embeddings])  # [k + 1, d]
    return table[winner]


def write_label_maps(folder: str | Path, frames: Sequence[Frame], labels: Sequence[np.ndarray], embeddings: torch.Tensor,
                     stride: int) -> Path:
    """One ``<frame>.npy`` region-embedding map per frame into ``folder`` (the ``precomputed``
    model's layout): named after the frame when the names are unique plain file stems, else by index."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = [f.name for f in frames]
    by_name = all(n and Path(n).name == n and Path(n).stem == n for n in names) and len(set(names)) == len(names)
    for i, (f, lab) in enumerate(zip(frames, labels)):
        np.save(folder / f"{names[i] if by_name else f'{i:06d}'}.npy", region_map(lab, embeddings, stride).numpy())
    return folder


def nearest_label(features: torch.Tensor, embeddings: torch.Tensor) -> np.ndarray:
    """Features [H, W, d] -> index [H, W] of the most similar (cosine) label embedding [k, d]."""
    return (F.normalize(features.float(), dim=-1) @ embeddings.T).argmax(-1).numpy()


def upsampled(features: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bilinear resize of a map [h, w, d] to [height, width, d] (pixel centres aligned)."""
    if features.shape[:2] == (height, width):
        return features
    x = features.permute(2, 0, 1)[None].float()
    return F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)[0].permute(1, 2, 0)


@dataclass
class LabelScores:
    """One predictor's label grounding: IoU per label name (summed over views), mIoU over the
    objects, pixel accuracy over labeled pixels, and the 3D target errors (m) per pair."""

    name: str
    iou: dict[str, float]
    mIoU: float
    accuracy: float
    targets: list[dict] = field(default_factory=list)
    seconds_per_view: float = 0.0

    def target_summary(self, key: str = "error") -> dict:
        """Median and worst of the pairs' ``key`` errors (m), the pairs scored and missed."""
        errs = [t[key] for t in self.targets if t.get(key) is not None]
        return {"median": float(np.median(errs)) if errs else None, "worst": float(max(errs)) if errs else None,
                "pairs": len(errs), "missed": sum(t.get(key) is None for t in self.targets)}

    def to_json(self) -> dict:
        out = {"name": self.name, "iou": self.iou, "mIoU": self.mIoU, "accuracy": self.accuracy,
               "seconds_per_view": self.seconds_per_view, "targets": self.targets}
        if self.targets:
            out["target_error"] = self.target_summary()
            out["target_error_real_depth"] = self.target_summary("error_real_depth")
        return out


def _target(mask: np.ndarray, depth: np.ndarray, camera: Camera) -> np.ndarray | None:
    pts = lift_region(mask, depth, camera)
    return robust_center(pts) if len(pts) >= MIN_TARGET_POINTS else None


def score_labels(memory: Memory, model: str, views: Sequence[tuple[Frame, Camera, np.ndarray, torch.Tensor]],
                 names: Sequence[str], embeddings: torch.Tensor
                 ) -> tuple[LabelScores, LabelScores, list[tuple[Frame, np.ndarray, np.ndarray]]]:
    """(raw maps, memory) label scores on ``views``: (frame, camera, label image [H, W], raw region
    map [h, w, d]) each; ``model`` is the memory's model holding the region embeddings. Also
    returns (frame, label image, the memory's labels [H, W]) per view for the report."""
    k = len(names)
    inter = {"raw": np.zeros(k), "memory": np.zeros(k)}
    union = {"raw": np.zeros(k), "memory": np.zeros(k)}
    correct, labeled = {"raw": 0, "memory": 0}, 0
    seconds = {"raw": 0.0, "memory": 0.0}
    targets, shown = [], []
    for frame, camera, gt, raw_map in views:
        H, W = gt.shape
        start = time.perf_counter()
        pred = {"raw": nearest_label(upsampled(raw_map, H, W), embeddings)}
        seconds["raw"] += time.perf_counter() - start
        start = time.perf_counter()
        rendered = render_features(memory, camera, model, background=True)
        pred["memory"] = nearest_label(rendered.features, embeddings)
        seconds["memory"] += time.perf_counter() - start
        shown.append((frame, gt, pred["memory"]))
        covered = (rendered.alpha >= MIN_ALPHA).numpy()
        depth = np.where(covered, rendered.depth.numpy(), 0.0)
        scored = gt != UNLABELED
        labeled += int(scored.sum())
        for key, p in pred.items():
            correct[key] += int((p[scored] == gt[scored]).sum())
            for c in range(k):
                g, q = (gt == c) & scored, (p == c) & scored
                inter[key][c] += (g & q).sum()
                union[key][c] += (g | q).sum()
        for c in range(1, k):
            g = gt == c
            if g.mean() < MIN_LABEL_FRACTION:
                continue
            real = _target(g, frame.depth, camera)
            if real is None:
                continue  # the sensor saw too little of it: nothing to compare with
            region = largest_component(pred["memory"] == c)
            mem = _target(region & covered, depth, camera)
            mem_real = _target(region, frame.depth, camera)
            targets.append({"view": frame.name, "object": names[c], "real": real.tolist(),
                            "memory": None if mem is None else mem.tolist(),
                            "error": None if mem is None else float(np.linalg.norm(mem - real)),
                            "error_real_depth": None if mem_real is None else float(np.linalg.norm(mem_real - real))})
    out = []
    for key, label in (("raw", "raw region maps"), ("memory", "M3 memory")):
        present = union[key] > 0
        iou = {names[c]: float(inter[key][c] / union[key][c]) for c in range(k) if present[c]}
        objects = [iou[n] for n in names[1:] if n in iou]
        out.append(LabelScores(label, iou, float(np.mean(objects)) if objects else 0.0, correct[key] / max(labeled, 1),
                               targets if key == "memory" else [], seconds[key] / max(len(views), 1)))
    return out[0], out[1], shown


def write_label_report(raw: LabelScores, mem: LabelScores, out: str | Path, about: dict,
                       shown: Sequence[tuple[Frame, np.ndarray, np.ndarray]] = ()) -> tuple[Path, Path]:
    """``labels.json`` (``about`` + both rows + the memory's mIoU as a share of the raw maps') and
    ``labels.png`` (IoU bars per label, 3D target errors, and per view: image, truth, memory's labels)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = {**about, "rows": [raw.to_json(), mem.to_json()],
            "mIoU_vs_raw": mem.mIoU / raw.mIoU if raw.mIoU > 0 else None}
    json_path, png_path = out / "labels.json", out / "labels.png"
    json_path.write_text(json.dumps(data, indent=1))
    shown = list(shown)[:3]
    fig = plt.figure(figsize=(12, 4 + 2.6 * len(shown)))
    grid = fig.add_gridspec(1 + len(shown), 3, height_ratios=[1.3] + [1] * len(shown))
    ax = fig.add_subplot(grid[0, :2])
    names = list(raw.iou)
    x = np.arange(len(names))
    for i, r in enumerate((raw, mem)):
        ax.bar(x + (i - 0.5) * 0.4, [r.iou.get(n, 0) for n in names], 0.4, label=f"{r.name} (mIoU {r.mIoU:.3f})")
    ax.set_xticks(x, [n.replace("_", "\n") for n in names], fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("IoU (held-out views)")
    ax.legend(fontsize=8)
    ax = fig.add_subplot(grid[0, 2])
    errs = [(t["object"], t["error"]) for t in mem.targets if t["error"] is not None]
    if errs:
        ax.barh(np.arange(len(errs)), [e * 100 for _, e in errs], color="tab:orange")
        ax.set_yticks(np.arange(len(errs)), [f"{o[:18]}" for o, _ in errs], fontsize=6)
        ax.axvline(2, ls="--", c="k", lw=0.8)
        ax.axvline(4, ls=":", c="k", lw=0.8)
    ax.set_xlabel("3D target error (cm)")
    cmap = plt.get_cmap("tab10")
    for row, (frame, gt, pred) in enumerate(shown, start=1):
        for col, (img, title) in enumerate(((frame.rgb, frame.name), (gt, "labels"), (pred, "memory's labels"))):
            a = fig.add_subplot(grid[row, col])
            a.imshow(img if img.ndim == 3 else cmap(np.where(img < 0, 9, img) % 10), interpolation="nearest")
            a.set_title(title, fontsize=8)
            a.axis("off")
    fig.suptitle(f"{about.get('recording', '')}: region-embedding labels, {about.get('views', '?')} held-out views",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return json_path, png_path


def labeled_frames(source: str | Path, mask_source: str = "auto") -> tuple[list[Frame], str]:
    """The recording's frames with their object masks: an APC scene's ``segm/`` label images
    (``mask_source`` "segm", or "auto" when present), else the recording's own masks. Returns
    (frames, which masks: "segm" or "recording")."""
    from m3_memory.query.eval import apc_segm_masks
    from m3_memory.recording import open_recording

    recording = open_recording(source)
    frames = list(recording)
    segm = mask_source == "segm" or (mask_source == "auto" and recording.format_name == "apc2016"
                                     and (Path(source) / "segm").is_dir())
    if segm:
        for frame, masks in zip(frames, apc_segm_masks(source, frames)):
            frame.masks = masks
    return frames, "segm" if segm else "recording"


@dataclass
class LabelSet:
    """A recording's labels ready to build and score with: its frames, label names, label images
    [H, W] per frame, the label embeddings [k, d], the folder of region-embedding maps, and which
    masks they came from ("segm" or "recording")."""

    source: Path
    frames: list[Frame]
    names: list[str]
    labels: list[np.ndarray]
    embeddings: torch.Tensor
    folder: Path
    masks: str
    cfg: LabelMapConfig


def prepare_labels(source: str | Path, folder: str | Path, label_cfg: LabelMapConfig = LabelMapConfig(),
                   mask_source: str = "auto") -> LabelSet:
    """Read ``source``'s labels and write its region-embedding maps into ``folder``."""
    frames, masks = labeled_frames(source, mask_source)
    names, labels = label_images(frames)
    embeddings = label_embeddings(len(names), label_cfg)
    write_label_maps(folder, frames, labels, embeddings, label_cfg.stride)
    return LabelSet(Path(source), frames, names, labels, embeddings, Path(folder), masks, label_cfg)


def score_memory(memory: Memory, labels: LabelSet, split: str = "test"
                 ) -> tuple[LabelScores, LabelScores, list[tuple[Frame, np.ndarray, np.ndarray]]]:
    """:func:`score_labels` of a memory built from ``labels``' maps, on its ``split`` views."""
    from m3_memory.query.eval import heldout_views

    views = [(labels.frames[v.index], v.camera, labels.labels[v.index],
              region_map(labels.labels[v.index], labels.embeddings, labels.cfg.stride))
             for v in heldout_views(memory, labels.frames, split)]
    return score_labels(memory, "precomputed", views, labels.names, labels.embeddings)


def label_eval(source: str | Path, out: str | Path, config, label_cfg: LabelMapConfig = LabelMapConfig(),
               mask_source: str = "auto", split: str = "test", cache_root: str | Path | None = None,
               show_progress: bool = True, device: str = "auto") -> tuple[LabelScores, LabelScores, dict]:
    """The whole protocol (module doc) on recording ``source``: region-embedding maps into
    ``<out>/features``, a memory built from them with ``config`` (a :class:`TrainConfig`) into
    ``<out>/labels.m3``, scores on its ``split`` views, ``labels.json`` and ``labels.png`` in ``out``.
    Returns (raw maps' scores, memory's scores, the report's ``about``). ``device``: where the
    memory is trained (scoring renders on the CPU)."""
    from m3_memory.memory.artifact import load_memory
    from m3_memory.training.build import build_memory

    out = Path(out)
    labels = prepare_labels(source, out / "features", label_cfg, mask_source)
    start = time.perf_counter()
    report = build_memory(source, out / "labels.m3", model="precomputed", weights=str(labels.folder), config=config,
                          overwrite=True, cache_root=cache_root, show_progress=show_progress, device=device)
    build_seconds = time.perf_counter() - start
    raw, mem, shown = score_memory(load_memory(out / "labels.m3"), labels, split)
    about = label_about(labels, split, len(shown), report, build_seconds)
    about["memory"] = str(out / "labels.m3")
    write_label_report(raw, mem, out, about, shown)
    return raw, mem, about


def label_about(labels: LabelSet, split: str, views: int, report, build_seconds: float) -> dict:
    """What a label report says about its run (``report``: the build's :class:`BuildReport`)."""
    h, w = labels.labels[0].shape
    stride = labels.cfg.stride
    return {"recording": str(labels.source), "masks": labels.masks, "labels": labels.names, "views": views,
            "split": split, "label_maps": {"stride": stride, "dim": labels.cfg.dim, "seed": labels.cfg.seed,
                                           "size": [-(-h // stride), -(-w // stride)]},
            "iterations": report.iterations, "gaussians": report.num_gaussians, "build_seconds": build_seconds,
            "build_heldout": report.final}
