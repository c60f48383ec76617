"""Text relevancy of feature maps, display heatmaps, and the target region.

- cosine: ``cos(f, t)`` between each feature and the text embedding (the paper's grounding score).
- relevancy (LERF / LangSplat): with canonical negatives ``n_i`` ("object", "things", "stuff",
  "texture"), ``min_i softmax(10 [cos(f, t), cos(f, n_i)])[0]``. Since the two-way softmax is a
  sigmoid, this equals ``sigmoid(10 (cos(f, t) - max_i cos(f, n_i)))``: 0.5 means "no closer to
  the text than to the most similar negative".

Both depend on a feature only through its dot products with the (unit) text and negative
embeddings and its norm. For memory-attention features ``f = a PSC`` (``a`` the softmax weights,
:mod:`m3_memory.memory.attention`), :func:`query_scores` gets them without decoding ``[M, d]``:
``f . x = a (PSC x)`` and ``|f|^2 = |a U S|^2`` (thin SVD of PSC), the latter in two passes: the
leading ``k`` principal components for every query, which bound ``|f|^2`` within
``[h, h + s_(k+1)^2 rho]`` (``rho`` the weights' squared mass outside those components), and the
remaining ones only for queries whose score interval is wider than ``2 tol``. Every score is
the interval's midpoint or exact, so it is within ``tol`` (default 1e-3) of the dense decode's
(plus float32 rounding, ~1e-6); :func:`score_map` on the decoded features stays the reference.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from m3_memory.errors import InputError
from m3_memory.memory.attention import CHUNK_ENTRIES, MemoryBank, attention_chunks, bank_spectrum
from m3_memory.render.cpu import compile_library

METHODS = ("relevancy", "cosine")
RELEVANCY_SCALE = 10.0  # LERF's softmax scale
SCORE_TOL = 1e-3  # query_scores: largest difference to the dense decode's score
SPLIT = 1e-3  # query_scores' first pass takes the principal components with s^2 >= SPLIT * s_1^2
SCORES_SOURCE = Path(__file__).resolve().parent / "csrc" / "scores.cpp"
EXP_FLOOR = 87.0  # the compiled exp clamps its input at -87.3: used only while every logit is above -EXP_FLOOR
log = logging.getLogger("m3")


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


def unit_texts(text: torch.Tensor, negatives: torch.Tensor, method: str) -> torch.Tensor:
    """The unit text embedding and, for relevancy, the unit negatives: [1 + k, d] float64."""
    x = text[None] if method == "cosine" or negatives.shape[0] == 0 else torch.cat([text[None], negatives])
    return F.normalize(x.detach().double(), dim=-1)


def text_columns(bank: MemoryBank, text: torch.Tensor, negatives: torch.Tensor, method: str) -> torch.Tensor:
    """``PSC x`` [t, 1 + k] for the unit text (and, for relevancy, negative) embeddings ``x``: the
    dot product of a decoded feature ``a PSC`` with ``x`` is ``a (PSC x)``. In float32 (the bank's
    own precision): converting a t = 8000, d = 1152 bank to float64 per text cost more than the product."""
    return bank.psc.detach().float() @ unit_texts(text, negatives, method).float().T


def unit_scores(features: torch.Tensor, text: torch.Tensor, negatives: torch.Tensor, method: str) -> torch.Tensor:
    """Scores [M] of unit features [M, d]: ``score_map`` without normalising them again."""
    dots = features @ unit_texts(text, negatives, method).to(features.dtype).T  # [M, 1 + k]
    return score_of_norm(score_numerator(dots), torch.ones(dots.shape[0], dtype=dots.dtype), method)


def score_numerator(dots: torch.Tensor) -> torch.Tensor:
    """From a feature's dot products [M, 1 + k] with the text and negatives (:func:`text_columns`):
    the text's minus the largest negative's [M] (the text's alone when there are no negatives)."""
    return dots[:, 0] - dots[:, 1:].amax(-1) if dots.shape[1] > 1 else dots[:, 0]


def score_of_norm(num: torch.Tensor, norm_sq: torch.Tensor, method: str) -> torch.Tensor:
    """Score [M] of features with text-minus-negative dot product ``num`` [M] (cosine: the text's
    dot product) and squared norm ``norm_sq`` [M] (both in any common scale)."""
    cos = num / norm_sq.clamp_min(1e-30).sqrt()
    return torch.sigmoid(RELEVANCY_SCALE * cos) if method == "relevancy" else cos


def leading_components(bank: MemoryBank, split: float = SPLIT) -> int:
    """How many principal components :func:`query_scores`' first pass takes: those with
    ``s^2 >= split * s_1^2``, or all ``r = min(t, d)`` of them when that is over half (a flat
    spectrum, where one exact pass is cheaper than two)."""
    s2 = bank_spectrum(bank).sv.double().square()
    r = s2.shape[0]
    k = int((s2 >= split * s2[0]).sum()) if r and s2[0] > 0 else r
    return r if k > r // 2 else k


@cache
def scores_library() -> ctypes.CDLL | None:
    """The compiled exp of the attention weights (``csrc/scores.cpp``), built on first use into the
    kernel cache; None where it cannot be built (then torch's exp computes the same)."""
    target, why = compile_library(SCORES_SOURCE)
    if target is None:
        log.info("the compiled attention weights could not be built (%s); scores use torch's exp", why)
        return None
    lib = ctypes.CDLL(str(target))
    lib.m3_exp_rows.argtypes, lib.m3_exp_rows.restype = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p,
                                                          ctypes.c_void_p], ctypes.c_int
    return lib


def attention_weights(queries: torch.Tensor, bank: MemoryBank, chunk: int | None = None
                      ) -> Iterator[tuple[slice, torch.Tensor, torch.Tensor]]:
    """:func:`~m3_memory.memory.attention.attention_chunks`' unnormalised weights ``(rows, e [c, t])``
    with their squared row norms ``|e|^2`` [c]. On the CPU the exponential and the squares are one
    compiled pass over each chunk (:func:`scores_library`: within 2 ulp of torch's exp, tested)
    instead of torch's exp and a norm pass; the logits are the same ``addmm``. Each chunk's tensors
    are overwritten by the next chunk's. Under ``torch.no_grad``."""
    lib = scores_library() if queries.device.type == "cpu" and 2 / bank.temperature < EXP_FLOOR else None
    if lib is None:
        for rows, e in attention_chunks(queries, bank, chunk):
            yield rows, e, e.square().sum(-1)
        return
    spec = bank_spectrum(bank)
    q = queries.reshape(-1, bank.query_dim).float()  # [M, l]
    t = spec.logits_of.shape[1]
    bias = torch.full((1, t), -1.0 / bank.temperature)  # [1, t]
    chunk = chunk or max(256, CHUNK_ENTRIES // t)
    weights, squares = torch.empty(min(chunk, q.shape[0]), t), torch.empty(min(chunk, q.shape[0]))  # reused
    with torch.no_grad():
        for start in range(0, q.shape[0], chunk):
            c = q[start:start + chunk]  # [c, l]
            inv = ((c @ spec.gram) * c).sum(-1, keepdim=True).clamp_min(1e-24).rsqrt()  # 1 / |c W|
            e, e2 = weights[:c.shape[0]], squares[:c.shape[0]]
            torch.addmm(bias, c * inv, spec.logits_of, out=e)
            lib.m3_exp_rows(c.shape[0], t, ctypes.c_void_p(e.data_ptr()), ctypes.c_void_p(e2.data_ptr()))
            yield slice(start, start + c.shape[0]), e, e2


def weight_products(queries: torch.Tensor, bank: MemoryBank, columns: torch.Tensor, chunk: int | None = None
                    ) -> torch.Tensor:
    """``e @ columns`` [M, m] for queries [M, l] and bank-side columns [t, m] (:func:`attention_weights`'
    ``e``): :func:`~m3_memory.memory.attention.attention_products` through the compiled weights."""
    out = torch.empty(queries.reshape(-1, queries.shape[-1]).shape[0], columns.shape[1], device=queries.device)
    for rows, e, _ in attention_weights(queries, bank, chunk):
        torch.mm(e, columns, out=out[rows])
    return out


def query_norms(queries: torch.Tensor, bank: MemoryBank, chunk: int | None = None) -> torch.Tensor:
    """Squared norms [...] of the features decoded from queries [..., l], exactly (``|e U S|^2``), in
    the scale of the unnormalised attention weights ``e`` (:func:`attention_weights`). They do not
    depend on the text: known, they leave :func:`query_scores` only the text's columns."""
    return weight_products(queries, bank, bank_spectrum(bank).factor, chunk).square().sum(-1).reshape(queries.shape[:-1])


def query_scores(queries: torch.Tensor, bank: MemoryBank, text: torch.Tensor, negatives: torch.Tensor, method: str,
                 tol: float = SCORE_TOL, split: float = SPLIT, chunk: int | None = None,
                 norms: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores of rendered queries [..., l] read through ``bank``, without the ``[..., d]`` decode.

    Equal to ``score_map(memory_attention(queries, bank), text, negatives, method)`` within ``tol``
    on every query (see the module doc; ``tol = 0``: exact up to float32 rounding). Returns
    (score [...], exact [...] bool: which queries needed the second pass). Cost per query and bank
    row: ``l + 1 + (negatives) + (leading components)`` multiply-adds and one exp, plus the
    remaining components for the queries of the second pass; independent of d when the bank's
    spectrum decays (real features), as slow as the dense decode on an unstructured bank.
    ``norms`` [...]: the features' squared norms (:func:`query_norms`) when known: then every score
    is exact and costs ``l + 1 + (negatives)`` multiply-adds and one exp per bank row.
    """
    if method not in METHODS:
        raise InputError(method, f"unknown scoring method; use {' or '.join(METHODS)}")
    lead = queries.shape[:-1]
    dots_of = text_columns(bank, text, negatives, method)  # [t, 1 + k]
    if norms is not None:
        num = score_numerator(weight_products(queries, bank, dots_of, chunk))  # [M]
        return score_of_norm(num, norms.reshape(-1), method).reshape(lead), torch.ones(lead, dtype=torch.bool)
    spec = bank_spectrum(bank)
    n_dots, r = dots_of.shape[1], spec.sv.shape[0]
    s2 = spec.sv.double().square()
    k = leading_components(bank, split)
    s_next2 = float(s2[k]) if k < r else 0.0
    inv_sv2 = (1.0 / s2[:k].clamp_min(1e-300)).float()  # [k]
    pad = -(n_dots + k) % 8  # zero columns up to a multiple of 8: BLAS runs 20% faster on [c, t] x [t, 40] than x [t, 37]
    columns = torch.cat([dots_of, spec.factor[:, :k], dots_of.new_zeros(dots_of.shape[0], pad)], dim=1)  # [t, n_dots + k + pad]
    rest = spec.factor[:, k:]  # [t, r - k]
    M = queries.reshape(-1, bank.query_dim).shape[0]
    score, exact = torch.empty(M, device=queries.device), torch.zeros(M, dtype=torch.bool, device=queries.device)
    for rows, e, e2 in attention_weights(queries, bank, chunk):
        prod = e @ columns  # [c, n_dots + k]
        num, proj = score_numerator(prod[:, :n_dots]), prod[:, n_dots:n_dots + k]  # [c], [c, k]
        p2 = proj.square()
        h = p2.sum(-1)  # the leading components' part of |f|^2 (in the scale of e)
        if k == r:
            score[rows] = score_of_norm(num, h, method)
            continue
        # |f|^2 - h <= s_(k+1)^2 * (the weights' squared mass outside the leading components),
        # with room for float32 rounding
        bound = s_next2 * ((e2 - p2 @ inv_sv2).clamp_min(0) + 1e-4 * e2)
        a, b = score_of_norm(num, h, method), score_of_norm(num, h + bound, method)
        score[rows] = (a + b) / 2
        wide = ((a - b).abs() > 2 * tol).nonzero().squeeze(1)  # rows whose interval is too wide: exact norm
        if len(wide):
            h_exact = h[wide] + (e[wide] @ rest).square().sum(-1)
            score[rows][wide] = score_of_norm(num[wide], h_exact, method)
            exact[rows][wide] = True
    return score.reshape(lead), exact.reshape(lead)


def display_heatmap(score: np.ndarray, valid: np.ndarray, floor: float) -> np.ndarray:
    """Score [H, W] -> float32 [H, W] in [0, 1] for display; 0 where invalid or at most ``floor``.

    ``(s - floor) / (max s - floor)`` over the valid pixels, clipped: the scale comes from the
    view's own scores and the bound that decided the answer (the region's threshold), so a found
    target is hot whatever the score range of the text model (LERF's fixed floor of 0.5 hid every
    target of a model whose relevancies stay below 0.5).
    """
    out = np.zeros(score.shape, dtype=np.float32)
    if not valid.any() or not np.isfinite(floor):
        return out
    s = score[valid]
    hi = float(s.max())
    if hi > floor:
        out[valid] = np.clip((s - floor) / (hi - floor), 0.0, 1.0)
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
    return largest_component(valid & (score > threshold_value(score, valid, threshold)))
