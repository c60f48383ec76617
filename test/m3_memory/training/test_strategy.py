"""Density control by gsplat's strategies: queries follow their Gaussians, Adam moments stay
aligned, the budget holds, opacities are reset; the CPU rasterizer's info drives it."""

import pytest
import torch

from m3_memory.errors import InputError
from m3_memory.render.rasterization import rasterization
from m3_memory.training.config import TrainConfig
from m3_memory.training.strategy import DensityControl

CPU = torch.device("cpu")
CFG = TrainConfig.fast(densify_start=0, densify_stop=1000, densify_every=10, densify_grad=2e-4, densify_scale=0.01,
                       prune_opacity=0.005, opacity_reset_every=500)


def make(n=6):
    params = {"means": torch.arange(n * 3.0).reshape(n, 3), "quats": torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
              "log_scales": torch.log(torch.tensor([0.001, 0.001, 0.001, 0.5, 0.5, 0.001]))[:n, None].repeat(1, 3),
              "opacity_logits": torch.tensor([2.0, 2.0, 2.0, 2.0, 2.0, -9.0])[:n],
              "sh_dc": torch.zeros(n, 3), "sh_rest": torch.zeros(n, 0, 3), "queries": torch.arange(n * 2.0).reshape(n, 2)}
    params = {k: v.requires_grad_(True) for k, v in params.items()}
    opts = {k: torch.optim.Adam([{"params": [v], "lr": 0.01, "name": k}]) for k, v in params.items()}
    sum(v.sum() for v in params.values()).backward()
    for o in opts.values():
        o.step()  # creates Adam moments
    return params, opts


def info_with_grad(grad_px):
    """gsplat's info for one 2x2 camera whose projected centres got ``grad_px`` [N] (along x, in
    NDC units after the strategy's width/2 scaling)."""
    n = len(grad_px)
    means2d = torch.zeros(1, n, 2, requires_grad=True)
    means2d.grad = torch.stack([torch.as_tensor(grad_px, dtype=torch.float32), torch.zeros(n)], -1)[None]
    return {"means2d": means2d, "radii": torch.ones(1, n, 2, dtype=torch.int32), "width": 2, "height": 2,
            "n_cameras": 1, "gaussian_ids": None}


def test_clone_split_prune_keep_queries_and_adam_state_aligned():
    params, opts = make()
    control = DensityControl(CFG, extent=1.0, device=CPU)
    control.post_backward(params, opts, 10, info_with_grad([1e-3, 0, 0, 1e-3, 0, 0]), means_lr=1e-4)
    # Gaussian 0 is small and hot -> cloned; 3 is large and hot -> split in two (removed); 5 is transparent -> pruned
    q = params["queries"].detach()
    rows = sorted(round(r) for r in q[:, 0].tolist())  # identity of each row (one Adam step moved them by 0.01)
    assert rows == [0, 0, 2, 4, 6, 6, 8]
    halves = params["log_scales"].detach()[(q[:, 0] - 6).abs() < 0.5]
    torch.testing.assert_close(halves.exp(), torch.full((2, 3), 0.5 * 0.99 / 1.6), rtol=0.02, atol=0)
    for name, p in params.items():
        assert opts[name].param_groups[0]["params"][0] is p and p.shape[0] == 7
        if name != "sh_rest":  # no elements: Adam keeps no moments worth checking
            assert opts[name].state[p]["exp_avg"].shape == p.shape
    m = opts["queries"].state[params["queries"]]["exp_avg"]
    moved = (m.abs().sum(1) > 0).sum()
    assert moved == 4  # the kept originals 0, 1, 2, 4 keep their moments; the clone and the halves start at zero


def test_budget_limits_growth_to_the_largest_gradients():
    params, opts = make()
    control = DensityControl(CFG.with_(max_gaussians=7), extent=1.0, device=CPU)
    control.post_backward(params, opts, 10, info_with_grad([1e-3, 2e-3, 5e-3, 0, 0, 0]), means_lr=1e-4)
    rows = sorted(round(r) for r in params["queries"].detach()[:, 0].tolist())
    assert rows == [0, 2, 4, 4, 6, 8]  # room for one more (7 - 6): the hottest (2) is cloned; 5 is pruned


def test_opacities_are_reset_every_reset_every_iterations():
    params, opts = make()
    control = DensityControl(CFG, extent=1.0, device=CPU)
    control.post_backward(params, opts, 499, info_with_grad([0] * 6), means_lr=1e-4)
    assert torch.sigmoid(params["opacity_logits"]).max() > 0.5
    control.post_backward(params, opts, 500, info_with_grad([0] * 6), means_lr=1e-4)
    assert torch.sigmoid(params["opacity_logits"]).max() <= 0.01 + 1e-6
    assert opts["opacity_logits"].state[params["opacity_logits"]]["exp_avg"].abs().sum() == 0


def test_mcmc_needs_cuda():
    with pytest.raises(InputError, match="--train.strategy mcmc: needs a CUDA device"):
        DensityControl(CFG.with_(strategy="mcmc"), extent=1.0, device=CPU)
    with pytest.raises(InputError, match="training option strategy"):
        CFG.with_(strategy="adc")


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_cpu_rasterizer_info_drives_the_default_strategy(backend):
    g = torch.Generator().manual_seed(0)
    n = 150
    params = {"means": torch.randn(n, 3, generator=g) * torch.tensor([0.3, 0.2, 0.1]) + torch.tensor([0, 0, 2.0]),
              "quats": torch.randn(n, 4, generator=g), "log_scales": torch.full((n, 3), -4.0),
              "opacity_logits": torch.randn(n, generator=g), "sh_dc": torch.rand(n, 3, generator=g),
              "sh_rest": torch.zeros(n, 0, 3), "queries": torch.randn(n, 4, generator=g)}
    params = {k: v.requires_grad_(True) for k, v in params.items()}
    opts = {k: torch.optim.Adam([{"params": [v], "lr": 1e-3, "name": k}]) for k, v in params.items()}
    control = DensityControl(CFG.with_(densify_grad=1e-6, densify_every=5), extent=1.0, device=CPU)
    K = torch.tensor([[[40.0, 0, 16], [0, 40.0, 12], [0, 0, 1]]])
    for step in range(1, 6):
        colors = torch.cat([params["sh_dc"], params["queries"]], 1)
        out, _, info = rasterization(params["means"], params["quats"], params["log_scales"].exp(),
                                     torch.sigmoid(params["opacity_logits"]), colors, torch.eye(4)[None], K, 32, 24,
                                     backend=backend)
        control.pre_backward(params, opts, step, info)
        out.square().mean().backward()
        for o in opts.values():
            o.step()
        control.post_backward(params, opts, step, info, means_lr=1e-4)
        if step < 5:
            assert control.state["count"].sum() > 0 and control.state["grad2d"].sum() > 0
    assert params["means"].shape[0] > n and params["queries"].shape == (params["means"].shape[0], 4)
