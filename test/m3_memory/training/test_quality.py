"""Slow integration tests: builds of the synthetic scene and of the real APC shelf scene with
the fixture CLIP must clearly beat the untrained memory on held-out views.

Bounds are set from measured runs with margin (see the note at each assert); an untrained
memory is the initialisation itself: Gaussians from RGB-D, random principal queries.
"""

import pytest

from m3_memory.memory.artifact import load_memory
from m3_memory.training.build import build_memory
from m3_memory.training.config import TrainConfig

pytestmark = pytest.mark.slow


def test_synthetic_scene_quality(synth, tmp_path):
    cfg = TrainConfig.fast(iterations=300, max_side=160)
    report = build_memory(synth.folder, tmp_path / "synth.m3", model="clip-fixture", config=cfg,
                          cache_root=tmp_path / "cache", show_progress=False)
    # measured (24 frames, 160 px, 300 it): PSNR 13.6 -> 22.4 dB, feature cosine 0.41 -> 0.92
    assert report.final["psnr"] > report.initial["psnr"] + 5 and report.final["psnr"] > 19
    assert report.final["cos.clip"] > report.initial["cos.clip"] + 0.3 and report.final["cos.clip"] > 0.8
    assert len(load_memory(tmp_path / "synth.m3").gaussians) == report.num_gaussians


def test_apc_shelf_quality(realdata, tmp_path):
    scene = realdata / "apc2016_realsense_shelf" / "data" / "sample" / "scene-0000"
    cfg = TrainConfig.fast(iterations=200, max_side=240)
    report = build_memory(scene, tmp_path / "apc.m3", model="clip-fixture", config=cfg, cache_root=tmp_path / "cache",
                          show_progress=False)
    memory = load_memory(tmp_path / "apc.m3")
    assert [c.split for c in memory.cameras].count("test") == 2  # views 0 and 8 of 15
    # measured with this config: PSNR 13.2 -> 15.6 dB, feature cosine 0.63 -> 0.83 (sparse F200
    # depth, ~26 % valid; the fast preset's 600 iterations at 320 px reach 18.1 dB / 0.90)
    assert report.final["psnr"] > report.initial["psnr"] + 1.5
    assert report.final["cos.clip"] > report.initial["cos.clip"] + 0.12
