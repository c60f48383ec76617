"""m3 query: bad input ends with one line and exit 2; a too-long query is truncated with a warning."""

import json
import shutil

import numpy as np

from m3_memory.cli import main
from m3_memory.memory.artifact import load_memory


def test_bad_input_is_one_line_exit_2(built_memory, tmp_path, capsys):
    path = built_memory[0]
    corrupt = tmp_path / "corrupt.m3"
    shutil.copytree(path, corrupt)
    with open(corrupt / "gaussians.ply", "r+b") as f:
        f.seek(-8, 2)
        f.write(b"\x00" * 8)
    cam = load_memory(path).cameras[1]
    nan_pose, skew_pose = tmp_path / "nan.txt", tmp_path / "skew.json"
    nan_pose.write_text(" ".join(["nan"] + ["0"] * 15))
    T = cam.T_world_cam.copy()
    T[:3, :3] *= 1.5
    skew_pose.write_text(json.dumps({"T_world_cam": T.tolist()}))
    small_depth = tmp_path / "depth.npy"
    np.save(small_depth, np.ones((10, 10), np.float32))
    mm_depth = tmp_path / "depth_mm.npy"
    np.save(mm_depth, np.full((cam.height, cam.width), 800.0, np.float32))
    cases = {
        "checksum": [str(corrupt), "duck"],
        "empty": [str(path), "   "],
        "not in this memory": [str(path), "duck", "--model", "dinov2"],
        "NaN": [str(path), "duck", "--pose", str(nan_pose)],
        "non-rigid": [str(path), "duck", "--pose", str(skew_pose)],
        "the camera is": [str(path), "duck", "--view", "1", "--depth", str(small_depth)],
        "millimetres": [str(path), "duck", "--view", "1", "--depth", str(mm_depth)],
    }
    for expected, args in cases.items():
        assert main(["query", *args, "--out", str(tmp_path / "out")]) == 2, expected
        err = capsys.readouterr().err.strip()
        assert err.startswith("m3: error:") and "\n" not in err and expected in err, (expected, err)


def test_long_query_is_truncated_with_a_warning(built_memory, tmp_path, capsys):
    text = "the small yellow bath duck that floats in the tub and squeaks when you squeeze it on the table"
    code = main(["query", str(built_memory[0]), text, "--view", "1", "--out", str(tmp_path), "--json"])
    captured = capsys.readouterr()
    assert code in (0, 1) and "truncated" in captured.err and "m3: warning:" in captured.err
    assert json.loads(captured.out)["warnings"]
