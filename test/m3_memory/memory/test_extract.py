import json

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import load_file

from m3_memory.cli import main
from m3_memory.foundation import load_model
from m3_memory.memory.extract import extract_components, pca_colors
from m3_memory.recording import open_recording


@pytest.fixture(scope="module")
def tiny_dino(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "dino.pth"
    torch.save(timm.create_model("vit_small_patch14_dinov2", depth=2, img_size=56).state_dict(), path)
    return load_model("dinov2", weights=str(path), arch="vit_small_patch14_dinov2", depth=2, img_size=56)


def test_extract_on_the_synthetic_scene_and_cache_reuse(synth, tiny_dino, tmp_path, monkeypatch):
    rec = open_recording(synth.folder)
    s = extract_components(rec, tiny_dino, tmp_path / "out", cache_root=tmp_path / "cache", show_progress=False)
    assert s.frames == 10 and s.train_frames == 8 and s.feature_dim == 384 and 0 < s.kept < s.features
    assert s.compression == pytest.approx(s.features / s.kept)
    saved = load_file(str(tmp_path / "out" / "psc_dinov2.safetensors"))
    assert saved["psc"].shape == (s.kept, 384) and saved["kept"].shape == (s.kept,)
    assert json.loads((tmp_path / "out" / "features_dinov2.json").read_text())["kept"] == s.kept
    assert (tmp_path / "out" / "features_dinov2.png").stat().st_size > 5000
    calls = []
    monkeypatch.setattr(tiny_dino, "encode_frame", lambda *a: calls.append(1))
    again = extract_components(rec, tiny_dino, tmp_path / "out2", cache_root=tmp_path / "cache", show_progress=False)
    assert calls == [] and again.kept == s.kept  # second build reads the cache


def test_extract_on_the_apc_shelf(realdata, tiny_dino, tmp_path):
    rec = open_recording(realdata / "apc2016_realsense_shelf/data/sample/scene-0000")
    s = extract_components(rec, tiny_dino, tmp_path, stride=5, cache_root=tmp_path / "cache", show_progress=False)
    assert s.frames == 3 and s.train_frames == 3 and 0 < s.kept <= s.features and "preview" in s.bank


def test_pca_colors_shape_and_range():
    maps = [torch.randn(4, 5, 16), torch.randn(4, 5, 16)]
    out = pca_colors(maps)
    assert [o.shape for o in out] == [(4, 5, 3), (4, 5, 3)] and out[0].dtype == np.uint8
    assert out[0].max() > 200 and out[0].min() < 50


def test_cli_precomputed_maps(synth, tmp_path, capsys):
    maps = tmp_path / "maps"
    maps.mkdir()
    rng = np.random.default_rng(0)
    labels = rng.normal(size=(6, 32)).astype(np.float32)  # six region embeddings, painted into 4x5 maps
    for i in range(10):
        np.save(maps / f"{i}.npy", labels[rng.integers(0, 6, (4, 5))])
    code = main(["features", str(synth.folder), "--model", "precomputed", "--weights", str(maps), "--name", "seem",
                 "--out", str(tmp_path / "out")])
    assert code == 0
    # the 8 training views of 10 (views 0 and 8 held out, as m3 build does); theta 1.0 (SEEM) keeps
    # each distinct region once
    assert "6 of 160 feature vectors" in capsys.readouterr().out


def test_cli_bad_model_and_stride(synth, tmp_path, capsys):
    assert main(["features", str(synth.folder), "--model", "seem2"]) == 2
    assert "unknown foundation model" in capsys.readouterr().err
    maps = tmp_path / "maps"
    maps.mkdir()
    np.save(maps / "0.npy", np.ones((2, 2, 4), np.float32))
    assert main(["features", str(synth.folder), "--model", "precomputed", "--weights", str(maps), "--stride", "0",
                 "--out", str(tmp_path / "o")]) == 2
    assert "--stride" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
