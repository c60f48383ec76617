"""The attention trace: which stored components a rendered feature came from, and their source patches."""

import json

import numpy as np
import pytest
import torch
from scipy import ndimage

from m3_memory.cli import main
from m3_memory.memory.artifact import load_memory, save_memory
from m3_memory.memory.attention import memory_attention
from m3_memory.query.camera import Camera
from m3_memory.query.explain import NOT_RECORDED, attention_weights, source_patches, trace_pixel
from m3_memory.recording import open_recording


@pytest.fixture(scope="module")
def memory(built_memory):
    return load_memory(built_memory[0])


@pytest.fixture(scope="module")
def old_memory(built_memory, tmp_path_factory):
    """The built memory written as before the trace: no sources."""
    memory = load_memory(built_memory[0])
    memory.sources = {}
    return save_memory(tmp_path_factory.mktemp("old") / "old.m3", memory)


def test_weights_are_the_attention_that_forms_the_feature(memory):
    q = memory.queries_of("clip")[:5]  # [5, l]
    for row in q:
        w = attention_weights(memory, row[None])  # [t]
        assert abs(float(w.sum()) - 1) < 1e-5
        torch.testing.assert_close(w @ memory.banks["clip"].psc, memory_attention(row[None], memory.banks["clip"])[0],
                                   rtol=1e-4, atol=1e-5)


def test_a_duck_pixel_draws_on_components_from_duck_patches(memory, synth):
    """For a pixel inside the duck in every source view, the top 5 components' attention weight
    comes mostly from components whose source feature-map pixel (a 10x10 image patch) overlaps the
    duck in its frame (the scene's masks). Measured on this 40-iteration memory: 0.87 of the weight,
    while 7 of its 47 components (15 %) overlap the duck."""
    frames = list(open_recording(synth.folder))
    src = memory.sources["clip"]
    cam0 = memory.cameras[0]
    on_duck = np.array([frames[f].masks["yellow bath duck"][t:b, l:r].any() for f, (l, t, r, b) in
                        ((int(src.table[k, 1]), src.patch_box(k, cam0.width, cam0.height)) for k in range(len(src)))])
    fractions = []
    for view, cam in enumerate(memory.cameras):
        duck = ndimage.binary_erosion(frames[view].masks["yellow bath duck"], iterations=2)
        if duck.sum() < 20:
            continue
        vs, us = np.nonzero(duck)
        i = int(np.argmin((vs - vs.mean()) ** 2 + (us - us.mean()) ** 2))  # the pixel nearest the duck's middle
        trace = trace_pixel(memory, Camera.from_view(cam), int(us[i]), int(vs[i]), top=5)
        w = np.array([c.weight for c in trace.components])
        fractions.append(float((w * on_duck[[c.component for c in trace.components]]).sum() / w.sum()))
    assert len(fractions) >= 5
    assert np.mean(fractions) > 0.7 and np.mean(fractions) > 3 * on_duck.mean(), (fractions, on_duck.mean())


def test_patches_are_cropped_from_the_recording(memory):
    frames = list(open_recording(memory.source))
    cam = memory.cameras[0]
    trace = trace_pixel(memory, Camera.from_view(cam), cam.width // 2, cam.height // 2, top=3)
    patches = source_patches(memory, trace, context=1.0, size=20)
    assert len(patches) == 3 and patches[0].shape == (20, 20, 3)
    c = trace.components[0]
    l, t, r, b = c.box
    inner = np.asarray(frames[c.frame].rgb[t:b, l:r], float).mean((0, 1))
    assert np.abs(patches[0][3:-3, 3:-3].reshape(-1, 3).mean(0) - inner).max() < 20  # the patch, inside its outline


def test_explain_writes_the_sheet_and_old_memories_say_not_recorded(built_memory, old_memory, tmp_path, capsys):
    assert main(["query", str(built_memory[0]), "yellow bath duck", "--explain", "--json", "--out", str(tmp_path / "q")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["trace"]["recorded"] and len(out["trace"]["components"]) == 8
    assert str(tmp_path / "q" / "explain.png") in out["files"] and (tmp_path / "q" / "explain.png").stat().st_size > 1000
    old = load_memory(old_memory)
    assert old.sources == {}
    assert main(["query", str(old_memory), "yellow bath duck", "--explain", "--out", str(tmp_path / "o")]) == 0  # still queries
    text = capsys.readouterr().out
    assert f"trace: {NOT_RECORDED}" in text and "found 'yellow bath duck'" in text
