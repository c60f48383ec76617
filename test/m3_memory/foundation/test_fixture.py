"""The fixture CLIP: loads through open_clip's real path and finds the synthetic duck."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from m3_memory.foundation.fixture import ARCH, CLASSES, WEIGHTS, load_fixture_clip
from m3_memory.synth import SynthConfig, SyntheticScene


@pytest.fixture(scope="module")
def clip():
    return load_fixture_clip()


@pytest.fixture(scope="module")
def novel_views():
    """A scan the fixture never saw: another radius, height and texture seed."""
    scene = SyntheticScene(SynthConfig(width=160, height=120, n_frames=10, radius=0.8, cam_height=0.38, seed=7))
    return [scene.render(i) for i in range(len(scene))]


def test_loads_through_open_clip_file_path(clip):
    from safetensors.torch import load_file

    assert clip.name == "clip" and clip.checkpoint.startswith(f"{ARCH}:{WEIGHTS.name}@")
    saved = load_file(str(WEIGHTS))
    state = clip.model.state_dict()
    assert all(torch.equal(state[k], v.float()) for k, v in saved.items())
    assert WEIGHTS.stat().st_size < 5 * 2**20  # small enough to live in the repository


def top_patch_hits(clip, frame, text: str) -> bool:
    """Is the best-scoring patch for ``text`` on the duck?"""
    dense = clip.encode_image(frame.rgb)  # [gh, gw, d]
    gh, gw = dense.shape[:2]
    score = F.normalize(dense, dim=-1) @ clip.encode_text([text])[0]  # [gh, gw]
    r, c = np.unravel_index(int(score.argmax()), (gh, gw))
    h, w = frame.size
    cell = frame.masks["yellow bath duck"][int(r * h / gh):int((r + 1) * h / gh) + 1,
                                           int(c * w / gw):int((c + 1) * w / gw) + 1]
    return bool(cell.any())


@pytest.mark.parametrize("text", ["yellow bath duck", "rubber duck"])
def test_text_query_finds_the_duck_in_views_it_never_saw(clip, novel_views, text):
    visible = [f for f in novel_views if f.masks["yellow bath duck"].sum() > 30]
    hits = sum(top_patch_hits(clip, f, text) for f in visible)
    assert len(visible) >= 6 and hits >= 0.8 * len(visible)


def test_other_objects_are_told_apart(clip, novel_views):
    f = novel_views[0]
    dense = F.normalize(clip.encode_image(f.rgb), dim=-1)
    text = clip.encode_text(list(CLASSES))
    gh, gw = dense.shape[:2]
    pred = (dense.reshape(gh * gw, -1) @ text.T).argmax(1).reshape(gh, gw)
    # the patch grid's dominant predictions include the table and several objects
    found = {CLASSES[i] for i in pred.unique().tolist()}
    assert "wooden table" in found and len(found & set(CLASSES[:5])) >= 3


def test_registered_and_usable_by_m3_features(synth, tmp_path, capsys):
    from m3_memory.cli import main
    from m3_memory.foundation import known_models, load_model

    assert "clip-fixture" in known_models() and load_model("clip-fixture").name == "clip"
    assert main(["features", str(synth.folder), "--model", "clip-fixture", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "principal scene components" in out and (tmp_path / "features_clip.png").exists()
