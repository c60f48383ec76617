"""Density control by gsplat's strategies, on every device.

``default``: gsplat's :class:`~gsplat.strategy.DefaultStrategy` (3DGS: clone small and split
large Gaussians whose projected centres get large gradients, prune transparent and, after the
first opacity reset, huge ones, reset opacities now and then), with two additions:

- a Gaussian budget (``TrainConfig.max_gaussians``): when more candidates exceed the gradient
  threshold than there is room for, only the largest-gradient ones grow (gsplat has no cap);
- the opacity reset itself: gsplat 1.5.3 tests ``step % reset_every == 0 & step > 0``, which
  Python reads as ``step % reset_every == (0 & step) > 0``, never true, so it never resets.

``mcmc``: gsplat's :class:`~gsplat.strategy.MCMCStrategy` with ``cap_max = max_gaussians``.
Its relocation and noise use gsplat's CUDA kernels, so it needs a CUDA device.

Every per-Gaussian tensor (means, quats, scales, opacities, colour and the principal queries) is
in the strategy's params, so the queries are cloned, split, relocated and pruned with their
Gaussians, and each has its own Adam optimiser (gsplat's convention), whose moments follow.
The rasterizers of every device give the ``info`` the strategies read
(:func:`m3_memory.render.rasterization.rasterization`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from gsplat.strategy import DefaultStrategy, MCMCStrategy
from gsplat.strategy.ops import reset_opa

from m3_memory.errors import InputError
from m3_memory.training.config import TrainConfig

PER_GAUSSIAN = ("means", "quats", "log_scales", "opacity_logits", "sh_dc", "sh_rest", "queries")
GSPLAT_NAME = {"log_scales": "scales", "opacity_logits": "opacities"}  # ours -> gsplat's (log scales, logits)
STRATEGIES = ("default", "mcmc")


@dataclass
class BudgetStrategy(DefaultStrategy):
    """gsplat's DefaultStrategy with a Gaussian budget and a working opacity reset (see the module)."""

    cap: int = 3_000_000  # at most this many Gaussians after growing

    def _grow_gs(self, params, optimizers, state, step) -> tuple[int, int]:
        grads = state["grad2d"] / state["count"].clamp_min(1)
        hot = (grads > self.grow_grad2d).nonzero().squeeze(1)
        room = max(0, self.cap - len(params["means"]))  # a clone adds one Gaussian, a split one net
        if len(hot) > room:
            keep = torch.zeros_like(state["grad2d"], dtype=torch.bool)
            keep[hot[torch.argsort(grads[hot], descending=True)[:room]]] = True
            state["grad2d"] = torch.where(keep, state["grad2d"], torch.zeros_like(state["grad2d"]))
        return super()._grow_gs(params, optimizers, state, step)

    def step_post_backward(self, params, optimizers, state, step, info, packed: bool = False) -> None:
        super().step_post_backward(params, optimizers, state, step, info, packed=packed)
        if step % self.reset_every == 0 and 0 < step < self.refine_stop_iter:
            reset_opa(params=params, optimizers=optimizers, state=state, value=self.prune_opa * 2.0)


class DensityControl:
    """The strategy of ``cfg.strategy`` applied to a trainer's parameter and optimiser dicts
    (keyed by our names; renamed to gsplat's on the way in and out)."""

    def __init__(self, cfg: TrainConfig, extent: float, device: torch.device) -> None:
        if cfg.strategy == "mcmc":
            if device.type != "cuda":
                raise InputError("--train.strategy mcmc", "needs a CUDA device (gsplat's relocation kernel); use "
                                 "--train.strategy default on the CPU")
            self.strategy: Any = MCMCStrategy(cap_max=cfg.max_gaussians, refine_start_iter=cfg.densify_start,
                                              refine_stop_iter=cfg.densify_stop, refine_every=cfg.densify_every,
                                              min_opacity=cfg.prune_opacity)
            self.state = self.strategy.initialize_state()
        else:
            self.strategy = BudgetStrategy(
                prune_opa=cfg.prune_opacity, grow_grad2d=cfg.densify_grad, grow_scale3d=cfg.densify_scale,
                prune_scale3d=0.1, refine_start_iter=cfg.densify_start, refine_stop_iter=cfg.densify_stop,
                reset_every=cfg.opacity_reset_every, refine_every=cfg.densify_every, cap=cfg.max_gaussians)
            self.state = self.strategy.initialize_state(scene_scale=extent)

    @staticmethod
    def _named(params: dict[str, torch.Tensor], optimizers: dict[str, torch.optim.Optimizer]
               ) -> tuple[dict[str, torch.Tensor], dict[str, torch.optim.Optimizer]]:
        names = [k for k in params if k in PER_GAUSSIAN]
        return ({GSPLAT_NAME.get(k, k): params[k] for k in names}, {GSPLAT_NAME.get(k, k): optimizers[k] for k in names})

    @staticmethod
    def _write_back(params: dict[str, torch.Tensor], named: dict[str, torch.Tensor]) -> None:
        ours = {v: k for k, v in GSPLAT_NAME.items()}
        for k, v in named.items():
            params[ours.get(k, k)] = v

    def pre_backward(self, params: dict[str, torch.Tensor], optimizers: dict[str, torch.optim.Optimizer], step: int,
                     info: dict) -> None:
        """Before ``loss.backward()`` (keeps the projected centres' gradient)."""
        named, opts = self._named(params, optimizers)
        self.strategy.step_pre_backward(named, opts, self.state, step, info)

    def post_backward(self, params: dict[str, torch.Tensor], optimizers: dict[str, torch.optim.Optimizer], step: int,
                      info: dict, means_lr: float) -> None:
        """After the optimiser step: grow, prune, reset or relocate; ``params`` gets the new tensors."""
        named, opts = self._named(params, optimizers)
        if isinstance(self.strategy, MCMCStrategy):
            self.strategy.step_post_backward(named, opts, self.state, step, info, lr=means_lr)
        else:
            self.strategy.step_post_backward(named, opts, self.state, step, info,
                                             packed=info.get("gaussian_ids") is not None)
        self._write_back(params, named)

    def state_dict(self) -> dict:
        return {k: v for k, v in self.state.items() if isinstance(v, torch.Tensor) or v is None}

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        self.state.update({k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in state.items()})
