"""One bank per recording: ``m3 features`` and a build reduce the same training views with the
same function, and a build reads the bank ``m3 features`` stored."""

import pytest
import torch
from memories import TINY_BUILD
from safetensors.torch import load_file

from m3_memory.foundation import load_model
from m3_memory.foundation.cache import cache_folder
from m3_memory.memory import components
from m3_memory.memory.components import bank_path, scene_components
from m3_memory.memory.extract import extract_components
from m3_memory.recording import open_recording
from m3_memory.split import HELD_OUT_EVERY, split_views
from m3_memory.training.build import prepare
from m3_memory.training.config import TrainConfig


def test_split_views_holds_out_every_kth_view():
    assert split_views(10, 8) == ([1, 2, 3, 4, 5, 6, 7, 9], [0, 8])
    assert split_views(1, 8) == ([0], [])
    assert HELD_OUT_EVERY == TrainConfig().test_every == TrainConfig.fast().test_every


def _no_reduction(*args, **kwargs):
    raise AssertionError("the bank should have been read from the cache")


def test_features_writes_the_bank_the_build_reads(synth, tmp_path, monkeypatch):
    model = load_model("clip-fixture")
    cfg = TrainConfig.fast(**TINY_BUILD)
    summary = extract_components(open_recording(synth.folder), model, tmp_path / "out", cache_root=tmp_path / "cache",
                                 show_progress=False)
    written = load_file(str(tmp_path / "out" / "psc_clip.safetensors"))
    assert summary.bank.startswith(str(bank_path(model, synth.folder, [1, 2, 3, 4, 5, 6, 7, 9], summary.threshold,
                                                 "strict", tmp_path / "cache")) + " (m3 build")
    # the build path on a fresh cache reduces the same training views to the same bank
    fresh = prepare(synth.folder, cfg, [model], cache_root=tmp_path / "fresh", show_progress=False)
    assert torch.equal(fresh.banks[model.name].psc, written["psc"])
    assert fresh.sources[model.name].column("frame").tolist() == \
        [[1, 2, 3, 4, 5, 6, 7, 9][v - 1 if v < 8 else 7] for v in fresh.sources[model.name].column("view").tolist()]
    # and on the cache m3 features filled it reads that bank instead of reducing again
    monkeypatch.setattr(components, "principal_scene_components", _no_reduction)
    reused = prepare(synth.folder, cfg, [model], cache_root=tmp_path / "cache", show_progress=False)
    assert torch.equal(reused.banks[model.name].psc, written["psc"])
    assert torch.equal(reused.sources[model.name].table, fresh.sources[model.name].table)


def test_a_preview_is_not_stored_and_does_not_shift_the_cached_maps(synth, tmp_path):
    model = load_model("clip-fixture")
    rec = open_recording(synth.folder)
    preview = extract_components(rec, model, tmp_path / "out", stride=3, cache_root=tmp_path / "cache", show_progress=False)
    assert preview.frames == 4 and "preview" in preview.bank and not preview.reused
    folder = cache_folder(model, synth.folder, tmp_path / "cache")
    assert sorted(p.name for p in folder.glob("*.safetensors")) == [f"{i}.safetensors" for i in (0, 3, 6, 9)]
    assert not (folder / "psc").exists()
    full = extract_components(rec, model, tmp_path / "out", cache_root=tmp_path / "cache", show_progress=False)
    fresh = extract_components(rec, model, tmp_path / "out2", cache_root=tmp_path / "fresh", show_progress=False)
    assert (full.kept, full.features) == (fresh.kept, fresh.features)
    assert torch.equal(load_file(str(tmp_path / "out" / "psc_clip.safetensors"))["psc"],
                       load_file(str(tmp_path / "out2" / "psc_clip.safetensors"))["psc"])


def test_a_stored_bank_that_no_longer_fits_the_maps_is_reduced_again(tmp_path, caplog):
    model = load_model("clip-fixture")
    g = torch.Generator().manual_seed(0)
    maps = [torch.randn(3, 4, 8, generator=g) for _ in range(3)]
    first = scene_components(model, maps, [0, 1, 2], 0.5, "strict", "scene", tmp_path)
    again = scene_components(model, maps, [0, 1, 2], 0.5, "strict", "scene", tmp_path)
    assert again.reused and not first.reused and torch.equal(again.kept, first.kept)
    other = scene_components(model, maps, [0, 1, 2], 0.6, "strict", "scene", tmp_path)  # another threshold: own bank
    assert not other.reused
    changed = [m + 1.0 for m in maps]
    with caplog.at_level("WARNING", "m3"):
        redone = scene_components(model, changed, [0, 1, 2], 0.5, "strict", "scene", tmp_path)
    assert not redone.reused and "do not match" in caplog.text
    assert torch.equal(redone.psc, torch.cat([m.reshape(-1, 8) for m in changed])[redone.kept])


def test_map_and_frame_counts_must_agree(tmp_path):
    from m3_memory.errors import InputError

    with pytest.raises(InputError, match="2 feature maps for 3 training views"):
        scene_components(load_model("clip-fixture"), [torch.ones(2, 2, 4)] * 2, [0, 1, 2], 0.5, "strict", "x", tmp_path)
