"""A recording's feature maps -> one model's principal scene components (``m3 features``).

Feature maps come from the on-disk cache (computed once per recording and model), are
flattened to ``[n*h*w, d]`` and reduced by Algorithm 1. A PNG shows a few frames beside
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

from m3_memory.errors import InputError
from m3_memory.foundation import FoundationModel, cached_features
from m3_memory.memory.psc import DEFAULT_THRESHOLDS, principal_scene_components
from m3_memory.outputs import write_atomic
from m3_memory.progress import progress
from m3_memory.recording.base import Recording
from m3_memory.recording.inspect import THUMB_WIDTH, contact_sheet


@dataclass
class FeatureSummary:
    """What ``m3 features`` reports. Sizes in vectors; bytes as float32."""

    model: str
    checkpoint: str
    frames: int
    map_hw: tuple[int, int]
    feature_dim: int
    features: int
    kept: int
    threshold: float
    rule: str
    compression: float  # features / kept
    psc_mb: float
    seconds: float

    def lines(self) -> list[str]:
        return [f"{self.model} ({self.checkpoint}): {self.frames} frames, maps {self.map_hw[0]}x{self.map_hw[1]}x"
                f"{self.feature_dim}",
                f"  principal scene components: {self.kept} of {self.features} feature vectors "
                f"({self.compression:.1f}x smaller, {self.psc_mb:.1f} MB), theta {self.threshold}, rule {self.rule}",
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


def default_threshold(model: FoundationModel) -> float:
    """The PSC threshold for ``model``: its own when it states one, else the authors' per name."""
    return model.psc_threshold if model.psc_threshold is not None else DEFAULT_THRESHOLDS.get(model.name, 0.8)


def extract_components(recording: Recording, model: FoundationModel, out_dir: str | Path, threshold: float | None = None,
                       rule: str = "strict", stride: int = 1, png_frames: int = 4, cache_root: str | Path | None = None,
                       show_progress: bool = True) -> FeatureSummary:
    """Compute (or read cached) feature maps of every ``stride``-th frame, reduce them to PSC,
    and write ``<out_dir>/psc_<model>.safetensors``, ``features_<model>.png`` and
    ``features_<model>.json`` (written beside and renamed into place)."""
    from safetensors.torch import save_file

    if stride < 1:
        raise InputError("--stride", f"must be >= 1, got {stride}")
    theta = default_threshold(model) if threshold is None else threshold
    t0 = time.perf_counter()
    frames = (f for i, f in enumerate(recording) if i % stride == 0)
    maps = []
    for fmap in progress(cached_features(model, frames, recording.path, cache_root=cache_root), f"features {model.name}",
                         unit="frame", show=show_progress, leave=False):
        maps.append(fmap)
    if not maps:
        raise InputError(recording.path, "has no frames to extract features from")
    sizes = {tuple(m.shape) for m in maps}
    if len(sizes) > 1:
        raise InputError(recording.path, f"feature maps of different sizes {sorted(sizes)}; frames must share one camera")
    flat = torch.cat([m.reshape(-1, m.shape[-1]) for m in maps])  # [n*h*w, d]
    psc, kept = principal_scene_components(flat, theta, rule)
    summary = FeatureSummary(model.name, model.checkpoint, len(maps), tuple(maps[0].shape[:2]), maps[0].shape[-1],
                             flat.shape[0], psc.shape[0], theta, rule, flat.shape[0] / psc.shape[0],
                             psc.numel() * 4 / 2**20, time.perf_counter() - t0)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    chosen = np.linspace(0, len(maps) - 1, min(png_frames, len(maps))).round().astype(int)
    thumbs = _rgb_thumbs(recording, [int(c) * stride for c in chosen])
    colored = pca_colors([maps[c] for c in chosen])
    rows = [[rgb, np.asarray(Image.fromarray(pca).resize(rgb.shape[1::-1], Image.NEAREST))]
            for rgb, pca in zip(thumbs, colored)]
    black = (0, 0, 0)
    contact_sheet(rows, [f"frame {int(c) * stride}" for c in chosen], out_dir / f"features_{model.name}.png",
                  [("colour |", black), (f"{model.name} features, first 3 principal components as RGB", black)])
    write_atomic(out_dir / f"psc_{model.name}.safetensors",
                 lambda tmp: save_file({"psc": psc.contiguous(), "kept": kept}, str(tmp),
                                       metadata={"model": model.name, "checkpoint": model.checkpoint,
                                                 "threshold": str(theta), "rule": rule}))
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
