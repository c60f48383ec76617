"""build_memory and `m3 build` on the small synthetic scan (fixture CLIP, few iterations)."""

import json

import numpy as np
import pytest
import torch

from m3_memory.cli import main
from m3_memory.errors import BuildFailed, InputError
from m3_memory.memory.artifact import load_memory
from m3_memory.robot_pose import T_from_xyz_yaw
from m3_memory.synth import ROBOT_STANCE
from m3_memory.training.build import BuildStopped, build_memory, checkpoint_path, torch_threads
from m3_memory.training.config import TrainConfig


def test_built_memory_is_complete_and_better_than_untrained(built_memory, synth):
    path, report = built_memory
    memory = load_memory(path)
    assert len(memory.gaussians) == report.num_gaussians > 1000 and report.iterations == 40
    assert memory.models[0].name == "clip" and memory.models[0].checkpoint.startswith("m3-fixture-clip")
    assert memory.banks["clip"].psc.shape[1] == memory.models[0].feature_dim
    splits = [c.split for c in memory.cameras]
    assert len(splits) == 10 and splits.count("test") == 2 and memory.cameras[0].split == "test"  # views 0 and 8
    np.testing.assert_array_equal(memory.cameras[3].T_world_cam.shape, (4, 4))
    for name in ("heldout.png", "training_curve.png", "report.json"):
        assert (path / "report" / name).is_file()
    # even 40 iterations must beat the untrained memory on held-out views
    assert report.final["psnr"] > report.initial["psnr"] + 2
    assert report.final["cos.clip"] > report.initial["cos.clip"] + 0.1
    # the depth loss is on by default; the synthetic depth is exact, so geometry gets closer to it
    assert 0 < report.final["depth_median_m"] < report.initial["depth_median_m"]
    assert report.final["depth_median_m"] <= report.final["depth_p90_m"]
    assert not checkpoint_path(path).exists()  # removed once the memory is written
    summary = json.loads((path / "report" / "report.json").read_text())
    assert summary["iterations"] == 40 and summary["final"]["depth_p90_m"] == report.final["depth_p90_m"]
    # the synthetic folder records the B1's stance at the table; the memory carries it
    np.testing.assert_allclose(memory.robot_pose.T_world_base, T_from_xyz_yaw(*ROBOT_STANCE), atol=1e-12)
    assert "synthetic scene stance" in memory.robot_pose.source and report.robot_pose is not None
    assert any(line.startswith("robot pose: base_link at x 0.050 y 0.830 z 0.550 m") for line in report.lines())
    assert memory.scene_frame == "map"  # REP-105: a posed folder names no tf frame, so the memory lives in map


def test_existing_output_is_refused(built_memory, synth):
    path, _ = built_memory
    with pytest.raises(InputError, match="--overwrite"):
        build_memory(synth.folder, path, model="clip-fixture", fast=True)
    assert main(["build", str(synth.folder), "--out", str(path), "--model", "clip-fixture"]) == 2


def test_stop_then_resume_continues_where_it_stopped(synth, tmp_path, tiny_build):
    out = tmp_path / "new" / "folder" / "resumed.m3"  # parents are created
    cfg = TrainConfig.fast(**{**tiny_build, "iterations": 12, "checkpoint_every": 100})
    calls = {"n": 0}

    def stop_after_five():
        calls["n"] += 1
        return calls["n"] > 5

    with pytest.raises(BuildStopped) as stopped:
        build_memory(synth.folder, out, model="clip-fixture", config=cfg, should_stop=stop_after_five,
                     cache_root=tmp_path / "cache", show_progress=False)
    assert stopped.value.iteration == 5 and checkpoint_path(out).is_file() and not out.exists()
    ckpt = torch.load(checkpoint_path(out), weights_only=False)
    assert ckpt["trainer"]["iteration"] == 5
    report = build_memory(synth.folder, out, model="clip-fixture", config=cfg, resume=True,
                          cache_root=tmp_path / "cache", show_progress=False)
    assert report.iterations == 12 and out.is_dir() and not checkpoint_path(out).exists()


def test_resume_refuses_another_config_or_no_checkpoint(synth, tmp_path, tiny_build):
    out = tmp_path / "other.m3"
    cfg = TrainConfig.fast(**{**tiny_build, "iterations": 3})
    with pytest.raises(InputError, match="no checkpoint"):
        build_memory(synth.folder, out, model="clip-fixture", config=cfg, resume=True, show_progress=False)
    with pytest.raises(BuildStopped):
        build_memory(synth.folder, out, model="clip-fixture", config=cfg, should_stop=lambda: True,
                     cache_root=tmp_path / "cache", show_progress=False)
    with pytest.raises(InputError, match="another config"):
        build_memory(synth.folder, out, model="clip-fixture", config=cfg.with_(query_dim=8), resume=True,
                     cache_root=tmp_path / "cache", show_progress=False)


def test_nan_loss_stops_with_the_iteration_and_keeps_the_last_good_checkpoint(synth, tmp_path, tiny_build, monkeypatch):
    import m3_memory.training.trainer as trainer_module

    real, calls = trainer_module.rgb_loss, {"n": 0}

    def nan_on_fifth(*args, **kwargs):  # fault injection: the fifth iteration's loss is NaN
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 5 else loss

    monkeypatch.setattr(trainer_module, "rgb_loss", nan_on_fifth)
    out = tmp_path / "nan.m3"
    cfg = TrainConfig.fast(**{**tiny_build, "iterations": 10, "checkpoint_every": 2})
    with pytest.raises(BuildFailed, match=r"loss became nan at iteration 5; last good checkpoint .* \(iteration 4\)"):
        build_memory(synth.folder, out, model="clip-fixture", config=cfg, cache_root=tmp_path / "cache",
                     show_progress=False)
    assert not out.exists()
    assert torch.load(checkpoint_path(out), weights_only=False)["trainer"]["iteration"] == 4


def test_zero_gaussians_after_pruning_is_an_error(synth, tmp_path, tiny_build):
    cfg = TrainConfig.fast(**{**tiny_build, "iterations": 12, "prune_opacity": 1.0})
    with pytest.raises(BuildFailed, match="every Gaussian was pruned at iteration 20|every Gaussian was pruned"):
        build_memory(synth.folder, tmp_path / "empty.m3", model="clip-fixture", config=cfg.with_(iterations=25),
                     cache_root=tmp_path / "cache", show_progress=False)
    assert not (tmp_path / "empty.m3").exists()


def test_bad_inputs(tmp_path, synth):
    with pytest.raises(InputError, match="does not exist"):
        build_memory(tmp_path / "missing", tmp_path / "x.m3", model="clip-fixture", fast=True)
    with pytest.raises(InputError, match="unknown foundation model"):
        build_memory(synth.folder, tmp_path / "x.m3", model="nosuchmodel", fast=True)
    with pytest.raises(InputError, match="iterations"):
        TrainConfig(iterations=0)
    assert main(["build", str(tmp_path / "missing"), "--out", str(tmp_path / "y.m3"), "--model", "clip-fixture"]) == 2
    assert not (tmp_path / "x.m3").exists() and not (tmp_path / "y.m3").exists()


def test_projection_fixed_by_default_and_learned_on_request(built_memory, synth, tmp_path, tiny_build):
    from m3_memory.memory.attention import MemoryBank

    fixed = load_memory(built_memory[0]).banks["clip"]
    draw = MemoryBank.create("clip", fixed.psc, fixed.query_dim, seed=0).W  # the build's N(0, 1) draw
    torch.testing.assert_close(fixed.W, draw)
    cfg = TrainConfig.fast(**{**tiny_build, "iterations": 5, "learn_projection": True})
    build_memory(synth.folder, tmp_path / "learned.m3", model="clip-fixture", config=cfg,
                 cache_root=tmp_path / "cache", show_progress=False)
    learned = load_memory(tmp_path / "learned.m3")
    assert learned.models[0].learn_projection and learned.banks["clip"].learn_projection
    moved = (learned.banks["clip"].W - draw).abs().max().item()
    assert 1e-4 < moved < 0.1  # five Adam steps of lr 1e-3 move each entry by at most ~5e-3


def test_ctrl_c_sets_the_stop_flag_instead_of_raising():
    import os
    import signal
    import time

    from m3_memory.training.build import _StopFlag

    before = signal.getsignal(signal.SIGINT)
    with _StopFlag(None) as stop:
        assert not stop()
        os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C sends
        time.sleep(0.05)
        assert stop()  # the loop saves a checkpoint and raises BuildStopped at its next check
        with pytest.raises(KeyboardInterrupt):  # a second Ctrl-C gives up at once
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
    assert signal.getsignal(signal.SIGINT) is before


def test_training_sets_torch_threads_and_restores_them():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with torch_threads(0):  # 0: torch's own setting
        assert torch.get_num_threads() == before
    with pytest.raises(InputError):
        TrainConfig(torch_threads=-1)
    assert TrainConfig(torch_threads=2).identity() == TrainConfig().identity()  # a checkpoint resumes with either
