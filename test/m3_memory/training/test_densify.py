import torch

from m3_memory.training.densify import GradStats, densify_and_prune, reset_opacity


def make(n=6):
    params = {"means": torch.arange(n * 3.0).reshape(n, 3), "quats": torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
              "log_scales": torch.log(torch.tensor([0.001, 0.001, 0.001, 0.5, 0.5, 0.001]))[:n, None].repeat(1, 3),
              "opacity_logits": torch.tensor([2.0, 2.0, 2.0, 2.0, 2.0, -9.0])[:n],
              "sh_dc": torch.zeros(n, 3), "sh_rest": torch.zeros(n, 0, 3), "queries": torch.arange(n * 2.0).reshape(n, 2)}
    params = {k: v.requires_grad_(True) for k, v in params.items()}
    opt = torch.optim.Adam([{"params": [v], "lr": 0.01, "name": k} for k, v in params.items()])
    sum(v.sum() for v in params.values()).backward()
    opt.step()  # creates Adam moments
    return params, opt


def test_clone_split_prune_keep_adam_state_aligned():
    params, opt = make()
    stats = GradStats(torch.tensor([1e-3, 0, 0, 1e-3, 0, 0]), torch.ones(6))
    out = densify_and_prune(opt, params, stats, grad_threshold=2e-4, scale_threshold=0.01, prune_opacity=0.005,
                            max_gaussians=100, generator=torch.Generator().manual_seed(0))
    # Gaussian 0 is small and hot -> cloned; 3 is large and hot -> split in two (removed); 5 is transparent -> pruned
    assert out == {"cloned": 1, "split": 1, "pruned": 1, "total": 7}
    q = params["queries"].detach()
    rows = [round(r) for r in q[:, 0].tolist()]  # identity of each row (one Adam step moved them by 0.01)
    assert sorted(rows) == [0, 0, 2, 4, 6, 6, 8]  # 0 cloned, 3 (queries 6) split in two, 5 (queries 10) pruned
    halves = params["log_scales"].detach()[torch.tensor(rows) == 6]
    torch.testing.assert_close(halves.exp(), torch.full((2, 3), 0.5 * 0.99 / 1.6), rtol=0.02, atol=0)
    for group in opt.param_groups:
        p = group["params"][0]
        assert p is params[group["name"]] and opt.state[p]["exp_avg"].shape == p.shape
    # new rows start with zero moments, kept rows keep theirs
    m = opt.state[params["queries"]]["exp_avg"]
    assert (m[:4].abs().sum(1) > 0).all() and (m[4:] == 0).all()


def test_budget_limits_growth():
    params, opt = make()
    stats = GradStats(torch.ones(6) * 1e-3, torch.ones(6))
    out = densify_and_prune(opt, params, stats, 2e-4, 0.01, 0.0, max_gaussians=7, generator=torch.Generator())
    assert out["cloned"] + out["split"] == 1


def test_reset_opacity():
    params, opt = make()
    reset_opacity(opt, params, 0.01)
    assert torch.sigmoid(params["opacity_logits"]).max() <= 0.0100001
    assert (opt.state[params["opacity_logits"]]["exp_avg"] == 0).all()
