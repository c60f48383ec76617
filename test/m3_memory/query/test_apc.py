"""m3 eval and m3 query on a memory of the real APC shelf scene (slow: builds one)."""

import json

import pytest

from m3_memory.cli import main
from m3_memory.training.build import build_memory
from m3_memory.training.config import TrainConfig

pytestmark = pytest.mark.slow


def test_eval_and_query_on_the_apc_shelf(realdata, tmp_path, capsys):
    scene = realdata / "apc2016_realsense_shelf" / "data" / "sample" / "scene-0000"
    memory = tmp_path / "apc.m3"
    build_memory(scene, memory, model="clip-fixture", config=TrainConfig.fast(iterations=150, max_side=240),
                 cache_root=tmp_path / "cache", show_progress=False)
    assert main(["eval", str(memory), "--out", str(tmp_path / "eval"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["masks"] == "segm" and out["views"] == 2
    raw, mem = out["rows"]
    assert raw["cosine"] == pytest.approx(1.0) and 0.7 < mem["cosine"] < 1
    # 4 objects, each in view in both held-out frames (segm/ labels)
    assert raw["grounding_paper"]["pairs"] == mem["grounding_paper"]["pairs"] >= 6
    # the fixture CLIP never saw these objects: grounding is measured, not asserted
    code = main(["query", str(memory), "kleenex tissue box", "--view", "3", "--out", str(tmp_path / "q"), "--json"])
    assert code in (0, 1)
    result = json.loads(capsys.readouterr().out)
    assert result["found"] == (code == 0) and (tmp_path / "q" / "heatmap.png").is_file()
