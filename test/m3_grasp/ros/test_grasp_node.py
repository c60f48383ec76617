"""The grasp node end to end over ROS 2 (action with feedback per stage). Run where ROS 2 and the
built m3_msgs are sourced (colcon test); skipped elsewhere."""

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


def wait(future, timeout: float = TIMEOUT):
    end = time.monotonic() + timeout
    while not future.done():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)
    return future.result()


def test_grasp_action(tabletop_memory, tmp_path):
    from m3_grasp.ros.grasp_node import GraspNode

    rclpy.init(args=["--ros-args", "-p", f"memory:={tabletop_memory}", "-p", f"out_dir:={tmp_path}"])
    executor = MultiThreadedExecutor()
    try:
        client = rclpy.create_node("m3_test_client")
        T = T_world_base(*STANCE, RobotConfig.load().base_height)
        tf = TransformStamped()
        tf.header.frame_id, tf.child_frame_id = "world", "base_link"
        tf.transform.translation.x, tf.transform.translation.y, tf.transform.translation.z = (float(v) for v in T[:3, 3])
        x, y, z, w = quat_wxyz_to_xyzw(quat_wxyz_from_T(T))
        tf.transform.rotation.x, tf.transform.rotation.y, tf.transform.rotation.z, tf.transform.rotation.w = x, y, z, w
        StaticTransformBroadcaster(client).sendTransform(tf)
        for node in (client, GraspNode()):
            executor.add_node(node)
        threading.Thread(target=executor.spin, daemon=True).start()
        action = ActionClient(client, Grasp, "/m3_grasp/grasp")
        assert action.wait_for_server(timeout_sec=TIMEOUT)

        stages = []
        handle = wait(action.send_goal_async(Grasp.Goal(text="yellow bath duck"),
                                             feedback_callback=lambda msg: stages.append(msg.feedback.stage)))
        outcome = wait(handle.get_result_async())
        assert outcome.status == 4 and outcome.result.success, outcome.result.message  # GoalStatus.STATUS_SUCCEEDED
        p = outcome.result.grasp_pose.pose.position
        assert np.linalg.norm([p.x - DUCK[0], p.y - DUCK[1], p.z - DUCK[2]]) < 0.05
        assert len(outcome.result.trajectory.points) > 10
        assert {"locate", "plan", "execute"} <= set(stages)

        handle = wait(action.send_goal_async(Grasp.Goal(text="yellow bath duck", backend="teleport")))
        outcome = wait(handle.get_result_async())
        assert outcome.status == 6 and "teleport" in outcome.result.message  # GoalStatus.STATUS_ABORTED
    finally:
        executor.shutdown()
        rclpy.try_shutdown()
