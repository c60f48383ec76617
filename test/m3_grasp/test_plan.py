"""Grasp planning on the synthetic tabletop: the duck, out of reach, bad targets."""

from __future__ import annotations

import numpy as np
import pytest

from m3_grasp.candidates import grasp_candidates
from m3_grasp.collision import ArmCollision, Hand
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
def hand() -> Hand:
    return Hand(ArmCollision())


@pytest.fixture(scope="module")
def duck_plan(duck_scene, base, kin, robot):
    return plan_grasp(duck_scene.duck_center, duck_scene.duck, duck_scene.scene, base, ArmState.rest(), GraspConfig(), kin, robot)


def test_candidates_respect_gripper_and_approach_cone(duck_scene, kin, hand):
    others = duck_scene.scene[np.linalg.norm(duck_scene.scene - duck_scene.duck_center, axis=1) > 0.12]  # not the duck
    candidates = grasp_candidates(duck_scene.duck_center, duck_scene.duck, others, hand, kin.gripper)
    assert {"top-down", "tilted", "antipodal"} <= {c.kind for c in candidates}
    for c in candidates:
        assert c.open_width <= kin.gripper.max_width and c.width < c.open_width
        assert np.arccos(-c.T_world_ee[2, 0]) <= np.deg2rad(45) + 1e-9  # tool x within 45 deg of straight down
        np.testing.assert_allclose(c.T_world_ee[:3, :3].T @ c.T_world_ee[:3, :3], np.eye(3), atol=1e-9)
        T = np.linalg.inv(c.T_world_ee)
        local = duck_scene.duck @ T[:3, :3].T + T[:3, 3]  # [M, 3] tool frame
        angle = kin.gripper.angle(c.open_width)
        assert not hand.hits(local, angle).any() and hand.between(local, angle).sum() >= 5  # straddled, not touched
    assert [c.score for c in candidates] == sorted(c.score for c in candidates)


def test_hand_is_the_urdf_gripper(hand, kin):
    """Jaws 84 mm broad, pads meeting 7.5-10 mm below the tool axis, the tool centre at the jaw tips."""
    assert hand.breadth == pytest.approx(0.084) and hand.pad_z == pytest.approx(-0.0075)
    assert hand.jaw_x[1] == pytest.approx(0.001)
    above = np.array([[-0.03, 0.0, 0.01]])  # 17.5 mm above the fixed pad, halfway along the jaws
    assert hand.hits(above, 0.0).all() and not hand.hits(above, kin.gripper.angle(0.04)).any()
    assert hand.between(above, kin.gripper.angle(0.04)).all() and not hand.between(above, kin.gripper.angle(0.01)).any()
    assert hand.hits(np.array([[0.0, 0.0, -0.02]]), 0.0).all()  # inside the fixed jaw
    assert hand.hits(np.array([[-0.13, 0.0, -0.06]]), 0.0).all()  # the camera under the gripper


def test_duck_plan_is_complete_and_safe(duck_plan, duck_scene, kin, robot, hand):
    p = duck_plan
    assert p.found, p.message
    grip = p.T_world_grasp[:3, :3] @ hand.grip_point(p.width) + p.T_world_grasp[:3, 3]
    assert np.linalg.norm(grip - duck_scene.duck_center) < 0.04  # the duck is 17 x 9 x 11.5 cm
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
    assert plan_grasp(duck_scene.duck_center, duck_scene.duck, duck_scene.scene, moved, ArmState.rest(), GraspConfig(),
                      kin, robot).found


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


def test_failure_message_names_the_stage_and_what_collided(kin):
    from m3_grasp.plan import _Attempt

    collision = ArmCollision()
    collision.set_clouds(scene=np.zeros((0, 3)))
    a = _Attempt(kin, np.eye(4), collision, GraspConfig(), ArmState.rest())
    assert a.why() == "none tried" and not a.start_contacts
    a.unreachable, a.reach_miss, a.no_path = 3, 0.042, 2
    a.collided.update({"to_pre_grasp": 2, "approach": 1})
    a.contacts.update({"z1_link02 and scene": 2, "z1_gripper_stator and object": 1})
    assert a.why() == ("3 out of reach by 0.042 m or more, 2 reachable but without a straight approach and lift, "
                       "3 colliding (2 on the way to the pre-grasp, 1 on the approach: z1_link02 and scene, "
                       "z1_gripper_stator and object)")
    a.unreachable = 0
    assert "out of reach" not in a.why()


def test_a_start_contact_may_only_be_left(kin):
    """The arm at rest touching a surface under the gripper: lifting the wrist out is allowed,
    pressing it further in is not, and a contact that came free counts again."""
    from m3_grasp.plan import _Attempt

    x, y = np.meshgrid(np.linspace(0.40, 0.62, 23), np.linspace(-0.1, 0.1, 21))
    surface = np.column_stack([x.ravel(), y.ravel(), np.full(x.size, 0.176)])  # [483, 3] base_link, 5 mm into the camera
    collision = ArmCollision(resolution=0.003)
    collision.set_clouds(scene=surface)
    a = _Attempt(kin, np.eye(4), collision, GraspConfig(), ArmState.rest())
    assert set(a.start_contacts) == {"camera_link and scene"}
    clouds = {"scene": 0.005}
    lift, press = np.zeros((2, 6)), np.zeros((2, 6))
    lift[1, 3], press[1, 3] = -0.3, 0.3  # joint 4 turns the wrist up / down
    assert a._hit(lift, 0.0, clouds, from_start=True) is None
    assert a._hit(lift, 0.0, clouds) is not None  # not from the start: every contact counts
    assert a._hit(press, 0.0, clouds, from_start=True) is not None
    back = np.array([lift[0], lift[1], lift[0]])  # out and back in
    assert str(a._hit(back, 0.0, clouds, from_start=True)) in a.start_contacts


def test_duck_from_rest_goes_through_the_forward_posture(duck_plan, duck_scene, base, kin):
    """From rest the straight joint line to the pre-grasp swings the camera into the shoulder."""
    from m3_grasp.plan import _Attempt

    assert "via the forward posture" in duck_plan.message
    collision = ArmCollision()
    collision.set_clouds()
    a = _Attempt(kin, np.linalg.inv(base), collision, GraspConfig(), ArmState.rest())
    hit = a._hit(np.array([np.zeros(6), duck_plan.q_waypoints["pre_grasp"]]), 0.0, {}, from_start=True)
    assert hit is not None and "camera_link" in str(hit)

