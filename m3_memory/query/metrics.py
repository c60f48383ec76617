"""The paper's remaining held-out metrics: rendered image quality and text-image retrieval.

Image quality (paper, section 4.1, "as Kerbl et al."): PSNR, SSIM (Gaussian window 11, sigma
1.5, the training loss's) and LPIPS between the rendered and the real colour image of a held-out
view. LPIPS needs the ``lpips`` package and its AlexNet backbone's ImageNet weights in torch's hub
cache; neither is downloaded here, so without them LPIPS is reported as None with the reason
(:func:`lpips_unavailable`).

Retrieval (paper, Table 2, I2T/T2I at 1/5/10): the score of an image for a text is the largest
cosine similarity between the text embedding and any pixel feature of the image. I2T@k: share
of images (with an object in view) where a text of an object in view ranks among the k best of
all texts (the objects plus distractor texts); T2I@k: share of object texts where an image that
shows the object ranks among the k best of all images.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from m3_memory.training.losses import psnr, ssim

LPIPS_BACKBONE = "alexnet-owt-7be5be79.pth"  # torchvision's AlexNet weights, which lpips(net="alex") loads
RANKS = (1, 5, 10)


def lpips_unavailable() -> str | None:
    """Why LPIPS cannot be computed here (None: it can). Never downloads anything."""
    try:
        import lpips  # noqa: F401
    except ImportError:
        return "the lpips package is not installed"
    weights = Path(torch.hub.get_dir()) / "checkpoints" / LPIPS_BACKBONE
    if not weights.is_file():
        return f"its AlexNet backbone weights are not in the local torch hub cache ({weights})"
    return None


_LPIPS = {}


def _lpips(a: torch.Tensor, b: torch.Tensor) -> float:
    if "net" not in _LPIPS:
        import lpips

        _LPIPS["net"] = lpips.LPIPS(net="alex", verbose=False).eval()
    x, y = (t.permute(2, 0, 1)[None] * 2 - 1 for t in (a, b))  # [1, 3, H, W] in [-1, 1]
    with torch.no_grad():
        return float(_LPIPS["net"](x, y).mean())


def image_quality(rendered: np.ndarray, real: np.ndarray, with_lpips: bool) -> dict[str, float | None]:
    """PSNR (dB), SSIM and LPIPS (None unless ``with_lpips``) of uint8 [H, W, 3] images."""
    a = torch.from_numpy(rendered).float() / 255
    b = torch.from_numpy(real).float() / 255
    return {"psnr": psnr(a, b), "ssim": float(ssim(a, b)), "lpips": _lpips(a, b) if with_lpips else None}


def image_scores(features: Sequence[torch.Tensor], texts: torch.Tensor) -> torch.Tensor:
    """Scores [images, texts]: per image [h, w, d] and text [t, d], the largest pixel cosine."""
    t = F.normalize(texts.float(), dim=-1)
    rows = [(F.normalize(f.reshape(-1, f.shape[-1]).float(), dim=-1) @ t.T).amax(0) for f in features]
    return torch.stack(rows)


def recall_at(scores: torch.Tensor, relevant: np.ndarray, ranks: Sequence[int] = RANKS) -> dict[int, float]:
    """Per query row of ``scores`` [q, c], whether a relevant candidate (``relevant`` bool [q, c])
    is among its k best; the share over queries with any relevant candidate, per k."""
    order = torch.argsort(scores, dim=1, descending=True).numpy()
    rel = np.take_along_axis(relevant, order, axis=1)
    asked = relevant.any(1)
    return {k: float(rel[asked, :k].any(1).mean()) if asked.any() else 0.0 for k in ranks}


def retrieval(features: Sequence[torch.Tensor], present: np.ndarray, objects: torch.Tensor,
              distractors: torch.Tensor) -> dict[str, float]:
    """I2T@1/5/10 and T2I@1/5/10 (module doc). features: per image [h, w, d]; present: bool
    [images, objects], which objects each image shows; objects [o, d] and distractors [n, d]: text embeddings."""
    scores = image_scores(features, torch.cat([objects, distractors]))  # [images, o + n]
    o = objects.shape[0]
    i2t = recall_at(scores, np.concatenate([present, np.zeros((len(features), scores.shape[1] - o), bool)], 1))
    t2i = recall_at(scores[:, :o].T.contiguous(), present.T.copy())
    return {**{f"I2T@{k}": v for k, v in i2t.items()}, **{f"T2I@{k}": v for k, v in t2i.items()},
            "images": len(features), "texts": int(scores.shape[1])}
