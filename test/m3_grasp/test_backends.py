"""Backends: dry-run records, sim grasps the synthetic duck, unitree needs its SDK and a flag."""

from __future__ import annotations

import json
import sys
from dataclasses import replace

import numpy as np
import pytest

from m3_grasp.backends import get_backend
from m3_grasp.plan import GraspConfig, plan_grasp
from m3_grasp.robot import T_world_base
from m3_grasp.safety import SafetyError
from m3_grasp.state import ArmState
from m3_grasp.timing import Limits, Segment, Trajectory
from m3_memory.errors import InputError, MissingDependency
from m3_memory.synth.scene import ROBOT_STANCE

STANCE = (ROBOT_STANCE[0], ROBOT_STANCE[1], ROBOT_STANCE[3])  # x, y, yaw of the B1 at the synthetic table


@pytest.fixture(scope="module")
def duck_plan(duck_scene, kin, robot):
    base = T_world_base(*STANCE, robot.base_height)
    plan = plan_grasp(duck_scene.duck_center, duck_scene.duck, duck_scene.scene, base, ArmState.rest(), GraspConfig(), kin, robot)
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
    assert m["grasp_centre_to_target_m"] < 0.04  # grip point within 4 cm of the duck's centre (17 x 9 x 11.5 cm)
    assert m["colliding_commands"] == 0  # nothing touches the table, the trunk or the arm itself
    assert m["object_points_between_jaws"] > 20
    assert (tmp_path / "sim.png").stat().st_size > 10_000


def test_every_backend_refuses_unsafe_commands(duck_plan, duck_scene, kin, tmp_path):
    fast = Limits(duck_plan.limits.velocity * 3, duck_plan.limits.acceleration * 3)  # 0.9 of the URDF speeds: too fast
    jumpy = replace(duck_plan, trajectory=Trajectory([Segment(np.array([duck_plan.trajectory.start,
                                                                         duck_plan.trajectory.end]), fast)]))
    for backend in (get_backend("dry-run", kin=kin),
                    get_backend("sim", kin=kin, scene_points=duck_scene.scene, object_points=duck_scene.duck)):
        with pytest.raises(SafetyError, match=r"command \d+ -> \d+: z1_joint\d at .* rad/s, limit"):
            backend.execute(jumpy, tmp_path)
    assert not (tmp_path / "trajectory.json").exists()


def test_unknown_backend():
    with pytest.raises(InputError, match="unknown backend 'gazebo'"):
        get_backend("gazebo")


def test_unitree_without_sdk(monkeypatch):
    monkeypatch.setitem(sys.modules, "unitree_arm_interface", None)  # import raises ImportError
    with pytest.raises(MissingDependency, match="unitree_arm_interface is not importable"):
        get_backend("unitree", real_hardware=True)


def test_dry_run_and_sim_start_where_they_are_told(duck_scene, kin, robot, tmp_path):
    start = ArmState([0.3, 0.5, -0.4, 0.2, -0.1, 0.5], -0.2, source="--start-joints")
    assert get_backend("dry-run", kin=kin).state().source.startswith("the rest pose (assumed")
    sim = get_backend("sim", kin=kin, scene_points=duck_scene.scene, object_points=duck_scene.duck, start=start,
                      animate=False)
    np.testing.assert_allclose(sim.state().x, start.x)
    base = T_world_base(*STANCE, robot.base_height)
    plan = plan_grasp(duck_scene.duck_center, duck_scene.duck, duck_scene.scene, base, sim.state(), GraspConfig(), kin, robot)
    assert plan.found, plan.message
    np.testing.assert_allclose(plan.trajectory.start, start.x)
    sim.execute(plan, tmp_path)
    np.testing.assert_allclose(sim.state().x, plan.trajectory.end, atol=1e-9)  # the sim keeps its last state
    with pytest.raises(SafetyError, match="from the plan's start"):  # the same plan again: the arm is elsewhere now
        sim.execute(plan, tmp_path)


@pytest.mark.slow
def test_sim_grasps_the_duck_from_random_measured_poses(duck_scene, kin, robot, tmp_path):
    """The simulated arm starts at random configurations inside the limits; from each the
    planner finds a grasp (or says why not) and the sim grasps the duck without collisions.
    About a minute."""
    rng = np.random.default_rng(3)
    base = T_world_base(*STANCE, robot.base_height)
    grasped = 0
    for i in range(4):
        start = ArmState(rng.uniform(kin.lower, kin.upper), float(rng.uniform(kin.gripper.lower, 0.0)), source="random")
        sim = get_backend("sim", kin=kin, robot=robot, scene_points=duck_scene.scene, object_points=duck_scene.duck,
                          target=duck_scene.duck_center, animate=False, start=start)
        plan = plan_grasp(duck_scene.duck_center, duck_scene.duck, duck_scene.scene, base, sim.state(), GraspConfig(),
                          kin, robot)
        if not plan.found:
            assert plan.message, "a plan that is not found says why"
            continue
        np.testing.assert_allclose(plan.trajectory.start, start.x)
        report = sim.execute(plan, tmp_path / str(i))
        assert report.ok, report.lines()
        assert report.measurements["grasp_centre_to_target_m"] < 0.04
        grasped += 1
    assert grasped >= 2
