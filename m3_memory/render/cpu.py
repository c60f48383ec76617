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
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch

from m3_memory.outputs import write_atomic
from m3_memory.render.reference import ALPHA_MIN, project, quat_to_rotmat, record_info

SOURCE = Path(__file__).resolve().parent / "csrc" / "composite.cpp"
MAX_EXTENT = 3.33  # sigmas
FLAGS = ("-O3", "-fopenmp", "-shared", "-fPIC", "-std=c++17")
SIMD_FLAGS = ("-mavx2", "-mfma")  # where the CPU has them: the compositor's 8-float vectors in one instruction
FALLBACK_COST = ("rendering on the CPU falls back to the plain-PyTorch reference rasterizer, which holds every pixel x "
                 "Gaussian pair: about 20 GB per 320x240 training view at 10k Gaussians, and far slower")
log = logging.getLogger("m3")


def kernel_cache() -> Path:
    return Path(os.environ.get("M3_CACHE", Path.home() / ".cache" / "m3")).expanduser() / "kernels"


def compiler() -> str | None:
    """The C++ compiler the compositor is built with (``$CXX``, default g++), or None."""
    return shutil.which(os.environ.get("CXX", "g++"))


def flags(source: Path = SOURCE) -> tuple[str, ...]:
    """The compiler flags of ``source``: :data:`FLAGS`, plus :data:`SIMD_FLAGS` for the compositor on
    a CPU with AVX2 (torch's own dispatch test; the library is cached per flags, so another CPU
    builds its own)."""
    simd = source == SOURCE and torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")
    return FLAGS + (SIMD_FLAGS if simd else ())


class _CompileError(Exception):
    """The compiler's command and its last error lines."""


def compile_library(source: Path = SOURCE) -> tuple[Path | None, str]:
    """Build (or find, in :func:`kernel_cache`) the shared library of a C++ ``source`` (default: the
    compositor): (path, "") or (None, why it could not be built: the compiler's own error lines)."""
    cxx = compiler()
    if cxx is None:
        return None, f"no C++ compiler found ({os.environ.get('CXX', 'g++')} is not on PATH; $CXX names another)"
    options = flags(source)
    digest = hashlib.sha256(source.read_bytes() + " ".join(options).encode()).hexdigest()[:16]
    target = kernel_cache() / f"{source.stem}-{digest}.so"
    if target.exists():
        return target, ""

    def build(tmp: Path) -> None:
        done = subprocess.run([cxx, *options, "-o", str(tmp), str(source)], capture_output=True, text=True)
        if done.returncode != 0:
            lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
            raise _CompileError(f"{cxx} {' '.join(options)} {source.name} failed (exit {done.returncode})"
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
        out = torch.empty(height, width, d)  # the compositor writes every pixel
        alpha = torch.empty(height, width)
        last = torch.empty(height, width, dtype=torch.int32)
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
        grads = [torch.empty_like(t) for t in (means2d, conics, opac, feats)]  # written, not accumulated
        g_out = grad_out.float().contiguous()
        g_alpha = grad_alpha.float().contiguous()
        library().m3_composite_backward(n, d, width, height, _ptr(means2d), _ptr(conics), _ptr(opac), _ptr(feats),
                                        _ptr(extent), _ptr(alpha), _ptr(last), _ptr(g_out), _ptr(g_alpha),
                                        *(_ptr(g) for g in grads))
        return (*grads, None, None, None)


def composite_sorted(means2d: torch.Tensor, conic3: torch.Tensor, opacities: torch.Tensor, feats: torch.Tensor,
                     extent: torch.Tensor, width: int, height: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The compositor alone, without gradients, for Gaussians already projected, culled and sorted
    front to back (contiguous float32: centres [n, 2] px, conics [n, 3], opacities [n], features
    [n, D], extents [n, 2] px as :func:`_composite` computes them) -> (features [H, W, D], alpha [H, W])."""
    with torch.no_grad():
        return _Composite.apply(means2d, conic3, opacities, feats, extent, width, height)


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
    conic3 = torch.stack([conics[:, 0, 0], conics[:, 0, 1], conics[:, 1, 1]], dim=-1)  # [N, 3]
    return _composite(means2d, conic3, depths, valid, opacities.float(), colors.float(), width, height, expected_depth)


def _composite(means2d: torch.Tensor, conic3: torch.Tensor, depths: torch.Tensor, valid: torch.Tensor,
               opacities: torch.Tensor, colors: torch.Tensor, width: int, height: int, expected_depth: bool
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Projected Gaussians (centres [N, 2] px, conics [N, 3] as xx, xy, yy, depths [N] m, valid [N])
    -> (colors [H, W, D (+1 expected depth)], alphas [H, W, 1]), front to back through the compositor."""
    order = torch.argsort(torch.where(valid, depths, torch.full_like(depths, float("inf"))))
    order = order[valid[order]]  # front to back, culled ones dropped
    conic3 = conic3[order]
    op = opacities[order]
    feats = colors[order]
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


@dataclass(frozen=True)
class StaticGaussians:
    """What rendering needs of Gaussians that no camera changes, computed once (:meth:`of`) for
    rendering them from many cameras without gradients (a loaded memory's queries): means [N, 3]
    (m), the world-frame 3D covariance ``R S S R^T`` [N, 6] as xx, xy, xz, yy, yz, zz (m^2, float32),
    opacities [N] in [0, 1] and the largest scale [N] (m)."""

    means: torch.Tensor
    cov: torch.Tensor
    opacities: torch.Tensor
    max_scale: torch.Tensor

    @classmethod
    def of(cls, means: torch.Tensor, quats: torch.Tensor, scales: torch.Tensor, opacities: torch.Tensor
           ) -> "StaticGaussians":
        """From means [N, 3], quats [N, 4] wxyz, linear scales [N, 3] (m) and opacities [N] in [0, 1]."""
        with torch.no_grad():
            M = quat_to_rotmat(quats.float()) * scales.float()[:, None, :]  # [N, 3, 3] = R_q S
            c = M @ M.transpose(1, 2)  # [N, 3, 3]
            cov = torch.stack([c[:, 0, 0], c[:, 0, 1], c[:, 0, 2], c[:, 1, 1], c[:, 1, 2], c[:, 2, 2]], dim=-1)
            return cls(means.float().contiguous(), cov.contiguous(), opacities.float().contiguous(),
                       scales.float().amax(dim=1))

    def subset(self, index: torch.Tensor) -> "StaticGaussians":
        return StaticGaussians(self.means[index], self.cov[index], self.opacities[index], self.max_scale[index])


def project_static(g: StaticGaussians, viewmat: torch.Tensor, K: torch.Tensor, width: int, height: int,
                   near: float = 0.01, far: float = 1e10, eps2d: float = 0.3
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`~m3_memory.render.reference.project` from the kept 3D covariances, without gradients:
    (means2d [N, 2] px, conics [N, 3] as xx, xy, yy, depths [N] m, valid [N] bool). The same formulas
    (gsplat's clamp of x/z and y/z, ``eps2d``), written per component instead of as batched 3x3
    products: ``cov2d = (J R) Sigma (J R)^T``, the Jacobian's two rows applied to R's rows first."""
    with torch.no_grad():
        R, t = viewmat[:3, :3].float(), viewmat[:3, 3].float()
        p = g.means @ R.T + t  # [N, 3] camera frame
        x, y, z = p.unbind(-1)
        fx, fy, cx, cy = (float(v) for v in (K[0, 0], K[1, 1], K[0, 2], K[1, 2]))
        tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
        lim_x_pos, lim_x_neg = (width - cx) / fx + 0.3 * tan_x, cx / fx + 0.3 * tan_x
        lim_y_pos, lim_y_neg = (height - cy) / fy + 0.3 * tan_y, cy / fy + 0.3 * tan_y
        z_safe = torch.where(z > near, z, torch.ones_like(z))
        inv_z = 1 / z_safe
        tx = (x * inv_z).clamp(-lim_x_neg, lim_x_pos)  # x / z clamped (gsplat's tx / z)
        ty = (y * inv_z).clamp(-lim_y_neg, lim_y_pos)
        # rows of J R: J = [[fx/z, 0, -fx tx/z^2], [0, fy/z, -fy ty/z^2]] with tx, ty the clamped x, y
        a = (fx * inv_z)[:, None]  # [N, 1]
        u = a * (R[0] - tx[:, None] * R[2])  # [N, 3] first row of J R
        v = (fy * inv_z)[:, None] * (R[1] - ty[:, None] * R[2])  # [N, 3] second row
        xx, xy, xz, yy, yz, zz = g.cov.unbind(-1)

        def sigma(w: torch.Tensor) -> torch.Tensor:  # Sigma w, [N, 3]
            w0, w1, w2 = w.unbind(-1)
            return torch.stack([xx * w0 + xy * w1 + xz * w2, xy * w0 + yy * w1 + yz * w2, xz * w0 + yz * w1 + zz * w2], -1)

        su = sigma(u)
        c00 = (u * su).sum(-1) + eps2d
        c01 = (v * su).sum(-1)
        c11 = (v * sigma(v)).sum(-1) + eps2d
        det = c00 * c11 - c01 * c01
        valid = (z > near) & (z < far) & (det > 0)
        inv_det = 1 / torch.where(valid, det, torch.ones_like(det))
        conic3 = torch.stack([c11 * inv_det, -c01 * inv_det, c00 * inv_det], dim=-1)  # [N, 3]
        means2d = torch.stack([fx * x * inv_z + cx, fy * y * inv_z + cy], dim=-1)
        return means2d, conic3, z, valid


def rasterize_static(g: StaticGaussians, colors: torch.Tensor, viewmat: torch.Tensor, K: torch.Tensor, width: int,
                     height: int, near: float = 0.01, far: float = 1e10, eps2d: float = 0.3,
                     expected_depth: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`rasterize_cpu` of Gaussians whose camera-independent part is kept (:class:`StaticGaussians`),
    without gradients: only the projection (:func:`project_static`) and the compositing run per camera.
    colors [N, D]; viewmat [4, 4] world-to-camera; K [3, 3] (gsplat's pixel convention) ->
    (colors [H, W, D (+1 expected depth)], alphas [H, W, 1]); agrees with :func:`rasterize_cpu` to
    float32 rounding (tested)."""
    if library() is None:
        raise RuntimeError("no C++ compiler (g++) found for the fast CPU rasterizer; use rasterize_reference")
    means2d, conic3, depths, valid = project_static(g, viewmat, K, width, height, near, far, eps2d)
    with torch.no_grad():
        return _composite(means2d, conic3, depths, valid, g.opacities, colors.float(), width, height, expected_depth)
