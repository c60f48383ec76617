"""Text relevancy of feature maps, display heatmaps, and the target region.

- cosine: ``cos(f, t)`` between each feature and the text embedding (the paper's grounding score).
- relevancy (LERF / LangSplat): with canonical negatives ``n_i`` ("object", "things", "stuff",
  "texture"), ``min_i softmax(10 [cos(f, t), cos(f, n_i)])[0]``. Since the two-way softmax is a
  sigmoid, this equals ``sigmoid(10 (cos(f, t) - max_i cos(f, n_i)))``: 0.5 means "no closer to
  the text than to the most similar negative".
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from m3_memory.errors import InputError

CANONICAL_NEGATIVES = ("object", "things", "stuff", "texture")
METHODS = ("relevancy", "cosine")
RELEVANCY_SCALE = 10.0  # LERF's softmax scale


def cosine_map(features: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of features [..., d] with one text embedding [d] -> [...]."""
    return F.normalize(features, dim=-1) @ F.normalize(text, dim=-1)


def relevancy_map(features: torch.Tensor, text: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """LERF relevancy of features [..., d] for text [d] against negatives [k, d] -> [...] in (0, 1)."""
    f = F.normalize(features, dim=-1)
    pos = f @ F.normalize(text, dim=-1)  # [...]
    if negatives.shape[0] == 0:
        return torch.sigmoid(RELEVANCY_SCALE * pos)
    neg = (f @ F.normalize(negatives, dim=-1).T).amax(dim=-1)  # [...]
    return torch.sigmoid(RELEVANCY_SCALE * (pos - neg))


def score_map(features: torch.Tensor, text: torch.Tensor, negatives: torch.Tensor, method: str) -> torch.Tensor:
    """Relevancy or cosine [...] of features [..., d] (see the module doc)."""
    if method == "relevancy":
        return relevancy_map(features, text, negatives)
    if method == "cosine":
        return cosine_map(features, text)
    raise InputError(method, f"unknown scoring method; use {' or '.join(METHODS)}")


def display_heatmap(score: np.ndarray, valid: np.ndarray, method: str) -> np.ndarray:
    """Score [H, W] -> float32 [H, W] in [0, 1] for display; 0 where invalid.

    relevancy: ``(r - 0.5) / (max r - 0.5)`` clipped at 0 (LERF shows what beats the negatives);
    cosine: min-max over the valid pixels.
    """
    out = np.zeros(score.shape, dtype=np.float32)
    if not valid.any():
        return out
    s = score[valid]
    lo = 0.5 if method == "relevancy" else float(s.min())
    hi = float(s.max())
    if hi > lo:
        out[valid] = np.clip((s - lo) / (hi - lo), 0.0, 1.0)
    return out


def threshold_value(score: np.ndarray, valid: np.ndarray, threshold: str | float) -> float:
    """The score bound of the region: Otsu's threshold over the valid scores, or the given number."""
    if isinstance(threshold, str):
        if threshold != "otsu":
            raise InputError(threshold, "threshold must be 'otsu' or a number")
        from skimage.filters import threshold_otsu

        s = score[valid]
        return float(threshold_otsu(s)) if s.size and s.max() > s.min() else float("inf")
    return float(threshold)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a bool mask [H, W] (all False when empty)."""
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return np.zeros_like(mask, dtype=bool)
    sizes = np.bincount(labels.ravel())[1:]
    return labels == 1 + int(np.argmax(sizes))


def target_region(score: np.ndarray, valid: np.ndarray, threshold: str | float = "otsu") -> np.ndarray:
    """Bool [H, W]: the largest connected component of valid pixels scoring above the threshold."""
    bound = threshold_value(score, valid, threshold)
    return largest_component(valid & (score > bound))
