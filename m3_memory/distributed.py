"""Rank and world size of this process under ``torch.distributed`` (torchrun), and the few
collectives the data preparation needs. Without an initialised process group every helper
acts as the single process of a world of one, so the same code runs under plain ``python``.

Setting the process group up (backend, rendezvous) is the launcher's job; these helpers only
read it.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def active() -> bool:
    """Whether a process group with more than one rank is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if active() else 0


def world_size() -> int:
    """The number of ranks (1 without a process group)."""
    return dist.get_world_size() if active() else 1


def barrier() -> None:
    """Wait for every rank (nothing to wait for without a process group)."""
    if active():
        dist.barrier()


def _wire_device() -> torch.device:
    """Where collective tensors must live: the current CUDA device under NCCL, else the CPU."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def broadcast_long(values: torch.Tensor | None, src: int = 0) -> torch.Tensor:
    """Rank ``src``'s 1-D int64 tensor ``values`` on every rank (its length is sent first, so
    the other ranks pass None). Returns a CPU tensor; without a process group, ``values``."""
    if not active():
        return values
    device = _wire_device()
    size = torch.tensor([values.numel() if rank() == src else 0], dtype=torch.long, device=device)
    dist.broadcast(size, src)
    out = values.to(device, torch.long) if rank() == src else torch.empty(int(size), dtype=torch.long, device=device)
    dist.broadcast(out, src)
    return out.cpu()
