"""Grasp planning on the synthetic tabletop: the duck, out of reach, bad targets."""

from __future__ import annotations

import numpy as np
import pytest

from m3_grasp.candidates import grasp_candidates
from m3_grasp.plan import GraspConfig, plan_grasp, support_height
from m3_grasp.robot import T_world_base
from m3_grasp.safety import check_command
from m3_grasp.state import ArmState
from m3_memory.errors import InputError
from m3_memory.synth.scene import ROBOT_STANCE, TABLE_TOP_Z

STANCE = (ROBOT_STANCE[0], ROBOT_STANCE[1], ROBOT_STANCE[3])  # x, y, yaw of the B1 at the synthetic table


@pytest.fixture(scope="module")
def base(robot):
    return T_world_base(*STANCE, robot.base_height)


@pytest.fixture(scope="module")
def duck_plan(duck_scene, base, kin, robot):
    return plan_grasp(duck_scene.duck_center, duck_scene.duck, duck_scene.scene, base, ArmState.rest(), GraspConfig(), kin, robot)


def test_candidates_respect_gripper_and_approach_cone(duck_scene, kin):
    candidates = grasp_candidates(duck_scene.duck_center, duck_scene.duck, duck_scene.scene, kin.gripper.max_width,
                                  kin.gripper.jaw_reach)
    assert {"top-down", "tilted", "antipodal"} <= {c.kind for c in candidates}
    for c in candidates:
        assert c.open_width <= kin.gripper.max_width and c.width < c.open_width
        assert np.arccos(-c.T_world_ee[2, 0]) <= np.deg2rad(45) + 1e-9  # tool x within 45 deg of straight down
        np.testing.assert_allclose(c.T_world_ee[:3, :3].T @ c.T_world_ee[:3, :3], np.eye(3), atol=1e-9)
    assert [c.score for c in candidates] == sorted(c.score for c in candidates)


def test_duck_plan_is_complete_and_safe(duck_plan, duck_scene, kin, robot):
    p = duck_plan
    assert p.found, p.message
    assert np.linalg.norm(p.T_world_grasp[:3, 3] - duck_scene.duck_center) < 0.02
    assert set(p.waypoints) == {"pre_grasp", "grasp", "lift"}
    assert p.waypoints["lift"][2, 3] == pytest.approx(p.waypoints["grasp"][2, 3] + 0.10)
    for name in ("pre_grasp", "grasp", "lift"):  # the joint waypoints put the tool on the pose waypoints
        T = p.T_world_base @ kin.fk(p.q_waypoints[name])
        np.testing.assert_allclose(T, p.waypoints[name], atol=1e-3)
    assert p.q_trajectory.shape == (len(p.gripper), 6)
    np.testing.assert_allclose(p.q_trajectory[-1], p.q_waypoints["lift"], atol=1e-9)
    check_command(kin, p.q_trajectory, p.gripper, p.dt, p.T_world_base, robot)
    assert p.gripper.min() == pytest.approx(kin.gripper.angle(p.open_width))
    assert "grasp (" in p.lines()[0] and p.to_dict()["found"]


def test_out_of_reach_proposes_a_base_move(duck_scene, kin, robot):
    far = T_world_base(STANCE[0], STANCE[1] + 0.5, STANCE[2], robot.base_height)
    p = plan_grasp(duck_scene.duck_center, duck_scene.duck, duck_scene.scene, far, ArmState.rest(), GraspConfig(), kin, robot)
    assert not p.found and p.base_move is not None
    assert "out of reach by" in p.message and "walk the B1" in p.message
    assert p.base_move[1] < -0.2  # towards the table
    moved = far.copy()
    moved[:2, 3] += p.base_move[:2]
    assert plan_grasp(duck_scene.duck_center, duck_scene.duck, duck_scene.scene, moved, ArmState.rest(), GraspConfig(), kin, robot).found


def test_support_height_is_the_table_top(duck_scene):
    assert support_height(duck_scene.duck_center, duck_scene.scene) == pytest.approx(TABLE_TOP_Z, abs=0.01)


@pytest.mark.parametrize("target, needle", [([0.05, 0.02, TABLE_TOP_Z - 0.02], "inside or under the table"),
                                            ([0.05, 0.02, float("nan")], "3 finite numbers"),
                                            ([0.05, 0.02], "3 finite numbers")])
def test_bad_targets_are_one_line_errors(duck_scene, base, kin, robot, target, needle):
    with pytest.raises(InputError, match=needle) as err:
        plan_grasp(target, duck_scene.duck, duck_scene.scene, base, ArmState.rest(), GraspConfig(), kin, robot)
    assert "\n" not in str(err.value)


def test_no_object_points_near_the_target(duck_scene, base, kin, robot):
    with pytest.raises(InputError, match="fewer than 5"):
        plan_grasp([0.3, 0.3, 1.2], duck_scene.duck, duck_scene.scene, base, ArmState.rest(), GraspConfig(), kin, robot)


def test_base_pose_inside_the_scene(duck_scene, kin, robot):
    inside = T_world_base(0.0, 0.0, 0.0, TABLE_TOP_Z)
    with pytest.raises(InputError, match="intersects the scene"):
        plan_grasp(duck_scene.duck_center, duck_scene.duck, duck_scene.scene, inside, ArmState.rest(), GraspConfig(), kin, robot)


def test_failure_message_names_the_stage_that_stopped_each_candidate(kin):
    from m3_grasp.plan import Obstacles, _Attempt

    empty = Obstacles(np.zeros((0, 3)))
    a = _Attempt(kin, np.eye(4), empty, empty, GraspConfig())
    assert a.why() == "none tried"
    a.unreachable, a.reach_miss, a.no_path, a.collided = 3, 0.042, 2, 1
    assert a.why() == ("3 out of reach by 0.042 m or more, 2 reachable but without a straight approach and lift, "
                       "1 colliding with the scene")
    a.unreachable = 0
    assert "out of reach" not in a.why()
