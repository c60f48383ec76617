"""The grasp node end to end over ROS 2 (action with feedback per stage): good and failing goals in a
row, goals while one runs, an exception inside. Run where ROS 2 and the built m3_msgs are sourced
(colcon test); skipped elsewhere."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from grasp_scene import DUCK, STANCE

from m3_grasp.robot import RobotConfig, T_world_base
from m3_memory.conventions import quat_wxyz_from_T, quat_wxyz_to_xyzw

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("m3_msgs")

from geometry_msgs.msg import TransformStamped  # noqa: E402
from rclpy.action import ActionClient  # noqa: E402
from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from tf2_ros.static_transform_broadcaster import StaticTransformBroadcaster  # noqa: E402

from m3_msgs.action import Grasp  # noqa: E402

TIMEOUT = 60.0
SUCCEEDED, ABORTED = 4, 6  # action_msgs/GoalStatus


def wait(future, timeout: float = TIMEOUT):
    end = time.monotonic() + timeout
    while not future.done():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)
    return future.result()


@pytest.fixture
def grasp_action(tabletop_memory, tmp_path):
    """The grasp node with the tabletop memory, base_link where the B1 stands; yields (node, action client)."""
    from m3_grasp.ros.grasp_node import GraspNode

    rclpy.init(args=["--ros-args", "-p", f"memory:={tabletop_memory}", "-p", f"out_dir:={tmp_path}"])
    executor = MultiThreadedExecutor()  # after rclpy.init: an executor takes the default context when made
    try:
        client = rclpy.create_node("m3_test_client")
        T = T_world_base(*STANCE, RobotConfig.load().base_height)
        tf = TransformStamped()
        tf.header.frame_id, tf.child_frame_id = "world", "base_link"
        tf.transform.translation.x, tf.transform.translation.y, tf.transform.translation.z = (float(v) for v in T[:3, 3])
        x, y, z, w = quat_wxyz_to_xyzw(quat_wxyz_from_T(T))
        tf.transform.rotation.x, tf.transform.rotation.y, tf.transform.rotation.z, tf.transform.rotation.w = x, y, z, w
        StaticTransformBroadcaster(client).sendTransform(tf)
        node = GraspNode()
        for n in (client, node):
            executor.add_node(n)
        threading.Thread(target=executor.spin, daemon=True).start()
        action = ActionClient(client, Grasp, "/m3_grasp/grasp")
        assert action.wait_for_server(timeout_sec=TIMEOUT)
        yield node, action
    finally:
        nodes = executor.get_nodes()
        executor.shutdown()
        for n in nodes:
            n.destroy_node()
        rclpy.try_shutdown()


def run(action, goal: Grasp.Goal, feedback=None):
    handle = wait(action.send_goal_async(goal, feedback_callback=feedback))
    assert handle.accepted
    return wait(handle.get_result_async())


def pose_goal(position, frame: str = "world") -> Grasp.Goal:
    goal = Grasp.Goal()
    goal.target.header.frame_id = frame
    goal.target.pose.position.x, goal.target.pose.position.y, goal.target.pose.position.z = (float(v) for v in position)
    goal.target.pose.orientation.w = 1.0
    return goal


def test_grasp_action(grasp_action):
    node, action = grasp_action
    stages = []
    outcome = run(action, Grasp.Goal(text="yellow bath duck"), lambda msg: stages.append(msg.feedback.stage))
    assert outcome.status == SUCCEEDED and outcome.result.success, outcome.result.message
    p = outcome.result.grasp_pose.pose.position
    assert np.linalg.norm([p.x - DUCK[0], p.y - DUCK[1], p.z - DUCK[2]]) < 0.05
    assert outcome.result.grasp_pose.header.frame_id == "world"  # the memory's frame
    assert len(outcome.result.trajectory.points) > 10
    assert {"locate", "plan", "execute"} <= set(stages)


def test_grasp_node_survives_good_and_failing_goals(grasp_action, monkeypatch):
    """Failing goals (their reason is the result message), an exception inside, successes between."""
    node, action = grasp_action
    nan_target = pose_goal(DUCK)
    nan_target.target.pose.position.x = float("nan")
    script = [(Grasp.Goal(text="yellow bath duck", backend="teleport"), "teleport"),
              (Grasp.Goal(), "neither text nor a target pose"),
              (nan_target, "NaN"),
              (pose_goal(DUCK, "no_such_frame"), "no_such_frame"),
              (pose_goal(DUCK + [2.0, 0.0, 0.0]), ""),  # nothing of the memory there: no grasp, the reason says why
              (Grasp.Goal(text="yellow bath duck"), None)]
    for goal, words in script:
        outcome = run(action, goal)
        if words is None:
            assert outcome.status == SUCCEEDED and outcome.result.success, outcome.result.message
        else:
            assert outcome.status == ABORTED and not outcome.result.success and outcome.result.message, outcome.result.message
            assert words in outcome.result.message, outcome.result.message

    def broken(*args, **kwargs):
        raise RuntimeError("planner crashed")

    monkeypatch.setattr(node.handler, "execute_msg", broken)
    outcome = run(action, Grasp.Goal(text="yellow bath duck"))
    assert outcome.status == ABORTED and "RuntimeError: planner crashed" in outcome.result.message
    monkeypatch.undo()
    outcome = run(action, Grasp.Goal(text="yellow bath duck"))
    assert outcome.status == SUCCEEDED, outcome.result.message


def test_one_grasp_at_a_time(grasp_action):
    node, action = grasp_action
    first = wait(action.send_goal_async(Grasp.Goal(text="yellow bath duck")))
    second = wait(action.send_goal_async(Grasp.Goal(text="yellow bath duck")))
    assert first.accepted and not second.accepted
    assert wait(first.get_result_async()).status == SUCCEEDED
    third = wait(action.send_goal_async(Grasp.Goal(text="yellow bath duck")))
    assert third.accepted and wait(third.get_result_async()).status == SUCCEEDED
