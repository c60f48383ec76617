"""The Grasp action logic: goal -> locate -> plan -> execute -> result, and its bad input."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
from grasp_scene import DUCK, STANCE, scene_lookup

from m3_grasp.ros.grasp_handler import GraspGoal, GraspHandler, GraspParams, GraspResult, arm_state_from_joint_state
from m3_memory.conventions import make_T
from m3_memory.errors import InputError
from m3_memory.recording.tf import TfLookupError
from m3_memory.ros.build_handler import StageFeedback
from m3_memory.ros.convert import pose_stamped_msg
from m3_memory.ros.interfaces import field_names, typename

GOAL, RESULT, FEEDBACK = (typename(f"m3_msgs/action/Grasp_{part}") for part in ("Goal", "Result", "Feedback"))


class Log(list):
    def __call__(self, fb: StageFeedback) -> None:
        self.append(fb)


@pytest.fixture
def handler(tabletop_memory, lookup, tmp_path):
    h = GraspHandler(GraspParams(memory=str(tabletop_memory), out_dir=str(tmp_path / "grasps")), lookup)
    assert h.load().startswith("loaded memory"), h.load_error
    return h


def result_msg(store, make, result: GraspResult):
    """The rosbags result built from exactly the result's fields, serialised and read back."""
    msg = store.types[RESULT](**result.fields(make))
    return store.deserialize_cdr(store.serialize_cdr(msg, RESULT), RESULT)


def test_goal_result_feedback_mirror_the_action_fields(store):
    assert [f.name for f in fields(GraspGoal)] == field_names(store, GOAL)
    assert [f.name for f in fields(GraspResult)] == field_names(store, RESULT)
    assert [f.name for f in fields(StageFeedback)] == field_names(store, FEEDBACK)


def test_text_goal_plans_and_dry_runs(handler, store, make):
    log = Log()
    result = handler.execute_msg(make(GOAL, text="yellow bath duck"), log, lambda: False)
    assert result.success, result.message
    assert [(fb.stage, fb.fraction) for fb in log] == [("locate", 0.0), ("locate", 1.0), ("plan", 0.0), ("plan", 1.0),
                                                       ("execute", 0.0), ("execute", 1.0)]
    msg = result_msg(store, make, result)
    assert msg.success and msg.message.startswith("dry-run: ")
    assert msg.grasp_pose.header.frame_id == "world" and msg.grasp_pose.header.stamp.sec == 7
    p = msg.grasp_pose.pose.position
    assert np.linalg.norm(np.array([p.x, p.y, p.z]) - DUCK) < 0.05
    assert 0 < msg.width < msg.opening < 0.2
    traj = msg.trajectory
    assert traj.joint_names == [f"z1_joint{i}" for i in range(1, 7)] + ["z1_gripper_joint"]
    assert len(traj.points) > 10 and all(len(pt.positions) == 7 for pt in traj.points)
    times = [pt.time_from_start.sec + pt.time_from_start.nanosec * 1e-9 for pt in traj.points]
    assert np.all(np.diff(times) > 0)
    report = Path(msg.report_dir)
    assert json.loads((report / "plan.json").read_text())["found"] and (report / "trajectory.json").is_file()
    assert (msg.base_move.x, msg.base_move.y, msg.base_move.z) == (0.0, 0.0, 0.0)


def test_pose_goal_in_another_frame(handler, make):
    target = pose_stamped_msg(make, make_T(np.eye(3), DUCK - [0.0, 0.0, 0.75]), "table", 0)
    result = handler.execute_msg(make(GOAL, target=target), Log(), lambda: False)
    assert result.success, result.message
    assert np.linalg.norm(result.grasp_pose.T[:3, 3] - DUCK) < 0.05


def test_unreachable_object_proposes_a_base_move(tabletop_memory, make, tmp_path):
    x, y, yaw = STANCE
    h = GraspHandler(GraspParams(memory=str(tabletop_memory), out_dir=str(tmp_path)), scene_lookup((x, y + 0.5, yaw)))
    h.load()
    result = h.execute_msg(make(GOAL, text="yellow bath duck"), Log(), lambda: False)
    assert not result.success and result.message.startswith("no grasp"), result.message
    assert result.base_move[1] < -0.1 and result.grasp_pose is None and result.trajectory is None, result.message
    assert (Path(result.report_dir) / "plan.json").is_file()


@pytest.mark.parametrize("goal, problem", [
    ({}, "neither text nor a target pose"),
    ({"text": "yellow bath duck", "backend": "teleport"}, "unknown backend 'teleport'"),
    ({"text": "yellow bath duck", "backend": "unitree"}, "real_hardware"),
    ({"text": "yellow bath duck", "backend": "ros2_control"}, "real_hardware"),
])
def test_bad_goals(handler, make, goal, problem):
    result = handler.execute_msg(make(GOAL, **goal), Log(), lambda: False)
    assert not result.success and problem in result.message, result.message


def test_text_not_in_the_memory(tabletop_memory, lookup, make, tmp_path):
    h = GraspHandler(GraspParams(memory=str(tabletop_memory), min_score=0.9, out_dir=str(tmp_path)), lookup)
    h.load()
    result = h.execute_msg(make(GOAL, text="purple bowl"), Log(), lambda: False)
    assert not result.success and "nothing relevant to 'purple bowl'" in result.message, result.message
    assert list(tmp_path.iterdir()) == []  # nothing planned, nothing written


def test_unknown_frame_and_tf_timeout(handler, make, tabletop_memory, tmp_path):
    target = pose_stamped_msg(make, np.eye(4), "no_such_frame", 0)
    result = handler.execute_msg(make(GOAL, target=target), Log(), lambda: False)
    assert not result.success and result.message.startswith("tf: ") and "no_such_frame" in result.message

    def timing_out(target, source, stamp=0):
        raise TfLookupError(f"no transform {target} <- {source} within 0.5 s (timed out)")

    h = GraspHandler(GraspParams(memory=str(tabletop_memory), out_dir=str(tmp_path)), timing_out)
    h.load()
    result = h.execute_msg(make(GOAL, text="yellow bath duck"), Log(), lambda: False)
    assert not result.success and "within 0.5 s" in result.message


def test_memory_that_failed_to_load(lookup, make, tmp_path):
    h = GraspHandler(GraspParams(memory=str(tmp_path / "missing.m3")), lookup)
    assert "does not exist" in h.load()
    target = pose_stamped_msg(make, make_T(np.eye(3), DUCK), "world", 0)
    for goal in (make(GOAL, text="yellow bath duck"), make(GOAL, target=target)):
        result = h.execute_msg(goal, Log(), lambda: False)
        assert not result.success and "missing.m3: failed to load" in result.message


def test_robot_description_missing(lookup, make, tabletop_memory, tmp_path):
    h = GraspHandler(GraspParams(memory=str(tabletop_memory), urdf=str(tmp_path / "robot.urdf")), lookup)
    assert h.load().startswith("robot description: ")
    result = h.execute_msg(make(GOAL, text="yellow bath duck"), Log(), lambda: False)
    assert not result.success and "robot.urdf" in result.message


def test_cancel_between_stages(handler, make):
    log = Log()
    result = handler.execute_msg(make(GOAL, text="yellow bath duck"), log, lambda: any(fb.stage == "plan" for fb in log))
    assert not result.success and result.message.startswith("canceled before execution")
    assert result.grasp_pose is not None and not (Path(result.report_dir) / "trajectory.json").exists()
    log.clear()
    result = handler.execute_msg(make(GOAL, text="yellow bath duck"), log, lambda: True)
    assert not result.success and result.message == "canceled before planning"


def test_malformed_target_pose(handler, make):
    bad = pose_stamped_msg(make, np.eye(4), "world", 0)
    bad.pose.position.x = float("nan")
    result = handler.execute_msg(make(GOAL, target=bad), Log(), lambda: False)
    assert not result.success and "NaN" in result.message


def test_dry_run_plans_from_joint_states(tabletop_memory, lookup, make, tmp_path):
    names = ["fl_hip", *[f"z1_joint{i}" for i in range(1, 7)], "z1_gripper_joint"]
    measured = arm_state_from_joint_state(names, [9.0, 0.2, 0.5, -0.4, 0.1, 0.0, 0.3, -0.2], [])
    assert measured.source == "/joint_states" and measured.gripper == -0.2
    np.testing.assert_allclose(measured.q, [0.2, 0.5, -0.4, 0.1, 0.0, 0.3])
    h = GraspHandler(GraspParams(memory=str(tabletop_memory), out_dir=str(tmp_path)), lookup, lambda: measured)
    h.load()
    log = Log()
    result = h.execute_msg(make(GOAL, text="yellow bath duck"), log, lambda: False)
    assert result.success, result.message
    assert "from /joint_states" in next(fb.message for fb in log if fb.stage == "plan")
    np.testing.assert_allclose(result.trajectory[1][0], measured.x)  # the first point is the measured state


def test_joint_states_without_the_arm_are_refused():
    with pytest.raises(InputError, match="missing z1_joint6"):
        arm_state_from_joint_state([f"z1_joint{i}" for i in range(1, 6)], [0.0] * 5, [])


def test_cancel_while_the_arm_moves_decelerates_it(handler, make):
    """A cancel that arrives while the sim streams stops the arm at rest along its path."""
    log = Log()
    polls = []

    def cancel_after_a_while():
        if any(fb.stage == "execute" for fb in log):
            polls.append(1)
        return len(polls) > 60  # about 1.2 s into the motion

    result = handler.execute_msg(make(GOAL, text="yellow bath duck", backend="sim"), log, cancel_after_a_while)
    assert not result.success and "stopped (stop requested)" in result.message, result.message
    report = json.loads((Path(result.report_dir) / "plan.json").read_text())
    assert report["found"]
    held = handler.sim_state
    assert held is not None and np.allclose(held.qd, 0.0)  # the simulated arm holds where it stopped


def test_ros2_control_needs_the_nodes_action_clients(tabletop_memory, lookup, make, tmp_path):
    h = GraspHandler(GraspParams(memory=str(tabletop_memory), out_dir=str(tmp_path), real_hardware=True), lookup)
    h.load()
    result = h.execute_msg(make(GOAL, text="yellow bath duck", backend="ros2_control"), Log(), lambda: False)
    assert not result.success and "needs the grasp node's action clients" in result.message


def test_failed_goal_keeps_its_reason_in_the_result_message(tabletop_memory, store, make, tmp_path):
    """A plan that is not found has no trajectory: the result message (the abort reason) must survive."""
    x, y, yaw = STANCE
    h = GraspHandler(GraspParams(memory=str(tabletop_memory), out_dir=str(tmp_path)), scene_lookup((x, y + 0.5, yaw)))
    h.load()
    result = h.execute_msg(make(GOAL, text="yellow bath duck"), Log(), lambda: False)
    assert not result.success and result.trajectory is None
    msg = result_msg(store, make, result)
    assert msg.message == result.message and msg.message.startswith("no grasp")
    assert msg.trajectory.joint_names == [] and msg.trajectory.points == []
    assert result_msg(store, make, GraspResult(False, "tf: no transform")).message == "tf: no transform"


def test_pose_goal_is_looked_up_at_its_stamp_and_the_base_at_the_latest(tabletop_memory, make, tmp_path):
    inner, calls = scene_lookup(), []

    def lookup(target, source, stamp=0):
        calls.append((target, source, stamp))
        return inner(target, source, stamp)

    h = GraspHandler(GraspParams(memory=str(tabletop_memory), out_dir=str(tmp_path)), lookup)
    h.load()
    target = pose_stamped_msg(make, make_T(np.eye(3), DUCK - [0.0, 0.0, 0.75]), "table", 5_250_000_000)
    result = h.execute_msg(make(GOAL, target=target), Log(), lambda: False)
    assert result.success, result.message
    assert calls == [("world", "table", 5_250_000_000), ("world", "base_link", 0)]  # the memory's frame: world


def test_fixture_clip_by_its_registry_name(tabletop_memory, lookup, make, tmp_path):
    h = GraspHandler(GraspParams(memory=str(tabletop_memory), model="clip-fixture", out_dir=str(tmp_path)), lookup)
    assert h.load().startswith("loaded memory"), h.load_error
    result = h.execute_msg(make(GOAL, text="yellow bath duck"), Log(), lambda: False)
    assert result.success, result.message


def test_parameter_changes(handler, make, tmp_path):
    from m3_memory.ros.params import changed

    with pytest.raises(InputError, match="speed"):
        handler.update(changed(handler.params, {"speed_scale": 0.9}))  # beyond robot.yaml's velocity_fraction
    with pytest.raises(InputError, match="missing.m3: failed to load"):
        handler.update(changed(handler.params, {"memory": str(tmp_path / "missing.m3")}))
    assert handler.memory is not None and handler.params.speed_scale == 0.3  # nothing changed
    handler.update(changed(handler.params, {"backend": "sim", "world_frame": "world"}))
    result = handler.execute_msg(make(GOAL, text="yellow bath duck"), Log(), lambda: False)
    assert result.success and result.message.startswith("sim:"), result.message


def test_memory_with_source_views_is_asked_as_m3_grasp_asks_it(handler, make, monkeypatch):
    """With source cameras the node finds text goals as `m3 grasp` does (find_in_memory), so both plan
    from the same object; without them it asks the Gaussians."""
    from m3_memory.query import api

    asked = []
    real = api.query_gaussians

    def find_in_memory(memory, text, config, text_model):
        asked.append(text)
        return real(memory, text, config, text_model)

    monkeypatch.setattr(api, "find_in_memory", find_in_memory)
    assert handler.execute_msg(make(GOAL, text="yellow bath duck"), Log(), lambda: False).success and asked == []
    monkeypatch.setattr(handler.memory, "cameras", ["a source view"])
    result = handler.execute_msg(make(GOAL, text="yellow bath duck"), Log(), lambda: False)
    assert result.success and asked == ["yellow bath duck"], result.message
