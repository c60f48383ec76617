"""Rendering 3D Gaussians with gsplat's conventions: a plain-PyTorch reference on any device
and a fast CPU rasterizer (C++ compositing). The gsplat (CUDA) backend comes with the Build issue.
"""

from m3_memory.render.cpu import rasterize_cpu
from m3_memory.render.reference import gsplat_K, project, quat_to_rotmat, rasterize_reference

__all__ = ["gsplat_K", "project", "quat_to_rotmat", "rasterize_cpu", "rasterize_reference"]
