"""Fast CPU rasterizer: projection in PyTorch autograd, compositing in C++ with OpenMP.

The compositor (``csrc/composite.cpp``) is compiled with the system's g++ on first use into
``$M3_CACHE/kernels`` (default ``~/.cache/m3/kernels``) and called through ctypes on raw
float32 pointers, so it needs no torch headers and builds in seconds. Gaussians are binned
into 16x16 tiles by their bounding box at the Mahalanobis radius where alpha falls to 1/255
(``sqrt(2 ln(255 o))``, at most 3.33 sigma); pixels then walk only their tile's list, front
to back. Backward walks each pixel's list in reverse with per-thread gradient buffers.
Results agree with :func:`m3_memory.render.reference.rasterize_reference`.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
from functools import cache
from pathlib import Path

import torch

from m3_memory.outputs import write_atomic
from m3_memory.render.reference import ALPHA_MIN, project, record_info

SOURCE = Path(__file__).resolve().parent / "csrc" / "composite.cpp"
MAX_EXTENT = 3.33  # sigmas
FLAGS = ("-O3", "-fopenmp", "-shared", "-fPIC", "-std=c++17")
FALLBACK_COST = ("rendering on the CPU falls back to the plain-PyTorch reference rasterizer, which holds every pixel x "
                 "Gaussian pair: about 20 GB per 320x240 training view at 10k Gaussians, and far slower")
log = logging.getLogger("m3")


def kernel_cache() -> Path:
    return Path(os.environ.get("M3_CACHE", Path.home() / ".cache" / "m3")).expanduser() / "kernels"


def compiler() -> str | None:
    """The C++ compiler the compositor is built with (``$CXX``, default g++), or None."""
    return shutil.which(os.environ.get("CXX", "g++"))


class _CompileError(Exception):
    """The compiler's command and its last error lines."""


def compile_library() -> tuple[Path | None, str]:
    """Build (or find, in :func:`kernel_cache`) the compositor's shared library: (path, "") or
    (None, why it could not be built: the compiler's own error lines)."""
    cxx = compiler()
    if cxx is None:
        return None, f"no C++ compiler found ({os.environ.get('CXX', 'g++')} is not on PATH; $CXX names another)"
    digest = hashlib.sha256(SOURCE.read_bytes() + " ".join(FLAGS).encode()).hexdigest()[:16]
    target = kernel_cache() / f"composite-{digest}.so"
    if target.exists():
        return target, ""

    def build(tmp: Path) -> None:
        done = subprocess.run([cxx, *FLAGS, "-o", str(tmp), str(SOURCE)], capture_output=True, text=True)
        if done.returncode != 0:
            lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
            raise _CompileError(f"{cxx} {' '.join(FLAGS)} {SOURCE.name} failed (exit {done.returncode})"
                                + "".join(f" | {line}" for line in lines[-6:]))

    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(target, build)
    except _CompileError as err:
        return None, str(err)
    except OSError as err:
        return None, f"the kernel cache {target.parent} is not writable ({err.strerror}; set M3_CACHE)"
    return target, ""


@cache
def library() -> ctypes.CDLL | None:
    """The compiled compositor, building it on first use; None (and one warning with the
    compiler's error and what the fallback costs) when it cannot be built."""
    target, why = compile_library()
    if target is None:
        log.warning("the fast CPU rasterizer could not be built: %s. So %s. Fix the compiler (a g++ with OpenMP, "
                    "libgomp) and run again; m3 doctor shows the environment", why, FALLBACK_COST)
        return None
    lib = ctypes.CDLL(str(target))
    f, i = ctypes.c_void_p, ctypes.c_int
    lib.m3_composite_forward.argtypes = [i, i, i, i] + [f] * 8
    lib.m3_composite_backward.argtypes = [i, i, i, i] + [f] * 13
    return lib


def _ptr(t: torch.Tensor) -> ctypes.c_void_p:
    return ctypes.c_void_p(t.data_ptr())


class _Composite(torch.autograd.Function):
    """Sorted 2D Gaussians -> (features [H, W, D], alpha [H, W]); all float32 on the CPU."""

    @staticmethod
    def forward(ctx, means2d, conics, opac, feats, extent, width, height):
        lib = library()
        n, d = feats.shape
        out = torch.zeros(height, width, d)
        alpha = torch.zeros(height, width)
        last = torch.zeros(height, width, dtype=torch.int32)
        lib.m3_composite_forward(n, d, width, height, _ptr(means2d), _ptr(conics), _ptr(opac), _ptr(feats),
                                 _ptr(extent), _ptr(out), _ptr(alpha), _ptr(last))
        ctx.save_for_backward(means2d, conics, opac, feats, extent, alpha, last)
        ctx.size = (width, height)
        return out, alpha

    @staticmethod
    def backward(ctx, grad_out, grad_alpha):
        means2d, conics, opac, feats, extent, alpha, last = ctx.saved_tensors
        width, height = ctx.size
        n, d = feats.shape
        grads = [torch.zeros_like(means2d), torch.zeros_like(conics), torch.zeros_like(opac), torch.zeros_like(feats)]
        g_out = grad_out.float().contiguous()
        g_alpha = grad_alpha.float().contiguous()
        library().m3_composite_backward(n, d, width, height, _ptr(means2d), _ptr(conics), _ptr(opac), _ptr(feats),
                                        _ptr(extent), _ptr(alpha), _ptr(last), _ptr(g_out), _ptr(g_alpha),
                                        *(_ptr(g) for g in grads))
        return (*grads, None, None, None)


def rasterize_cpu(means: torch.Tensor, quats: torch.Tensor, scales: torch.Tensor, opacities: torch.Tensor,
                  colors: torch.Tensor, viewmat: torch.Tensor, K: torch.Tensor, width: int, height: int,
                  near: float = 0.01, far: float = 1e10, eps2d: float = 0.3, expected_depth: bool = True,
                  info: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Same arguments and outputs as :func:`~m3_memory.render.reference.rasterize_reference`
    (colors [H, W, D (+1 expected depth)], alphas [H, W, 1]); float32 results on the CPU."""
    if library() is None:
        raise RuntimeError("no C++ compiler (g++) found for the fast CPU rasterizer; use rasterize_reference")
    means2d, conics, depths, valid = project(means.float(), quats.float(), scales.float(), viewmat.float(), K.float(),
                                             width, height, near, far, eps2d)
    means2d = record_info(info, means2d, conics, valid, width, height)
    order = torch.argsort(torch.where(valid, depths, torch.full_like(depths, float("inf"))))
    order = order[valid[order]]  # front to back, culled ones dropped
    con = conics[order]
    conic3 = torch.stack([con[:, 0, 0], con[:, 0, 1], con[:, 1, 1]], dim=-1)  # [n, 3]
    op = opacities.float()[order]
    feats = colors.float()[order]
    if expected_depth:
        feats = torch.cat([feats, depths[order, None]], dim=1)
    with torch.no_grad():
        det = conic3[:, 0] * conic3[:, 2] - conic3[:, 1] ** 2
        cov_xx, cov_yy = conic3[:, 2] / det, conic3[:, 0] / det
        sig = torch.sqrt(2 * torch.log((255 * op).clamp_min(1.0))).clamp(max=MAX_EXTENT)  # Mahalanobis cut-off
        extent = 1.01 * torch.stack([sig * cov_xx.sqrt(), sig * cov_yy.sqrt()], dim=-1)  # [n, 2] px, 1% margin
        extent[op < ALPHA_MIN] = 0
    out, alpha = _Composite.apply(means2d[order].contiguous(), conic3.contiguous(), op.contiguous(),
                                  feats.contiguous(), extent.contiguous(), width, height)
    alpha = alpha[..., None]
    if expected_depth:
        out = torch.cat([out[..., :-1], out[..., -1:] / alpha.clamp_min(1e-10)], dim=-1)
    return out, alpha
