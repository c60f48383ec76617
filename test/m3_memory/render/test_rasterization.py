"""The backend-choosing rasterization function; gsplat vs ours where CUDA and gsplat exist."""

import pytest
import torch

from m3_memory.errors import InputError
from m3_memory.render import choose_backend, rasterization
from m3_memory.render.rasterization import means2d_grad

K = torch.tensor([[[50.0, 0, 24.0], [0, 50.0, 16.0], [0, 0, 1]]]).repeat(2, 1, 1)


def scene(device="cpu"):
    g = torch.Generator().manual_seed(0)
    n = 200
    means = torch.randn(n, 3, generator=g) * torch.tensor([0.4, 0.3, 0.2]) + torch.tensor([0, 0, 2.0])
    args = (means, torch.randn(n, 4, generator=g), 0.01 + 0.05 * torch.rand(n, 3, generator=g),
            torch.rand(n, generator=g), torch.rand(n, 5, generator=g))
    views = torch.eye(4).repeat(2, 1, 1)
    views[1, 0, 3] = 0.1
    return tuple(a.to(device) for a in args), views.to(device)


def test_cameras_batch_and_backends_agree():
    args, views = scene()
    assert choose_backend(torch.device("cpu")) in ("cpu", "reference")
    fast, fast_a, meta = rasterization(*args, views, K, 48, 32, render_mode="RGB+ED")
    ref, ref_a, ref_meta = rasterization(*args, views, K, 48, 32, render_mode="RGB+ED", backend="reference")
    assert fast.shape == (2, 32, 48, 6) and fast_a.shape == (2, 32, 48, 1) and ref_meta["backend"] == "reference"
    torch.testing.assert_close(fast_a, ref_a, atol=1e-3, rtol=0)
    torch.testing.assert_close(fast[..., :5], ref[..., :5], atol=1e-3, rtol=0)
    assert not torch.equal(fast[0], fast[1])  # the second camera moved


def test_projected_centre_gradients_agree_between_backends():
    args, views = scene()
    grads, visible = [], []
    for backend in ("cpu", "reference"):
        leaf = [a.clone().requires_grad_(True) for a in args]
        out, _, meta = rasterization(*leaf, views, K, 48, 32, backend=backend)
        out.square().sum().backward()
        grads.append(means2d_grad(meta))
        visible.append(meta["visible"])
        assert meta["radii"].shape == (2, 200, 2) and meta["radii"].dtype == torch.int32
        assert (meta["width"], meta["height"], meta["n_cameras"], meta["gaussian_ids"]) == (48, 32, 2, None)
        torch.testing.assert_close(visible[-1], (meta["radii"] > 0).all(-1))
    assert grads[0].shape == (2, 200, 2) and grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[0], grads[1], atol=1e-3, rtol=1e-3)
    assert torch.equal(visible[0], visible[1])
    assert (grads[0].norm(dim=-1)[~visible[0]] == 0).all()  # nothing off screen gets gradient
    # the gradient is the projected centres': finite differences of the loss in one centre's pixel position
    from m3_memory.render.reference import rasterize_reference

    n = int(grads[1][0].norm(dim=-1).argmax())
    args64 = [a.double() for a in args]
    losses = []
    for step in (0.01, -0.01):
        offset = torch.zeros(200, 2, dtype=torch.float64)
        offset[n, 0] = step
        out, _ = rasterize_reference(*args64, views[0].double(), K[0].double(), 48, 32, expected_depth=False,
                                     info={"offset": offset})
        losses.append(out.square().sum())
    fd = (losses[0] - losses[1]) / 0.02 * 24  # d loss / d u (px), times width / 2 as means2d_grad scales it
    torch.testing.assert_close(grads[1][0, n, 0].double(), fd, rtol=1e-3, atol=1e-4)


def test_bad_arguments():
    args, views = scene()
    with pytest.raises(InputError, match="render mode"):
        rasterization(*args, views, K, 48, 32, render_mode="D")
    with pytest.raises(InputError, match="backend"):
        rasterization(*args, views, K, 48, 32, backend="vulkan")
    with pytest.raises(InputError, match="viewmats"):
        rasterization(*args, views[0], K, 48, 32)


def test_gsplat_agrees_with_ours_on_cuda():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    pytest.importorskip("gsplat")
    args, views = scene("cuda")
    ours, ours_a, _ = rasterization(*args, views, K.cuda(), 48, 32, backend="reference")
    theirs, theirs_a, meta = rasterization(*args, views, K.cuda(), 48, 32)
    assert meta["backend"] == "gsplat"
    torch.testing.assert_close(theirs_a, ours_a, atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(theirs, ours, atol=1e-3, rtol=1e-3)
