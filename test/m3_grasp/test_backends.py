"""Backends: dry-run records, sim grasps the synthetic duck, unitree needs its SDK and a flag."""

from __future__ import annotations

import json
import sys
import types
from dataclasses import replace

import numpy as np
import pytest

from m3_grasp.backends import get_backend
from m3_grasp.plan import GraspConfig, plan_grasp
from m3_grasp.robot import T_world_base
from m3_grasp.run import DEFAULT_BASE_POSE
from m3_grasp.safety import SafetyError
from m3_memory.errors import InputError


@pytest.fixture(scope="module")
def duck_plan(duck_scene, kin, robot):
    base = T_world_base(*DEFAULT_BASE_POSE, robot.base_height)
    plan = plan_grasp(duck_scene.duck_center, duck_scene.duck, duck_scene.scene, base, GraspConfig(), kin, robot)
    assert plan.found, plan.message
    return plan


def test_dry_run_records_the_commands(duck_plan, kin, tmp_path):
    report = get_backend("dry-run", kin=kin).execute(duck_plan, tmp_path)
    saved = json.loads((tmp_path / "trajectory.json").read_text())
    assert report.ok and report.commands == len(duck_plan.q_trajectory)
    np.testing.assert_allclose(saved["q"], duck_plan.q_trajectory, atol=1e-6)
    assert saved["joints"][0] == "z1_joint1" and saved["plan"]["found"]


def test_sim_grasps_the_synthetic_duck(duck_plan, duck_scene, kin, tmp_path):
    sim = get_backend("sim", kin=kin, scene_points=duck_scene.scene, object_points=duck_scene.duck,
                      target=duck_scene.duck_center, animate=False)
    report = sim.execute(duck_plan, tmp_path)
    m = report.measurements
    assert report.ok, report.lines()
    assert m["grasp_centre_to_target_m"] < 0.02  # gripper centre within 2 cm of the duck
    assert m["arm_min_clearance_m"] > 0 and m["gripper_scene_contacts"] == 0  # nothing touches the table
    assert m["object_points_between_jaws"] > 20
    assert (tmp_path / "sim.png").stat().st_size > 10_000


def test_every_backend_refuses_unsafe_commands(duck_plan, duck_scene, kin, tmp_path):
    q = duck_plan.q_trajectory.copy()
    q[10, 1] += 0.5  # a jump: too fast
    jumpy = replace(duck_plan, q_trajectory=q)
    for backend in (get_backend("dry-run", kin=kin),
                    get_backend("sim", kin=kin, scene_points=duck_scene.scene, object_points=duck_scene.duck)):
        with pytest.raises(SafetyError, match="command 9 -> 10: z1_joint2"):
            backend.execute(jumpy, tmp_path)
    assert not (tmp_path / "trajectory.json").exists()


def test_unknown_backend():
    with pytest.raises(InputError, match="unknown backend 'gazebo'"):
        get_backend("gazebo")


def test_unitree_without_sdk(monkeypatch):
    monkeypatch.setitem(sys.modules, "unitree_arm_interface", None)  # import raises ImportError
    with pytest.raises(InputError, match="unitree_arm_interface is not importable"):
        get_backend("unitree", real_hardware=True)


class FakeArm:
    """Records what the SDK's ArmInterface would receive."""

    sent: list = []

    def __init__(self, hasGripper):
        assert hasGripper

    def setFsmLowcmd(self):
        pass

    def sendRecv(self):
        FakeArm.sent.append((np.array(self.q), float(self.gripperQ)))


def test_unitree_needs_the_flag_then_streams_checked_commands(monkeypatch, duck_plan, kin, tmp_path):
    monkeypatch.setitem(sys.modules, "unitree_arm_interface", types.SimpleNamespace(ArmInterface=FakeArm))
    with pytest.raises(InputError, match="pass --real-hardware"):
        get_backend("unitree", kin=kin)
    backend = get_backend("unitree", kin=kin, real_hardware=True)
    monkeypatch.setattr("m3_grasp.backends.time.sleep", lambda s: None)
    FakeArm.sent = []
    report = backend.execute(duck_plan, tmp_path)
    n = (len(duck_plan.q_trajectory) - 1) * 10 + 1  # 50 Hz plan -> 500 Hz SDK commands
    assert report.ok and report.commands == n == len(FakeArm.sent)
    np.testing.assert_allclose(FakeArm.sent[-1][0], duck_plan.q_trajectory[-1])
    np.testing.assert_allclose(FakeArm.sent[10][0], duck_plan.q_trajectory[1])
