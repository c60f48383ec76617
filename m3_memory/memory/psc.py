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
  algorithm does. Used rows leave the columns those rows are formed against, and are
  reached through the J sets of nearby kept rows instead; with features that have
  dominant directions, a projection onto them rules out most pairs before their full dot
  product (an exact bound, see ``_members_prefiltered``). Cost at most O(N d) per such
  row, memory ``[block, N]``.

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
PROJECTIONS = (32, 64, 96, 128, 192, 256, 384)  # prefilter sizes tried by the cost estimate
BOUND_MARGIN = 1e-4  # the prefilter keeps pairs whose bound is this far below theta (float32 rounding)
RESIDUAL_MARGIN = 1e-5  # added to squared residual norms so rounding never makes them too small
BOUND_COST = 4.0  # multiply-add equivalents of forming and testing one bound entry
COMPACT = 0.75  # the columns are compacted when fewer than this fraction of them is still unused
WITNESS_LIMIT = 0.25  # nearby J sets to check per block, as a fraction of N, before comparing with all rows
PREFILTER_MIN_ROWS = 50_000  # fewer rows: the basis and projection cost more than they save
SAMPLE = 8192  # rows the prefilter's basis and cost estimate are computed from
TILE = 16_384  # stored rows per column tile of the prefilter bounds
GATHER_CHUNK = 65_536  # candidates whose rows are gathered at once
GATHER_COST = 64.0  # a candidate's gathered dot product, relative to a matrix product's multiply-add


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


def psc_fast(R: torch.Tensor, theta: float, rule: str = "strict", chunk: int = 4096, block: int = 64,
             prefilter: int | None = None) -> torch.Tensor:
    """Same kept set as :func:`psc_reference`, without the N x N similarities.

    chunk: rows compared at once against the kept set (cover). block: unused rows whose
    similarity rows are formed at once (strict), memory ``block * N`` floats.
    prefilter (strict): size ``d1`` of a projection onto the features' main directions whose
    similarities plus a residual bound rule out most pairs before their full dot product;
    0 turns it off, None chooses ``d1`` (or off) from a cost estimate on a sample.
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
    return _strict(Rn, theta, block, _projection(Rn, theta) if prefilter is None else
                   (_basis(Rn, prefilter) if prefilter else None))


def _strict(Rn: torch.Tensor, theta: float, block: int, basis: torch.Tensor | None) -> torch.Tensor:
    """The strict rule on normalised rows ``Rn [N, d]``; ``basis [d, d1]`` turns on the
    projection prefilter (see :func:`psc_fast`).

    Rows that are used drop out of the columns that similarity rows are formed against (the
    columns are compacted as they thin out). A used row outside the columns can still make a
    candidate j fail the rule: it lies in ``J_k`` of a kept row k, and then
    ``angle(j, k) <= 2 arccos(theta)``, so only the stored ``J_k`` of such nearby kept rows are
    checked. A block whose nearby ``J_k`` are too many to check this way is compared with all rows.
    """
    n = Rn.shape[0]
    res_all = None
    if basis is not None:
        X_all = Rn @ basis  # [N, d1]
        res_all = _residual(torch.linalg.vector_norm(Rn, dim=1).square_()
                            - torch.linalg.vector_norm(X_all, dim=1).square_())  # [N]
    else:
        X_all = Rn
    cols, X, res = torch.arange(n, device=Rn.device), X_all, res_all  # columns: every row not known to be used
    near_limit = 2.0 * theta * theta - 1.0 - BOUND_MARGIN if theta > 0 else -2.0
    used = torch.zeros(n, dtype=torch.bool, device=Rn.device)
    kept: list[int] = []
    members: list[torch.Tensor] = []  # J of each kept row; together exactly the used rows
    start = 0
    while start < n:
        rows = (~used[start:]).nonzero().squeeze(1)[:block] + start  # next unused rows, in order
        if rows.numel() == 0:
            break
        near = [[] for _ in range(rows.numel())]
        if kept and cols.numel() < n:
            K = torch.tensor(kept, device=Rn.device)
            close = (Rn[rows] @ Rn[K].T) >= near_limit  # [b, t]
            sizes = torch.tensor([m.numel() for m in members], device=Rn.device)
            if int((close.float() @ sizes.float()).sum()) > WITNESS_LIMIT * n:
                cols, X, res = torch.arange(n, device=Rn.device), X_all, res_all
            else:
                near = [close[r].nonzero().squeeze(1).tolist() for r in range(rows.numel())]
        found = (_members(Rn, X, cols, rows, theta) if basis is None else
                 _members_prefiltered(Rn, X_all[rows], res_all[rows], X, res, cols, rows, theta))
        # used only grows, so a row with a used member at the block's start fails whatever comes
        # before it in the block: one gather for the whole block; only the others are visited in order
        counts = torch.tensor([J.numel() for J in found], device=Rn.device)
        hit = torch.zeros(rows.numel(), dtype=torch.long, device=Rn.device).index_add_(
            0, torch.repeat_interleave(torch.arange(rows.numel(), device=Rn.device), counts),
            used[torch.cat(found)].long())  # [b]: used members of each J at the block's start
        for r in (hit == 0).nonzero().squeeze(1).tolist():
            j, J = int(rows[r]), found[r]
            if used[J].any() or _witness(Rn, j, [members[k] for k in near[r]], theta):
                continue
            kept.append(j)
            members.append(J)
            used[J] = True
        start = int(rows[-1]) + 1
        alive = ~used[cols]
        if int(alive.sum()) < COMPACT * cols.numel():
            cols, X = cols[alive], X[alive]
            res = None if res is None else res[alive]
    return torch.tensor(kept, dtype=torch.long, device=Rn.device)


def _witness(Rn: torch.Tensor, j: int, groups: list[torch.Tensor], theta: float) -> bool:
    """True when a row of ``groups`` (index tensors) is within theta of row j."""
    if not groups:
        return False
    W = torch.cat(groups)
    return any(bool((Rn[w] @ Rn[j] >= theta).any()) for w in torch.split(W, GATHER_CHUNK))


def _pairs(Q: torch.Tensor, X: torch.Tensor, limit: float, res_q: torch.Tensor | None = None,
           res_x: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, column) pairs with ``Q X^T (+ res_q res_x^T) >= limit``, grouped by row with
    columns increasing; formed in column tiles so each ``[b, tile]`` block stays in cache."""
    hits = torch.empty(Q.shape[0], X.shape[0], dtype=torch.bool, device=Q.device)  # [b, m]
    for start in range(0, X.shape[0], TILE):
        S = Q @ X[start:start + TILE].T  # [b, tile]
        if res_q is not None:
            S.addr_(res_q, res_x[start:start + TILE])
        torch.ge(S, limit, out=hits[:, start:start + TILE])
    r, c = hits.nonzero(as_tuple=True)  # row-major: grouped by row, columns increasing
    return r, c


def _members(Rn: torch.Tensor, X: torch.Tensor, cols: torch.Tensor, rows: torch.Tensor,
             theta: float) -> list[torch.Tensor]:
    """``J_j`` among the columns ``cols`` (rows ``X`` of ``Rn``), with j itself, for each j in ``rows``."""
    r, c = _pairs(Rn[rows], X, theta)
    found = torch.split(cols[c], torch.bincount(r, minlength=rows.numel()).tolist())
    return [torch.cat([f, rows[k:k + 1]]) for k, f in enumerate(found)]


def _members_prefiltered(Rn: torch.Tensor, Pq: torch.Tensor, res_q: torch.Tensor, P: torch.Tensor,
                         res: torch.Tensor, cols: torch.Tensor, rows: torch.Tensor, theta: float) -> list[torch.Tensor]:
    """``J_j`` among the columns ``cols``, with j itself, for each j in ``rows``, exactly, from
    projections: ``Pq [b, d1]``, ``res_q [b]`` of the rows and ``P [m, d1]``, ``res [m]`` of
    the columns.

    ``x.y = Px.Py + x_perp.y_perp <= Px.Py + |x_perp| |y_perp|`` (Cauchy-Schwarz), so a pair
    whose bound stays below theta (less a margin for rounding) cannot be in ``J_j``; the
    pairs that pass get their full float32 dot product. Cost ``b m d1`` plus the candidates.
    """
    r, c = _pairs(Pq, P, theta - BOUND_MARGIN, res_q, res)
    members = []
    for j, cand in zip(rows.tolist(), torch.split(cols[c], torch.bincount(r, minlength=rows.numel()).tolist())):
        hit = [Rn[part] @ Rn[j] >= theta for part in torch.split(cand, GATHER_CHUNK)]
        members.append(torch.cat([cand[torch.cat(hit)] if hit else cand, torch.tensor([j], device=Rn.device)]))
    return members


def _residual(norm2: torch.Tensor) -> torch.Tensor:
    """Residual norms ``|x - B B^T x|`` from their squares (in place), with a margin for float32
    rounding so that they are never below the true ones."""
    return norm2.clamp_min_(0.0).add_(RESIDUAL_MARGIN).sqrt_()


def _sample_rows(Rn: torch.Tensor, sample: int) -> torch.Tensor:
    """At most ``sample`` rows ``[s, d]`` of ``Rn``, evenly spaced (the same rows on every call)."""
    return Rn[::max(1, Rn.shape[0] // sample)][:sample]


def _basis(Rn: torch.Tensor, d1: int, sample: int = SAMPLE) -> torch.Tensor:
    """Top ``d1`` eigenvectors ``[d, d1]`` of the (uncentred) second moment of a fixed sample of
    rows: the directions that carry most of the dot products."""
    d = Rn.shape[1]
    if not 0 < d1 < d:
        raise InputError("prefilter", f"projection size must be in (0, {d}), got {d1}")
    X = _sample_rows(Rn, sample)  # [s, d]
    _, vecs = torch.linalg.eigh((X.T @ X).double())  # ascending eigenvalues
    return vecs[:, -d1:].flip(1).to(Rn.dtype).contiguous()


def _projection(Rn: torch.Tensor, theta: float, probe: int = 256, sample: int = SAMPLE) -> torch.Tensor | None:
    """The prefilter basis that minimises an estimated cost on a sample, or None when the
    dense similarity rows are cheaper (small d, few rows, so that the basis and the projection
    do not pay for themselves, or features without dominant directions).

    Cost per similarity row, in multiply-adds per stored row: ``d1`` for the projection plus
    ``GATHER_COST * d`` per candidate that passes the bound; dense costs ``d``.
    """
    n, d = Rn.shape
    if d < 64 or n < PREFILTER_MIN_ROWS:
        return None
    basis = _basis(Rn, min(d - 1, max(c for c in PROJECTIONS if c < d)), sample)
    X = _sample_rows(Rn, sample)  # [s, d]
    Q = X[torch.linspace(0, X.shape[0] - 1, probe).long()]  # [probe, d]
    PX, PQ = X @ basis, Q @ basis
    resX, resQ = _residual(1.0 - PX.square().cumsum(1)), _residual(1.0 - PQ.square().cumsum(1))  # [s | probe, d1max]
    best, best_cost = None, float(d)
    for d1 in (c for c in PROJECTIONS if c < d):
        bound = PQ[:, :d1] @ PX[:, :d1].T + resQ[:, d1 - 1, None] * resX[None, :, d1 - 1]  # [probe, s]
        passing = float((bound >= theta - BOUND_MARGIN).float().mean())
        cost = d1 + BOUND_COST + GATHER_COST * passing * d
        if cost < best_cost:
            best, best_cost = d1, cost
    return None if best is None else basis[:, :best].contiguous()


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
