"""`m3 build --robot-pose`: parsing and what the built memory records."""

import numpy as np
import pytest

from m3_memory.cli import main
from m3_memory.errors import InputError
from m3_memory.memory.artifact import load_memory
from m3_memory.robot_pose import T_from_xyz_yaw
from m3_memory.training.cli import parse_robot_pose


def test_parse_robot_pose():
    pose = parse_robot_pose("0.05, 0.83,0.55,-1.5707963267948966")
    np.testing.assert_allclose(pose.T_world_base, T_from_xyz_yaw(0.05, 0.83, 0.55, -np.pi / 2), atol=1e-12)
    assert pose.frame == "base_link" and "--robot-pose" in pose.source


@pytest.mark.parametrize("text", ["1,2,3", "1,2,3,4,5", "1,2,x,4", "1,2,nan,0", "inf,0,0,0", ""])
def test_bad_robot_pose_is_one_line_and_exit_2(text, tmp_path, capsys):
    with pytest.raises(InputError, match="--robot-pose: expected four finite numbers"):
        parse_robot_pose(text)
    assert main(["build", str(tmp_path / "missing"), "--out", str(tmp_path / "x.m3"), f"--robot-pose={text}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("m3: error: --robot-pose:") and len(err.splitlines()) == 1


def test_explicit_robot_pose_wins_over_the_recording(synth, tmp_path, monkeypatch, capsys):
    """The synthetic folder records the B1's stance; --robot-pose replaces it and says so."""
    monkeypatch.setenv("M3_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "explicit.m3"
    assert main(["build", str(synth.folder), "--out", str(out), "--model", "clip-fixture", "--fast",
                 "--iterations", "1", "--robot-pose=-1,2,0.5,0.25"]) == 0
    assert "robot pose: base_link at x -1.000 y 2.000 z 0.500 m, yaw 14.3 deg (from m3 build --robot-pose" \
        in capsys.readouterr().out
    pose = load_memory(out).robot_pose
    np.testing.assert_allclose(pose.T_world_base, T_from_xyz_yaw(-1.0, 2.0, 0.5, 0.25), atol=1e-12)
