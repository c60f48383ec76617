"""Rendering 3D Gaussians: gsplat's conventions; a plain-PyTorch reference on any device.

The fast CPU rasterizer and the gsplat (CUDA) backend come with the Build issue.
"""

from m3_memory.render.reference import gsplat_K, project, quat_to_rotmat, rasterize_reference

__all__ = ["gsplat_K", "project", "quat_to_rotmat", "rasterize_reference"]
