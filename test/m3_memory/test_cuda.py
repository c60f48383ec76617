"""The CUDA path end to end (gsplat's kernels, the trainer and queries on the GPU); skipped
without CUDA. The same code runs on the CPU in the other tests with device="cpu"."""

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_gsplat_keeps_the_projected_centres_gradient_and_packed_agrees():
    from m3_memory.render.rasterization import means2d_grad, rasterization

    g = torch.Generator().manual_seed(0)
    n = 500
    means = (torch.randn(n, 3, generator=g) * 0.3 + torch.tensor([0, 0, 2.0])).cuda().requires_grad_(True)
    rest = [torch.randn(n, 4, generator=g).cuda(), (0.01 + 0.03 * torch.rand(n, 3, generator=g)).cuda(),
            torch.rand(n, generator=g).cuda(), torch.rand(n, 8, generator=g).cuda()]
    K = torch.tensor([[[60.0, 0, 32], [0, 60.0, 24], [0, 0, 1]]]).cuda()
    views = torch.eye(4)[None].cuda()
    outs = {}
    for packed in (False, True):
        out, alpha, meta = rasterization(means, *rest, views, K, 64, 48, packed=packed)
        out.square().sum().backward()
        grad = means2d_grad(meta)
        assert meta["backend"] == "gsplat" and grad is not None and grad.abs().sum() > 0
        outs[packed] = (out.detach(), alpha.detach(), meta["visible"])
        means.grad = None
    torch.testing.assert_close(outs[True][0], outs[False][0], atol=1e-4, rtol=1e-4)
    assert torch.equal(outs[True][2], outs[False][2])


@pytest.mark.parametrize("strategy", ["default", "mcmc"])
def test_build_on_cuda_grows_and_loads_on_the_cpu(synth, tmp_path, tiny_build, strategy):
    from m3_memory.memory.artifact import load_memory
    from m3_memory.query.api import QueryConfig, find_in_memory
    from m3_memory.training.build import build_memory
    from m3_memory.training.config import TrainConfig

    cfg = TrainConfig.fast(**{**tiny_build, "strategy": strategy})
    report = build_memory(synth.folder, tmp_path / "gpu.m3", model="clip-fixture", config=cfg, device="cuda",
                          cache_root=tmp_path / "cache", show_progress=False)
    assert report.device.startswith("cuda:0") and report.final["psnr"] > report.initial["psnr"] + 2
    memory = load_memory(tmp_path / "gpu.m3")  # saved from CUDA, read on the CPU
    assert memory.gaussians.means.device.type == "cpu"
    on_cpu = find_in_memory(memory, "yellow bath duck", QueryConfig(device="cpu"))
    on_gpu = find_in_memory(memory, "yellow bath duck", QueryConfig(device="cuda"))
    assert on_cpu.found == on_gpu.found
    if on_cpu.found:
        assert np.linalg.norm(on_cpu.point_world - on_gpu.point_world) < 0.01


def test_query_renders_agree_between_devices(built_memory):
    from m3_memory.memory.artifact import load_memory
    from m3_memory.query.camera import Camera
    from m3_memory.query.render import render_features

    memory = load_memory(built_memory[0])
    camera = Camera.from_view(memory.cameras[0])
    cpu = render_features(memory, camera, device="cpu")
    gpu = render_features(memory, camera, device="cuda")
    assert gpu.features.device.type == "cpu"
    torch.testing.assert_close(gpu.alpha, cpu.alpha, atol=2e-3, rtol=0)
    both = cpu.valid & gpu.valid
    cos = torch.nn.functional.cosine_similarity(gpu.features[both], cpu.features[both], dim=-1)
    assert cos.mean() > 0.999
