"""A recording's feature maps -> one model's principal scene components (``m3 features``).

Feature maps come from the on-disk cache (computed once per recording and model); the
training views' maps are reduced by :func:`m3_memory.memory.components.scene_components`,
the same function and split a build uses, so ``m3 build`` reads the bank written here. A PNG shows a few frames beside
their feature maps coloured by the first three principal components (PCA over all maps).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from m3_memory import distributed
from m3_memory.device import warn_cpu_fallback
from m3_memory.errors import InputError
from m3_memory.foundation import FoundationModel
from m3_memory.foundation.cache import shared_features
from m3_memory.memory.components import bank_path, default_threshold, scene_components, usable_frames
from m3_memory.outputs import write_atomic
from m3_memory.progress import progress
from m3_memory.recording.base import Recording
from m3_memory.recording.inspect import THUMB_WIDTH, contact_sheet
from m3_memory.split import HELD_OUT_EVERY, split_views


@dataclass
class FeatureSummary:
    """What ``m3 features`` reports. Sizes in vectors; bytes as float32."""

    model: str
    checkpoint: str
    frames: int  # frames encoded (those a build uses; every stride-th of them for a preview)
    train_frames: int  # frames reduced: the training views (all frames of a preview)
    map_hw: tuple[int, int]
    feature_dim: int
    features: int
    kept: int
    threshold: float
    rule: str
    compression: float  # features / kept
    psc_mb: float
    bank: str  # where m3 build finds these components, or why it does not use them
    reused: bool  # read from the feature cache rather than reduced now
    seconds: float

    def lines(self) -> list[str]:
        views = "views" if "preview" in self.bank else "training views"
        return [f"{self.model} ({self.checkpoint}): {self.frames} frames, maps {self.map_hw[0]}x{self.map_hw[1]}x"
                f"{self.feature_dim}",
                f"  principal scene components of {self.train_frames} {views}: {self.kept} of {self.features} "
                f"feature vectors ({self.compression:.1f}x smaller, {self.psc_mb:.1f} MB), theta {self.threshold}, "
                f"rule {self.rule}{' (read from the cache)' if self.reused else ''}",
                f"  bank: {self.bank}",
                f"  {self.seconds:.1f} s"]


def pca_colors(maps: list[torch.Tensor], seed: int = 0) -> list[np.ndarray]:
    """Feature maps ``[h, w, d]`` -> uint8 ``[h, w, 3]`` images of their first three principal
    components, fitted jointly so colours mean the same in every map."""
    flat = torch.cat([m.reshape(-1, m.shape[-1]) for m in maps]).float()  # [M, d]
    g = torch.Generator().manual_seed(seed)
    sample = flat[torch.randperm(flat.shape[0], generator=g)[:20000]]
    mean = sample.mean(0)
    _, _, V = torch.pca_lowrank(sample - mean, q=min(3, *sample.shape), center=False)
    proj = (flat - mean) @ V[:, :3]  # [M, <=3]
    lo, hi = torch.quantile(proj[:20000], 0.01, dim=0), torch.quantile(proj[:20000], 0.99, dim=0)
    rgb = ((proj - lo) / (hi - lo).clamp_min(1e-6)).clamp(0, 1)
    if rgb.shape[1] < 3:
        rgb = torch.cat([rgb, rgb.new_zeros(rgb.shape[0], 3 - rgb.shape[1])], dim=1)
    out, start = [], 0
    for m in maps:
        n = m.shape[0] * m.shape[1]
        out.append((rgb[start:start + n].reshape(m.shape[0], m.shape[1], 3).numpy() * 255).astype(np.uint8))
        start += n
    return out


def extract_components(recording: Recording, model: FoundationModel, out_dir: str | Path, threshold: float | None = None,
                       rule: str = "strict", stride: int = 1, png_frames: int = 4, cache_root: str | Path | None = None,
                       show_progress: bool = True, test_every: int = HELD_OUT_EVERY) -> FeatureSummary:
    """Compute (or read cached) feature maps of the frames a build uses, reduce those of the
    training views (every ``test_every``-th view held out, as ``m3 build`` does) to principal
    scene components with :func:`scene_components`, which stores them in the feature cache where
    a build of this recording, model and split reads them; write
    ``<out_dir>/psc_<model>.safetensors``, ``features_<model>.png`` and ``features_<model>.json``
    (written beside and renamed into place).

    stride > 1: a preview on every ``stride``-th usable frame, all of them reduced; no build
    uses it, so it is not stored in the cache.

    Under ``torch.distributed`` (``torchrun -m m3_memory.cli features``) the ranks share the
    frames (:func:`shared_features`), rank 0 reduces, and only rank 0 writes ``out_dir``; every
    rank returns the summary.
    """
    from safetensors.torch import save_file

    if stride < 1:
        raise InputError("--stride", f"must be >= 1, got {stride}")
    if test_every < 2:
        raise InputError("--test-every", f"must be >= 2, got {test_every}")
    theta = default_threshold(model) if threshold is None else threshold
    t0 = time.perf_counter()
    frames, indices = usable_frames(recording, recording.path, show_progress)
    warn_cpu_fallback()  # the inputs are good: the work starts
    frames, indices = frames[::stride], indices[::stride]
    maps = shared_features(model, frames, indices, recording.path, cache_root, lambda it, total: progress(
        it, f"features {model.name}", total=total, unit="frame", show=show_progress, leave=False))
    sizes = {tuple(m.shape) for m in maps}
    if len(sizes) > 1:
        raise InputError(recording.path, f"feature maps of different sizes {sorted(sizes)}; frames must share one camera")
    train = split_views(len(maps), test_every)[0] if stride == 1 else list(range(len(maps)))
    comp = scene_components(model, [maps[i] for i in train], [indices[i] for i in train], theta, rule, recording.path,
                            cache_root, use_cache=stride == 1)
    bank = (f"{bank_path(model, recording.path, comp.frames, theta, rule, cache_root)} (m3 build of this recording "
            f"with {model.name}, theta {theta}, rule {rule} and --train.test-every {test_every} reads it)" if stride == 1 else
            f"a preview (--stride {stride}), not stored: m3 build reduces its own training views")
    summary = FeatureSummary(model.name, model.checkpoint, len(maps), len(train), tuple(maps[0].shape[:2]),
                             maps[0].shape[-1], comp.features, comp.psc.shape[0], theta, rule,
                             comp.features / comp.psc.shape[0], comp.psc.numel() * 4 / 2**20, bank, comp.reused,
                             time.perf_counter() - t0)
    if not distributed.current().main:
        return summary
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    chosen = np.linspace(0, len(maps) - 1, min(png_frames, len(maps))).round().astype(int)
    thumbs = _rgb_thumbs(recording, [indices[c] for c in chosen])
    colored = pca_colors([maps[c] for c in chosen])
    rows = [[rgb, np.asarray(Image.fromarray(pca).resize(rgb.shape[1::-1], Image.NEAREST))]
            for rgb, pca in zip(thumbs, colored)]
    black = (0, 0, 0)
    contact_sheet(rows, [f"frame {indices[c]}" for c in chosen], out_dir / f"features_{model.name}.png",
                  [("colour |", black), (f"{model.name} features, first 3 principal components as RGB", black)])
    write_atomic(out_dir / f"psc_{model.name}.safetensors",
                 lambda tmp: save_file({"psc": comp.psc.contiguous(), "kept": comp.kept}, str(tmp),
                                       metadata={"model": model.name, "checkpoint": model.checkpoint,
                                                 "threshold": str(theta), "rule": rule,
                                                 "frames": json.dumps(comp.frames)}))
    write_atomic(out_dir / f"features_{model.name}.json", lambda tmp: tmp.write_text(json.dumps(asdict(summary), indent=1)))
    return summary


def _rgb_thumbs(recording: Recording, indices: list[int]) -> list[np.ndarray]:
    wanted, out = set(indices), {}
    for i, f in enumerate(recording):
        if i in wanted:
            h, w = f.size
            out[i] = np.asarray(Image.fromarray(f.rgb).resize((THUMB_WIDTH, round(h * THUMB_WIDTH / w)), Image.BILINEAR))
        if len(out) == len(wanted):
            break
    return [out[i] for i in indices]
