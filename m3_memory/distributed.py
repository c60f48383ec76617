"""This process's place in a ``torch.distributed`` launch (torchrun, Slurm) and the collectives
every stage uses, with one error when a peer is lost.

Without a launch everything acts as the single process of a world of one and every collective
is a no-op, so the same code runs under plain ``python``. A collective that fails because
another rank died or stopped answering raises :class:`RankLost` (one line, exit 3), whether it
happens while the ranks share the feature extraction, broadcast the principal scene components
or train. Collectives time out after ``$M3_DIST_TIMEOUT_S`` seconds (default 600).
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from m3_memory.errors import BuildFailed, InputError, first_line

log = logging.getLogger("m3")
TIMEOUT_ENV = "M3_DIST_TIMEOUT_S"  # seconds a collective waits for the other ranks
DEFAULT_TIMEOUT_S = 600.0


class RankLost(BuildFailed):
    """A collective failed: another rank died or stopped answering (exit 3)."""


def launched() -> bool:
    """Whether this process is one rank of a torchrun (or Slurm) launch with more than one rank."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def timeout_s() -> float:
    """``$M3_DIST_TIMEOUT_S`` or 600 s: how long a collective waits for the other ranks."""
    try:
        return max(1.0, float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)))
    except ValueError:
        return DEFAULT_TIMEOUT_S


@dataclass
class Group:
    """This process's place in the launch: ``rank`` of ``world`` ranks (one process: 0 of 1, and
    every collective is a no-op), ``device`` its collective tensors live on (the rank's CUDA
    device under NCCL, else the CPU), ``backend`` (gloo / nccl). ``what`` in every collective
    names the step for the error when a peer is lost."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def main(self) -> bool:
        """Rank 0: reduces the bank, evaluates, shows progress and writes."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def _call(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (RuntimeError, ValueError) as err:  # gloo / NCCL errors: a peer closed, timed out
            raise RankLost(f"rank {self.rank}", f"another rank stopped answering during {what} "
                           f"({first_line(err)})") from None

    def barrier(self, what: str) -> None:
        """Wait for every rank."""
        if self.active:
            self._call(what, dist.barrier)

    def all_reduce(self, t: torch.Tensor, what: str, op=None) -> torch.Tensor:
        """Sum (or ``op``) of ``t`` over the ranks, in place; returns ``t``."""
        if self.active:
            self._call(what, dist.all_reduce, t, op=op or dist.ReduceOp.SUM)
        return t

    def any(self, flag: bool, what: str) -> bool:
        """Whether ``flag`` is true on any rank."""
        if not self.active:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        return bool(self.all_reduce(t, what, dist.ReduceOp.MAX).item() > 0)

    def all_gather(self, t: torch.Tensor, what: str) -> torch.Tensor:
        """The ranks' ``t`` (same shape everywhere) concatenated along dim 0 in rank order."""
        if not self.active:
            return t
        parts = [torch.empty_like(t) for _ in range(self.world)]
        self._call(what, dist.all_gather, parts, t.contiguous())
        return torch.cat(parts)

    def all_gather_object(self, obj, what: str) -> list:
        """Every rank's picklable ``obj``, in rank order."""
        if not self.active:
            return [obj]
        out: list = [None] * self.world
        self._call(what, dist.all_gather_object, out, obj)
        return out

    def broadcast(self, t: torch.Tensor, what: str) -> torch.Tensor:
        """Rank 0's ``t`` on every rank (in place)."""
        if self.active:
            self._call(what, dist.broadcast, t, src=0)
        return t

    def broadcast_object(self, obj, what: str):
        """Rank 0's ``obj`` (picklable) on every rank."""
        if not self.active:
            return obj
        box = [obj if self.main else None]
        self._call(what, dist.broadcast_object_list, box, src=0)
        return box[0]

    def broadcast_long(self, values: torch.Tensor | None, what: str) -> torch.Tensor | None:
        """Rank 0's 1-D int64 tensor ``values`` on every rank (its length is sent first, so the
        other ranks pass None). Returns a CPU tensor; in one process, ``values`` itself."""
        if not self.active:
            return values
        size = torch.tensor([values.numel() if self.main else 0], dtype=torch.long, device=self.device)
        self.broadcast(size, what)
        out = (values.to(self.device, torch.long) if self.main
               else torch.empty(int(size), dtype=torch.long, device=self.device))
        return self.broadcast(out, what).cpu()

    def close(self) -> None:
        if self.active and dist.is_initialized():
            dist.destroy_process_group()


def current() -> Group:
    """The :class:`Group` of the process group this process already belongs to (set up by
    :func:`join` or the caller), or a world of one."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return Group()
    backend = dist.get_backend()
    device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
    return Group(dist.get_rank(), dist.get_world_size(), device, backend)


def join(device: torch.device) -> Group:
    """This process's :class:`Group`: one process without a launch; else join torchrun's
    process group (gloo on the CPU, NCCL on CUDA with ``cuda:LOCAL_RANK``) with the
    :func:`timeout_s` timeout. Returns the group with the device this rank computes on."""
    if not launched():
        return Group(device=device)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise InputError(f"rank {rank}", f"LOCAL_RANK {local} but only {torch.cuda.device_count()} CUDA "
                             "devices here; launch at most one process per GPU")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        try:
            dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s()))
        except (RuntimeError, ValueError) as err:
            raise RankLost(f"rank {rank}", f"could not join the other ranks ({first_line(err)})") from None
    return Group(rank, world, device, backend)
