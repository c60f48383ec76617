"""The Feature-3DGS-style baseline: same start and budget as a build, a linear decoder instead of
memory attention; it learns, counts its parameters and resumes from its state."""

import copy

import numpy as np
import pytest
import torch
from memories import TINY_BUILD

from m3_memory.errors import InputError
from m3_memory.foundation import load_model
from m3_memory.training.build import prepare
from m3_memory.training.config import TrainConfig
from m3_memory.training.distill import DistillTrainer, train_baseline
from m3_memory.training.trainer import scene_extent


@pytest.fixture(scope="module")
def prep(synth, tmp_path_factory):
    cfg = TrainConfig.fast(**TINY_BUILD)
    return cfg, prepare(synth.folder, cfg, [load_model("clip-fixture")], tmp_path_factory.mktemp("cache"), False)


def test_start_decoder_and_parameter_count(prep):
    cfg, p = prep
    t = DistillTrainer(p.gaussians, {"clip": 32}, cfg, scene_extent(p.train), feature_dim=8)
    n = len(p.gaussians)
    assert t.params["queries"].shape == (n, 8) and t.slices == {"clip": (0, 8)}
    torch.testing.assert_close(t.params["means"], p.gaussians.means)  # the build's start
    assert isinstance(t.decoders["clip"], torch.nn.Linear) and t.decoders["clip"].weight.shape == (32, 8)
    per_gaussian = 3 + 4 + 3 + 1 + 3 + 0 + 8  # means, quats, scales, opacity, colour (degree 0), feature
    assert t.parameter_count() == n * per_gaussian + 8 * 32 + 32
    c = p.test[0]
    f = t.features_at(c.T_world_cam, c.K, *c.size, "clip")
    assert f.shape == (c.size[1], c.size[0], 32) and torch.isfinite(f).all()
    with pytest.raises(InputError, match="feature dimension"):
        DistillTrainer(p.gaussians, {"clip": 32}, cfg, 1.0, feature_dim=0)


def test_training_moves_decoder_and_features_and_resumes(prep):
    cfg, p = prep
    t = DistillTrainer(p.gaussians, {"clip": 32}, cfg, scene_extent(p.train), feature_dim=8)
    before = t.evaluate(p.test)
    w0 = t.decoders["clip"].weight.detach().clone()
    for view in p.train * 3:
        t.step(view)
    after = t.evaluate(p.test)
    assert after["cos.clip"] > before["cos.clip"] + 0.05 and after["l2.clip"] < before["l2.clip"]
    assert (t.decoders["clip"].weight - w0).abs().max() > 1e-3  # the decoder is optimised
    state = copy.deepcopy(t.state_dict())  # as a checkpoint file would hold it (Adam's moments are live tensors)
    again = DistillTrainer(p.gaussians, {"clip": 32}, cfg, scene_extent(p.train), feature_dim=8)
    again.load_state_dict(state)
    c = p.test[0]
    torch.testing.assert_close(again.features_at(c.T_world_cam, c.K, *c.size, "clip"),
                               t.features_at(c.T_world_cam, c.K, *c.size, "clip"))
    view = p.train[0]
    t.step(view)
    again.step(view)  # same Adam moments, same random pixels: the same next step
    torch.testing.assert_close(again.decoders["clip"].weight, t.decoders["clip"].weight)


def test_train_baseline_runs_the_builds_budget(synth, tiny_build, tmp_path):
    cfg = TrainConfig.fast(**{**tiny_build, "iterations": 20})
    trainer, metrics = train_baseline(synth.folder, cfg, [load_model("clip-fixture")], feature_dim=4,
                                      cache_root=tmp_path, show_progress=False)
    assert trainer.iteration == 20 and np.isfinite(metrics["psnr"]) and 0 < metrics["cos.clip"] <= 1
