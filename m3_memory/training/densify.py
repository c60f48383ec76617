"""Adaptive density control (3DGS's strategy, written for any backend): clone small and
split large Gaussians whose projected centres receive large gradients, prune transparent
ones, and reset opacities now and then.

Parameters live in a dict of leaf tensors, each optimised by its own param group of one
Adam optimiser; every change of the Gaussian count is applied to the parameters and the
Adam moments together (new rows start with zero moments).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from m3_memory.render.reference import quat_to_rotmat


@dataclass
class GradStats:
    """Running sum of each Gaussian's projected-centre gradient norm (NDC units) and the
    number of renders it was visible in."""

    total: torch.Tensor  # [N]
    count: torch.Tensor  # [N]

    @classmethod
    def zeros(cls, n: int) -> "GradStats":
        return cls(torch.zeros(n), torch.zeros(n))

    def add(self, grad_ndc: torch.Tensor, visible: torch.Tensor) -> None:
        """grad_ndc [C, N, 2]; visible [C, N] bool."""
        norm = grad_ndc.detach().norm(dim=-1).cpu()  # [C, N]
        vis = visible.cpu()
        self.total += (norm * vis).sum(0)
        self.count += vis.sum(0)

    def mean(self) -> torch.Tensor:
        return self.total / self.count.clamp_min(1)


def _resize(optimizer: torch.optim.Optimizer, params: dict[str, torch.Tensor], keep: torch.Tensor,
            extra: dict[str, torch.Tensor]) -> None:
    """Keep rows ``keep`` [N] bool and append ``extra`` rows, in ``params`` and in Adam's state."""
    for group in optimizer.param_groups:
        name = group["name"]
        if name not in extra:
            continue
        old = group["params"][0]
        new = torch.cat([old.detach()[keep], extra[name].to(old)]).requires_grad_(True)
        state = optimizer.state.pop(old, None)
        if state:
            pad = extra[name].shape[0]
            for key in ("exp_avg", "exp_avg_sq"):
                s = state[key]
                state[key] = torch.cat([s[keep], s.new_zeros((pad, *s.shape[1:]))])
            optimizer.state[new] = state
        group["params"][0] = new
        params[name] = new


PER_GAUSSIAN = ("means", "quats", "log_scales", "opacity_logits", "sh_dc", "sh_rest", "queries")


def per_gaussian_names(params: dict[str, torch.Tensor]) -> list[str]:
    return [k for k in params if k in PER_GAUSSIAN]


def densify_and_prune(optimizer: torch.optim.Optimizer, params: dict[str, torch.Tensor], stats: GradStats,
                      grad_threshold: float, scale_threshold: float, prune_opacity: float, max_gaussians: int,
                      generator: torch.Generator, max_world_scale: float | None = None) -> dict[str, int]:
    """One densification step; returns counts {"cloned", "split", "pruned", "total"}.

    scale_threshold and max_world_scale are in metres (3DGS: 1% and 10% of the scene extent).
    When the budget ``max_gaussians`` would be exceeded, only the largest-gradient
    candidates are densified.
    """
    n = params["means"].shape[0]
    with torch.no_grad():
        grads = stats.mean()
        big = params["log_scales"].exp().max(dim=1).values > scale_threshold
        hot = grads >= grad_threshold
        room = max(0, max_gaussians - n)
        candidates = hot.nonzero().squeeze(1)
        if len(candidates) > room:  # a clone adds one Gaussian, a split two in place of one
            candidates = candidates[torch.argsort(grads[candidates], descending=True)[:room]]
        chosen = torch.zeros(n, dtype=torch.bool)
        chosen[candidates] = True
        clone, split = chosen & ~big, chosen & big
        # split: two samples from each Gaussian, scales shrunk by 1.6; the original is removed
        idx = split.nonzero().squeeze(1).repeat(2)
        scales = params["log_scales"][idx].exp()
        rot = quat_to_rotmat(torch.nn.functional.normalize(params["quats"][idx], dim=-1))
        offset = (rot @ (torch.randn(len(idx), 3, generator=generator) * scales)[..., None])[..., 0]
        extra = {}
        for name in per_gaussian_names(params):
            p = params[name].detach()
            extra[name] = torch.cat([p[clone], p[idx]])
        n_clone = int(clone.sum())
        extra["means"][n_clone:] += offset
        extra["log_scales"][n_clone:] -= torch.log(torch.tensor(1.6))
        opacity = torch.sigmoid(torch.cat([params["opacity_logits"].detach(), extra["opacity_logits"]]))
        keep = torch.cat([~split, torch.ones(len(extra["means"]), dtype=torch.bool)])
        prune = opacity < prune_opacity
        if max_world_scale is not None:
            all_scales = torch.cat([params["log_scales"].detach(), extra["log_scales"]]).exp().max(dim=1).values
            prune |= all_scales > max_world_scale
        keep &= ~prune
    # two steps so Adam's state follows: append, then drop
    _resize(optimizer, params, torch.ones(n, dtype=torch.bool), extra)
    _resize(optimizer, params, keep, {k: params[k][:0].detach() for k in per_gaussian_names(params)})
    return {"cloned": n_clone, "split": int(split.sum()), "pruned": int((~keep).sum()) - int(split.sum()),
            "total": params["means"].shape[0]}


def reset_opacity(optimizer: torch.optim.Optimizer, params: dict[str, torch.Tensor], ceiling: float = 0.01) -> None:
    """Clamp every opacity to at most ``ceiling`` and zero its Adam moments (3DGS's reset)."""
    with torch.no_grad():
        logit = torch.logit(torch.tensor(ceiling))
        params["opacity_logits"].clamp_(max=float(logit))
    state = optimizer.state.get(params["opacity_logits"])
    if state:
        state["exp_avg"].zero_()
        state["exp_avg_sq"].zero_()
