"""m3 eval --labels: region-embedding maps, label IoU by nearest embedding, 3D target error."""

import json

import numpy as np
import pytest
import torch

from m3_memory.cli import main
from m3_memory.errors import InputError
from m3_memory.query.labels import (
    BACKGROUND,
    LabelMapConfig,
    label_embeddings,
    label_eval,
    label_images,
    nearest_label,
    region_map,
    upsampled,
)
from m3_memory.recording import open_recording
from m3_memory.recording.frame import Frame
from m3_memory.training.config import TrainConfig

APC = "apc2016_realsense_shelf/data/sample/scene-0000"


def test_region_map_paints_the_majority_label_per_cell():
    labels = np.zeros((10, 12), np.int64)
    labels[:, 6:] = 2  # right half
    labels[:4, :4] = -1  # unlabeled corner: 16 of the first cell's 16 pixels
    labels[5:, 3] = 1  # a one-pixel-wide stroke: never the majority of a 4x4 cell
    emb = label_embeddings(3, LabelMapConfig(dim=8))
    m = region_map(labels, emb, 4)
    assert m.shape == (3, 3, 8)  # ceil(10 / 4) x ceil(12 / 4)
    assert torch.equal(m[0, 0], torch.zeros(8))  # unlabeled -> zeros
    assert torch.equal(m[1, 0], emb[0]) and torch.equal(m[0, 2], emb[2]) and torch.equal(m[2, 2], emb[2])
    assert not any(torch.equal(m[i, j], emb[1]) for i in range(3) for j in range(3))
    assert torch.allclose(emb.norm(dim=1), torch.ones(3)) and abs(float(emb[0] @ emb[2])) < 0.9


def test_nearest_label_recovers_labels_from_the_upsampled_map():
    rng = np.random.default_rng(0)
    labels = np.zeros((64, 64), np.int64)
    labels[8:40, 16:56] = 1
    labels[40:56, 0:32] = 2  # both regions on the 8-pixel cell grid
    emb = label_embeddings(3, LabelMapConfig())
    pred = nearest_label(upsampled(region_map(labels, emb, 8), 64, 64), emb)
    assert (pred == labels).mean() > 0.99  # bilinear upsampling flips at cell boundaries, rounding region corners
    assert (pred[12:36, 20:52] == 1).all() and (pred[44:52, 4:28] == 2).all()
    labels[44:48, 4:8] = 1  # half a cell in each direction: below the 1/8 map's resolution
    assert (nearest_label(upsampled(region_map(labels, emb, 8), 64, 64), emb)[44:48, 4:8] == 2).all()
    noisy = upsampled(region_map(labels, emb, 8), 64, 64) + 0.05 * torch.from_numpy(rng.standard_normal((64, 64, 64))).float()
    assert (nearest_label(noisy, emb) == labels).mean() > 0.95


def test_label_images_from_masks():
    rgb = np.zeros((4, 5, 3), np.uint8)
    a, b = np.zeros((4, 5), bool), np.zeros((4, 5), bool)
    a[0, 0], b[3, 4] = True, True
    frames = [Frame(rgb, np.zeros((4, 5), np.float32), np.eye(3), None, 0.0, {"mug": a, "duck": b})]
    names, labels = label_images(frames)
    assert names == [BACKGROUND, "duck", "mug"]
    assert labels[0][0, 0] == 2 and labels[0][3, 4] == 1 and (labels[0] == 0).sum() == 18
    with pytest.raises(InputError, match="no object masks"):
        label_images([Frame(rgb, np.zeros((4, 5), np.float32), np.eye(3), None, 0.0)])


def test_cli_eval_labels(synth, tmp_path, capsys):
    """One tiny build (40 iterations) of the synthetic scan through ``m3 eval RECORDING --labels``."""
    out = tmp_path / "e"
    assert main(["eval", str(synth.folder), "--labels", "--iterations", "40", "--label-stride", "4", "--label-dim", "32",
                 "--out", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    data = json.loads((out / "labels.json").read_text())
    assert printed["iterations"] == data["iterations"] == 40 and printed["mIoU_vs_raw"] == data["mIoU_vs_raw"]
    assert data["views"] == 2 and data["labels"][0] == BACKGROUND and len(data["labels"]) == 6
    assert data["label_maps"]["size"] == [30, 40]  # 120x160 at 1/4
    raw, mem = data["rows"]
    assert [raw["name"], mem["name"]] == ["raw region maps", "M3 memory"]
    assert raw["mIoU"] > 0.7 and raw["accuracy"] > 0.95  # the upper bound; small objects lose their 1/4-cell boundaries
    assert 0.15 < mem["mIoU"] <= 1 and mem["accuracy"] > 0.8  # a 40-iteration memory (measured 0.33)
    assert set(mem["iou"]) == set(raw["iou"]) and BACKGROUND in mem["iou"]
    assert data["mIoU_vs_raw"] == pytest.approx(mem["mIoU"] / raw["mIoU"])
    errors = sorted(t["error"] for t in mem["targets"] if t["error"] is not None)
    assert mem["target_error"]["pairs"] == len(errors) >= 6 and mem["target_error"]["median"] == pytest.approx(np.median(errors))
    assert errors[0] < 0.05  # metres: the best found objects are found where they are
    assert (out / "labels.png").stat().st_size > 10_000 and (out / "labels.m3" / "meta.json").is_file()
    assert len(list((out / "features").glob("*.npy"))) == 10
    assert main(["eval", str(synth.folder), "--labels", "--label-stride", "0", "--out", str(tmp_path / "x")]) == 2
    assert main(["eval", str(tmp_path / "none"), "--labels", "--out", str(tmp_path / "x")]) == 2
    assert "m3: error:" in capsys.readouterr().err


@pytest.mark.slow
def test_labels_on_the_real_apc_scene(realdata, tmp_path):
    """The protocol on the APC shelf (15 views, 2 held out, segm/ labels) with a short build at half
    resolution (bench/labels.py measures the fast preset: memory mIoU 0.80 of 0.92 after 150 iterations)."""
    raw, mem, about = label_eval(realdata / APC, tmp_path, TrainConfig.fast(iterations=100, max_side=160),
                                 show_progress=False, cache_root=tmp_path / "cache")
    assert about["masks"] == "segm" and about["views"] == 2 and len(about["labels"]) == 5
    assert about["label_maps"]["size"] == [60, 80]  # 640x480 at 1/8
    assert raw.mIoU > 0.9  # 1/8 maps upsampled lose only boundaries
    assert mem.mIoU > 0.4 and mem.target_summary()["pairs"] >= 6  # 4 objects in both views (measured: all 8 found)
    # the memory's region lifted with the sensor's depth lands on the object (its own depth is what item 2 improves)
    assert mem.target_summary("error_real_depth")["median"] < 0.03
    assert len(list(open_recording(realdata / APC))) == 15
