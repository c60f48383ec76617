import json

import numpy as np
import pytest
import torch

from m3_memory.errors import InputError
from m3_memory.memory.artifact import META, TENSORS, load_memory, save_memory
from m3_memory.memory.trace import COLUMNS, ComponentSources, sources_of_rows
from test_artifact import make_memory


def test_rows_map_to_view_frame_and_pixel():
    shapes = [(2, 3), (4, 5)]  # flattened maps: rows 0..5 then 6..25
    src = sources_of_rows(torch.tensor([0, 5, 6, 13, 25]), shapes, views=[1, 3], frames=[2, 7])
    assert src.table.tolist() == [[1, 2, 0, 0, 2, 3], [1, 2, 1, 2, 2, 3], [3, 7, 0, 0, 4, 5], [3, 7, 1, 2, 4, 5],
                                  [3, 7, 3, 4, 4, 5]]
    assert src.patch_box(3, 100, 40) == (40, 10, 60, 20)  # col 2 of 5 over 100 px, row 1 of 4 over 40 px
    with pytest.raises(InputError):
        sources_of_rows(torch.tensor([26]), shapes, [1, 3], [2, 7])


def with_trace(seed=0):
    mem = make_memory(seed=seed)
    for name, bank in mem.banks.items():
        t = bank.psc.shape[0]
        mem.sources[name] = sources_of_rows(torch.arange(t) * 3, [(8, 10), (8, 10)], [0, 1], [0, 8])
    return mem


def test_trace_round_trips_and_is_versioned(tmp_path):
    mem = with_trace()
    back = load_memory(save_memory(tmp_path / "scene.m3", mem))
    assert set(back.sources) == {"clip", "dinov2"}
    torch.testing.assert_close(back.sources["clip"].table, mem.sources["clip"].table)
    meta = json.loads((tmp_path / "scene.m3" / META).read_text())
    assert meta["trace"] == {"version": 1, "columns": list(COLUMNS)}


def test_memory_without_trace_loads(tmp_path):
    """A memory written before the trace (no sources tensors, no meta entry) loads with an empty trace."""
    path = save_memory(tmp_path / "old.m3", make_memory())
    meta = json.loads((path / META).read_text())
    assert "trace" not in meta
    from safetensors.torch import load_file
    assert not any(k.endswith(".sources") for k in load_file(str(path / TENSORS)))
    assert load_memory(path).sources == {}


def test_newer_or_mismatched_trace_is_refused(tmp_path):
    path = save_memory(tmp_path / "scene.m3", with_trace())
    meta = json.loads((path / META).read_text())
    meta["trace"]["version"] = 99
    (path / META).write_text(json.dumps(meta))
    with pytest.raises(InputError, match="newer m3"):
        load_memory(path)
    mem = with_trace()
    mem.sources["clip"] = ComponentSources(torch.zeros(3, 6, dtype=torch.int32))
    with pytest.raises(InputError, match="does not match"):
        save_memory(tmp_path / "bad.m3", mem)


def test_built_memory_records_where_components_came_from(built_memory):
    path, _ = built_memory
    memory = load_memory(path)
    src = memory.sources["clip"]
    assert len(src) == memory.banks["clip"].psc.shape[0]
    views = src.column("view")
    assert all(memory.cameras[v].split == "train" for v in np.unique(views))  # PSC come from training views only
    assert (src.column("row") < src.column("map_height")).all() and (src.column("col") < src.column("map_width")).all()
    assert (src.column("frame") == views).all()  # every synthetic frame is usable: recording index = view index


def test_recorded_pixel_holds_the_component(built_memory, synth):
    """Each traced (frame, pixel) of the source recording is the stored feature: the fixture CLIP's
    map of that frame at that pixel equals the bank row (through the build's fp16 feature cache)."""
    from m3_memory.foundation import load_model
    from m3_memory.recording import open_recording

    memory = load_memory(built_memory[0])
    src, psc = memory.sources["clip"], memory.banks["clip"].psc
    frames = list(open_recording(synth.folder))
    model = load_model("clip-fixture")
    for k in np.linspace(0, len(src) - 1, 6).round().astype(int):
        _, frame, r, c, mh, mw = src.table[k].tolist()
        fmap = model.encode_frame(frames[frame], frame).half().float()  # [h, w, d]
        assert fmap.shape[:2] == (mh, mw)
        torch.testing.assert_close(fmap[r, c], psc[k])
