"""Rendering 3D Gaussians with gsplat's conventions: :func:`rasterization` picks gsplat on
CUDA, the fast CPU rasterizer (C++ compositing) on the CPU, or the plain-PyTorch reference.
"""

from m3_memory.render.cpu import rasterize_cpu
from m3_memory.render.rasterization import choose_backend, rasterization
from m3_memory.render.reference import gsplat_K, project, quat_to_rotmat, rasterize_reference

__all__ = ["choose_backend", "gsplat_K", "project", "quat_to_rotmat", "rasterization", "rasterize_cpu",
           "rasterize_reference"]
