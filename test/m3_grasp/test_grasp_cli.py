"""``m3 grasp`` end to end on a memory of the synthetic tabletop; bad input is one line, exit 2."""

from __future__ import annotations

import json
import sys

import open3d as o3d
import pytest

from m3_grasp.robot import default_urdf
from m3_memory.cli import main
from m3_memory.memory.artifact import load_memory, save_memory

MEMORY_PATHS = {}


@pytest.fixture(autouse=True, scope="module")
def _scene_path(scene_memory):
    MEMORY_PATHS["scene"] = scene_memory


@pytest.fixture(scope="module")
def duck_ply(tmp_path_factory, duck_scene):
    path = tmp_path_factory.mktemp("duck") / "duck.ply"
    o3d.io.write_point_cloud(str(path), o3d.geometry.PointCloud(o3d.utility.Vector3dVector(duck_scene.duck)))
    return path


def target_args(duck_scene, duck_ply, target=None):
    t = duck_scene.duck_center if target is None else target
    return ["--target", ",".join(f"{v}" for v in t), "--object-points", str(duck_ply)]


def test_grasp_in_sim(scene_memory, duck_scene, duck_ply, tmp_path, capsys):
    out = tmp_path / "grasp"
    code = main(["grasp", str(scene_memory), "yellow bath duck", "--backend", "sim", "--out", str(out), "--json",
                 "--no-gif", *target_args(duck_scene, duck_ply)])
    report = json.loads(capsys.readouterr().out)
    assert code == 0, report
    assert report["plan"]["found"] and report["execution"]["ok"]
    assert report["execution"]["measurements"]["grasp_centre_to_target_m"] < 0.04  # grip point, duck 17 x 9 x 11.5 cm
    assert (out / "plan.json").is_file() and (out / "sim.png").is_file()


def test_dry_run_is_the_default_and_says_where_it_starts(scene_memory, duck_scene, duck_ply, tmp_path, capsys):
    assert main(["grasp", str(scene_memory), "duck", "--out", str(tmp_path), *target_args(duck_scene, duck_ply)]) == 0
    out = capsys.readouterr().out
    assert "dry-run: recorded, nothing moved" in out
    assert "assumed at its rest pose" in out and "B1 base pose from the memory's robot pose" in out
    assert (tmp_path / "trajectory.json").is_file()


def test_start_joints_and_speed_scale(scene_memory, duck_scene, duck_ply, tmp_path, capsys):
    start = [0.3, 0.8, -0.6, 0.2, 0.1, -0.4, -0.3]
    args = ["grasp", str(scene_memory), "duck", "--out", str(tmp_path), "--json", *target_args(duck_scene, duck_ply)]
    assert main([*args, "--start-joints", ",".join(map(str, start))]) == 0
    report = json.loads(capsys.readouterr().out)
    commands = json.loads((tmp_path / "trajectory.json").read_text())
    assert commands["q"][0] == pytest.approx(start[:6]) and commands["gripper"][0] == pytest.approx(start[6])
    assert report["plan"]["start"]["source"] == "--start-joints"
    assert main([*args, "--speed-scale", "0.15"]) == 0
    slow = json.loads(capsys.readouterr().out)
    assert slow["execution"]["safety"]["peak_speed_fraction"] <= 0.15 + 1e-3


@pytest.mark.parametrize("extra, needle, code", [
    (["--start-joints", "0,0,0"], "--start-joints: expected 6 or 7", 2),
    (["--start-joints", "0,-0.5,0,0,0,0"], "measured z1_joint2 = -0.500 rad (--start-joints) is outside its limits", 4),
    (["--speed-scale", "0.9"], "speed scale: 0.9 must be in (0, 0.5]", 2),
    (["--backend", "unitree"], "pass --real-hardware", 4),
])
def test_bad_start_and_speed(scene_memory, duck_scene, duck_ply, tmp_path, capsys, extra, needle, code):
    """Bad values are input errors (2); what a safety check refuses is a safety refusal (4)."""
    err = bad(["grasp", str(scene_memory), "duck", "--out", str(tmp_path), *extra, *target_args(duck_scene, duck_ply)],
              capsys, code)
    assert needle in err


def test_no_base_pose_is_never_guessed(tmp_path, duck_scene, duck_ply, capsys):
    memory = load_memory(MEMORY_PATHS["scene"])
    memory.robot_pose = None
    unposed = save_memory(tmp_path / "unposed.m3", memory)
    for backend in (["--backend", "unitree", "--real-hardware"], ["--backend", "dry-run"]):
        err = bad(["grasp", str(unposed), "duck", "--out", str(tmp_path / "g"), *backend,
                   *target_args(duck_scene, duck_ply)], capsys)
        assert "the memory records no robot pose" in err
    assert not (tmp_path / "g").exists()


def bad(argv, capsys, code: int = 2) -> str:
    assert main(argv) == code
    err = capsys.readouterr().err.strip()
    assert err.startswith("m3: error: ") and "\n" not in err
    return err


def test_out_of_reach_says_by_how_much_and_where_to_walk(scene_memory, duck_scene, duck_ply, tmp_path, capsys):
    assert main(["grasp", str(scene_memory), "duck", "--out", str(tmp_path), "--base-pose", "0.05,1.4,-1.5708",
                 *target_args(duck_scene, duck_ply)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("m3: error: ") and "\n" not in err
    assert "out of reach by" in err and "walk the B1 by dx=" in err
    assert "out of reach by" not in captured.out  # said once: the error line (plan.json keeps the details)


@pytest.mark.parametrize("target, needle", [("0.05,0.02,0.73", "inside or under the table"),
                                            ("0.05,0.02,nan", "3 finite numbers"),
                                            ("0.05,0.02", "expected 3 comma-separated numbers")])
def test_bad_targets(scene_memory, duck_scene, duck_ply, tmp_path, capsys, target, needle):
    err = bad(["grasp", str(scene_memory), "duck", "--out", str(tmp_path), "--target", target,
               "--object-points", str(duck_ply)], capsys)
    assert needle in err


def test_urdf_missing_a_link(scene_memory, duck_scene, duck_ply, tmp_path, capsys):
    text = default_urdf().read_text()
    broken = tmp_path / "broken.urdf"
    broken.write_text(text.replace('<link name="lidar_link"/>', ""))
    err = bad(["grasp", str(scene_memory), "duck", "--urdf", str(broken), "--out", str(tmp_path),
               *target_args(duck_scene, duck_ply)], capsys)
    assert "lidar_link" in err


def test_unknown_backend(scene_memory, duck_scene, duck_ply, tmp_path, capsys):
    err = bad(["grasp", str(scene_memory), "duck", "--backend", "gazebo", "--out", str(tmp_path),
               *target_args(duck_scene, duck_ply)], capsys)
    assert "unknown backend 'gazebo'" in err


def test_unitree_sdk_not_importable(scene_memory, duck_scene, duck_ply, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "unitree_arm_interface", None)
    err = bad(["grasp", str(scene_memory), "duck", "--backend", "unitree", "--real-hardware", "--out", str(tmp_path),
               *target_args(duck_scene, duck_ply)], capsys, 5)  # a missing dependency
    assert "unitree_arm_interface is not importable" in err


def test_target_without_object_points(scene_memory, tmp_path, capsys):
    err = bad(["grasp", str(scene_memory), "duck", "--target", "0.05,0.02,0.8", "--out", str(tmp_path)], capsys)
    assert "--object-points" in err


def test_grasp_by_text_on_a_built_memory(built_memory, tmp_path, capsys):
    """Text -> 3D query on a trained memory -> plan -> dry-run: the duck is found and grasped."""
    out = tmp_path / "grasp"
    assert main(["grasp", str(built_memory[0]), "yellow bath duck", "--backend", "dry-run", "--out", str(out)]) == 0
    plan = json.loads((out / "plan.json").read_text())
    assert plan["found"] and (out / "trajectory.json").is_file()
    assert "yellow bath duck" in capsys.readouterr().out
