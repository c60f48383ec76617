"""Principal scene components: Algorithm 1 of M3 (greedy similarity reduction).

All feature vectors of a scene, ``R [N, d]``, are reduced to the rows kept by a greedy
pass in index order. With cosine similarities ``S = R_hat R_hat^T`` and
``J_j = {i : S[j, i] >= theta}`` (always containing j), two readings of the paper's rule:

- ``strict`` (the authors' code): keep j only if no member of ``J_j`` is already used;
  then mark all of ``J_j`` used. Kept rows have pairwise disjoint ``J`` sets.
- ``cover`` (leader clustering): keep j whenever j itself is unused; mark ``J_j`` used.
  Every row ends within theta of a kept row.

``psc_reference`` is the literal chunked O(N^2 d) algorithm. ``psc_fast`` keeps the
identical set without forming similarities of rows that cannot matter:

- cover: j is unused at its turn iff no earlier kept row k has ``S[k, j] >= theta``
  (marks only ever come from kept rows). So each chunk is compared with the rows kept so
  far (``[chunk, t]``), and the survivors with each other in order. Cost O(N t d).
- strict: a row that is used when its turn comes is skipped by the literal algorithm
  whatever its similarities are, so only rows still unused at the start of their block
  need their similarity row ``S[j, :]``; the used mask is updated exactly as the literal
  algorithm does. Cost O(N d) per such row, memory ``[block, N]``.

Similarities within 1e-6 of theta count as reaching it (float32 rounding: a row's
similarity with itself or a scaled copy may come out as 0.99999994), so theta = 1 merges
identical directions. Both versions compute each similarity as the same float32 dot
product of normalised rows;
a pair whose similarity lies within float32 rounding of theta could in principle be
decided differently by the two (differently shaped matrix products).
"""

from __future__ import annotations

import torch

from m3_memory.errors import InputError

DEFAULT_THRESHOLDS = {"clip": 0.80, "siglip": 0.85, "dinov2": 0.75, "seem": 1.00, "llama3": 1.00, "llamav": 0.60}
DEFAULT_CHUNK = 5000
RULES = ("strict", "cover")
ROUNDING = 1e-6  # similarities within this of theta count as reaching it, so theta = 1 merges equal directions


def _normalised(R: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(R.float(), dim=-1)


def _check(R: torch.Tensor, theta: float, rule: str) -> float:
    """Validate; returns the threshold the comparisons use (theta less float32 rounding)."""
    if R.ndim != 2:
        raise InputError("features", f"must be [N, d], got {list(R.shape)}")
    if rule not in RULES:
        raise InputError(rule, f"unknown PSC rule; use {' or '.join(RULES)}")
    if not 0.0 < theta <= 1.0:
        raise InputError("threshold", f"must be in (0, 1], got {theta}")
    return theta - ROUNDING


def psc_reference(R: torch.Tensor, theta: float, rule: str = "strict", chunk: int = DEFAULT_CHUNK) -> torch.Tensor:
    """Literal Algorithm 1: kept row indices [t] (increasing) of ``R [N, d]``."""
    theta = _check(R, theta, rule)
    Rn = _normalised(R)  # [N, d]
    n = Rn.shape[0]
    used = torch.zeros(n, dtype=torch.bool, device=R.device)
    kept = []
    for start in range(0, n, chunk):
        S = Rn[start:start + chunk] @ Rn.T  # [c, N]
        for r in range(S.shape[0]):
            j = start + r
            if used[j]:
                continue
            J = S[r] >= theta
            J[j] = True
            if rule == "strict" and used[J].any():
                continue
            kept.append(j)
            used |= J
    return torch.tensor(kept, dtype=torch.long, device=R.device)


def _greedy_within(S: torch.Tensor, theta: float) -> torch.Tensor:
    """Leader clustering inside a block: row i kept iff no earlier kept row is within theta."""
    keep = torch.zeros(S.shape[0], dtype=torch.bool, device=S.device)
    blocked = torch.zeros_like(keep)
    for i in range(S.shape[0]):
        if not blocked[i]:
            keep[i] = True
            blocked |= S[i] >= theta
    return keep


def psc_fast(R: torch.Tensor, theta: float, rule: str = "strict", chunk: int = 4096, block: int = 64) -> torch.Tensor:
    """Same kept set as :func:`psc_reference`, without the N x N similarities.

    chunk: rows compared at once against the kept set (cover). block: unused rows whose
    full similarity rows are formed at once (strict), memory ``block * N`` floats.
    """
    theta = _check(R, theta, rule)
    Rn = _normalised(R)  # [N, d]
    n = Rn.shape[0]
    if rule == "cover":
        kept = torch.zeros(0, dtype=torch.long, device=R.device)
        for start in range(0, n, chunk):
            X = Rn[start:start + chunk]  # [c, d]
            if kept.numel():
                free = (X @ Rn[kept].T).amax(dim=1) < theta  # [c]: not covered by any kept row
            else:
                free = torch.ones(X.shape[0], dtype=torch.bool, device=R.device)
            cand = free.nonzero().squeeze(1)
            keep = _greedy_within(X[cand] @ X[cand].T, theta)
            kept = torch.cat([kept, start + cand[keep]])
        return kept
    used = torch.zeros(n, dtype=torch.bool, device=R.device)
    kept = []
    start = 0
    while start < n:
        rows = (~used[start:]).nonzero().squeeze(1)[:block] + start  # next unused rows, in order
        if rows.numel() == 0:
            break
        S = Rn[rows] @ Rn.T  # [b, N]
        for r, j in enumerate(rows.tolist()):
            if used[j]:
                continue
            J = S[r] >= theta
            J[j] = True
            if used[J].any():
                continue
            kept.append(j)
            used |= J
        start = int(rows[-1]) + 1
    return torch.tensor(kept, dtype=torch.long, device=R.device)


def principal_scene_components(features: torch.Tensor, theta: float, rule: str = "strict",
                               chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Feature vectors ``[N, d]`` -> (PSC ``[t, d]`` raw rows, kept indices ``[t]`` into ``features``).

    Rows that are all zero (pixels a model left unlabeled) and are excluded before the
    reduction; non-finite features are an error.
    """
    if features.ndim != 2:
        raise InputError("features", f"must be [N, d], got {list(features.shape)}")
    bad = (~torch.isfinite(features)).any(dim=1)
    if bad.any():
        raise InputError("features", f"{int(bad.sum())} of {features.shape[0]} feature vectors contain NaN or infinity")
    nonzero = (features != 0).any(dim=1).nonzero().squeeze(1)  # [M]
    if nonzero.numel() == 0:
        raise InputError("features", "all feature vectors are zero")
    kept = nonzero[psc_fast(features[nonzero], theta, rule, chunk=chunk)]
    return features[kept], kept
