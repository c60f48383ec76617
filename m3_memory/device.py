"""Where tensors live: the one ``--device`` setting (``auto``, ``cpu``, ``cuda``, ``cuda:N``) of
every command and node, resolved once here.

``auto`` is the first CUDA device when PyTorch sees one, else the CPU. That fallback is warned about
once per process by :func:`warn_cpu_fallback`, which the work (a build's features and training,
feature extraction, a query, an evaluation) calls once its inputs are read, so that a bad input
still ends with its one error line; ``--device cpu`` chooses the CPU without a warning. A CUDA
device that is not there is a one-line :class:`InputError` naming it and what is available (exit 2). Running out of
GPU memory becomes a one-line error naming the settings to lower (:func:`out_of_memory_hint`).
Memories and checkpoints are saved from CPU tensors and loaded with ``map_location``, so a
memory built on CUDA opens on a CPU-only machine and the reverse.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

from m3_memory.errors import InputError

if TYPE_CHECKING:  # torch is imported where a device is resolved, not when a parser is built
    import torch

log = logging.getLogger("m3")

CHOICES_HELP = "auto (CUDA when available, else the CPU), cpu, cuda or cuda:N"
_SPEC = re.compile(r"(auto|cpu|cuda)(?::(\d+))?")
_fallback = {"pending": False, "warned": False}  # auto resolved to the CPU / that was warned about (this process)


def available() -> str:
    """What this machine offers, for messages: ``cpu`` or ``cpu, cuda:0 (NVIDIA H200), ...``."""
    import torch

    names = ["cpu"]
    if torch.cuda.is_available():
        names += [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())]
    return ", ".join(names)


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """``auto`` / ``cpu`` / ``cuda`` / ``cuda:N`` (or a torch.device; None means auto) -> a device
    that exists here. ``cuda`` means ``cuda:0``."""
    import torch

    if isinstance(spec, torch.device):
        spec = str(spec)
    text = "auto" if spec is None else str(spec).strip().lower()
    match = _SPEC.fullmatch(text)
    if match is None or (match.group(1) != "cuda" and match.group(2) is not None):
        raise InputError(f"device {spec}", f"unknown device; use {CHOICES_HELP}")
    kind, index = match.group(1), match.group(2)
    if kind == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", 0)
        _fallback["pending"] = not _fallback["warned"]
        return torch.device("cpu")
    if kind == "cpu":
        return torch.device("cpu")
    index = int(index or 0)
    if not torch.cuda.is_available():
        raise InputError(f"device {spec}", f"CUDA is not available here (PyTorch {torch.__version__}, CUDA build "
                         f"{torch.version.cuda or 'none'}); available: {available()}; use --device cpu or auto")
    if index >= torch.cuda.device_count():
        raise InputError(f"device {spec}", f"no such CUDA device; available: {available()}")
    return torch.device("cuda", index)


def warn_cpu_fallback() -> None:
    """Warn, once per process, that ``--device auto`` resolved to the CPU because PyTorch sees no
    CUDA device (nothing when that did not happen, or when the CPU was asked for)."""
    if not _fallback["pending"]:
        return
    import torch

    _fallback.update(pending=False, warned=True)
    log.warning("no CUDA device is available (PyTorch %s, CUDA build %s), so --device auto computes on the CPU, "
                "where a build takes many times longer; pass --device cpu to choose it without this warning",
                torch.__version__, torch.version.cuda or "none")


def describe_device(device: torch.device) -> str:
    """``cpu (N threads)`` or ``cuda:0 (NVIDIA H200, 139 GiB)`` for the log and reports."""
    import torch

    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{device} ({props.name}, {props.total_memory / 2**30:.0f} GiB)"
    return f"{device} ({torch.get_num_threads()} threads)"


def use_device(spec: str | torch.device | None, what: str) -> torch.device:
    """:func:`resolve_device` and say in the log which device ``what`` (e.g. "build") runs on."""
    device = resolve_device(spec)
    log.info("%s: device %s", what, describe_device(device))
    return device


def add_device_option(parser: argparse.ArgumentParser) -> None:
    """The ``--device`` option every command shares."""
    parser.add_argument("--device", default="auto", help=f"where to compute: {CHOICES_HELP} (default: auto)")


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast for foundation-model inference on CUDA devices that support it; nothing on the
    CPU (fp32, the reference). Measured as a proxy with CPU bf16 autocast: the fixture CLIP's
    patch features keep cosine >= 0.99995 to fp32. Memory attention stays fp32 (it is cheap, and
    its exp(cos / 0.05) amplifies bf16's rounding: 0.7 % relative feature error in the same test)."""
    import torch

    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def out_of_memory_hint(device: torch.device, settings: str) -> Iterator[None]:
    """Turn running out of GPU memory into one line naming the ``settings`` to lower (e.g.
    "--train.max-side, --train.max-gaussians")."""
    import torch

    try:
        yield
    except torch.cuda.OutOfMemoryError:
        free = ""
        if device.type == "cuda":
            torch.cuda.empty_cache()
            free_b, total_b = torch.cuda.mem_get_info(device)
            free = f" ({free_b / 2**30:.1f} of {total_b / 2**30:.0f} GiB free after clean-up)"
        raise InputError(f"device {device}", f"out of GPU memory{free}; lower {settings}, or use --device cpu") from None
