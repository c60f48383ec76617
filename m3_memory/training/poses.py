"""Camera pose refinement: per-view SE(3) corrections learned with the Gaussians (as gsplat's
and nerfstudio's trainers offer), for poses that are only approximately right (odometry,
robot kinematics).

A view's corrected pose is ``T_world_cam @ exp(xi)``: the correction ``xi = (rho, phi)`` (rho
metres, phi an axis-angle in radians, both in the camera's own OpenCV frame) starts at zero and
is optimised by Adam with its own learning rate, so the renderer sees
``viewmat = exp(-xi) @ inv(T_world_cam)``.

Held-out views are scored with their pose refined first (:meth:`m3_memory.training.trainer.Trainer.refine_view`): the trained
Gaussians frozen, only that view's correction optimised on the colour (and depth) loss for a
fixed number of steps, then PSNR, features and depth are measured at the refined pose. That is
the usual protocol for a memory trained on estimated poses, whose frame differs from the given
poses' by the errors the training absorbed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from m3_memory.conventions import motion_size


def se3_exp(xi: torch.Tensor) -> torch.Tensor:
    """Twists xi [..., 6] = (rho metres, phi radians) -> rigid transforms [..., 4, 4] (the
    matrix exponential of the twist, exact at zero)."""
    rho, phi = xi[..., :3], xi[..., 3:]
    zero = torch.zeros_like(phi[..., 0])
    x, y, z = phi.unbind(-1)
    hat = torch.stack([torch.stack([zero, -z, y, rho[..., 0]], -1), torch.stack([z, zero, -x, rho[..., 1]], -1),
                       torch.stack([-y, x, zero, rho[..., 2]], -1), torch.stack([zero, zero, zero, zero], -1)], -2)
    return torch.linalg.matrix_exp(hat)


class PoseCorrections:
    """One learnable twist per named view (``xi`` [V, 6], zeros at the start)."""

    def __init__(self, names: Sequence[str], device: torch.device | str = "cpu"):
        self.index = {name: k for k, name in enumerate(names)}
        self.xi = torch.zeros(len(self.index), 6, device=device, requires_grad=True)

    def __contains__(self, name: str) -> bool:
        return name in self.index

    def view_correction(self, name: str) -> torch.Tensor:
        """``exp(-xi)`` [4, 4] of view ``name``: left-multiplies its world-to-camera matrix."""
        return se3_exp(-self.xi[self.index[name]])

    def corrected(self, name: str, T_world_cam: np.ndarray) -> np.ndarray:
        """The refined pose ``T_world_cam @ exp(xi)`` [4, 4] float64 of view ``name``."""
        E = se3_exp(self.xi[self.index[name]].detach().cpu().double()).numpy()
        return np.asarray(T_world_cam, dtype=np.float64) @ E

    def summary(self) -> dict[str, float]:
        """Size of the corrections: median and largest translation (m) and rotation (deg)."""
        if not self.index:
            return {}
        sizes = np.array([motion_size(se3_exp(x.detach().cpu().double()).numpy()) for x in self.xi])  # [V, 2]
        return {"views": len(self.index), "median_m": float(np.median(sizes[:, 0])), "max_m": float(sizes[:, 0].max()),
                "median_deg": float(np.median(sizes[:, 1])), "max_deg": float(sizes[:, 1].max())}
