"""The query and mapping nodes end to end over ROS 2 (service call, action with feedback and cancel).
Run where ROS 2 and the built m3_msgs are sourced (colcon test); skipped elsewhere."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from ros_scene import DUCK_WORLD, T_WORLD_BASE, T_WORLD_CAM

from m3_memory.conventions import invert_T, quat_wxyz_from_T, quat_wxyz_to_xyzw

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("m3_msgs")

from geometry_msgs.msg import TransformStamped  # noqa: E402
from rclpy.action import ActionClient  # noqa: E402
from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from tf2_ros.static_transform_broadcaster import StaticTransformBroadcaster  # noqa: E402
from visualization_msgs.msg import Marker  # noqa: E402

from m3_msgs.action import BuildMemory  # noqa: E402
from m3_msgs.srv import QueryText  # noqa: E402

TIMEOUT = 60.0


def static_tf(parent: str, child: str, T: np.ndarray) -> TransformStamped:
    msg = TransformStamped()
    msg.header.frame_id, msg.child_frame_id = parent, child
    x, y, z, w = quat_wxyz_to_xyzw(quat_wxyz_from_T(T))
    t = msg.transform
    t.translation.x, t.translation.y, t.translation.z = (float(v) for v in T[:3, 3])
    t.rotation.x, t.rotation.y, t.rotation.z, t.rotation.w = float(x), float(y), float(z), float(w)
    return msg


def wait(future, timeout: float = TIMEOUT):
    """The future's result, once the background executor has completed it."""
    end = time.monotonic() + timeout
    while not future.done():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)
    return future.result()


@pytest.fixture
def graph():
    """Start ROS with global parameter overrides; returns (add_node, client node); spins in a thread."""
    executor = MultiThreadedExecutor()

    def start(*params: str):
        args = ["--ros-args", *[a for p in params for a in ("-p", p)]]
        rclpy.init(args=args)
        client = rclpy.create_node("m3_test_client")
        executor.add_node(client)
        threading.Thread(target=executor.spin, daemon=True).start()
        return executor.add_node, client

    yield start
    executor.shutdown()
    rclpy.try_shutdown()


def test_query_service(graph, duck_memory):
    from m3_memory.ros.query_node import QueryNode

    add, client = graph(f"memory:={duck_memory}", "model:=clip", "default_width:=160", "default_height:=120",
                        "default_hfov:=1.2")
    broadcaster = StaticTransformBroadcaster(client)
    broadcaster.sendTransform([static_tf("world", "base_link", T_WORLD_BASE),
                               static_tf("world", "camera_color_optical_frame", T_WORLD_CAM)])
    markers = []
    client.create_subscription(Marker, "/m3_query/target_marker", markers.append, 10)
    add(QueryNode())
    service = client.create_client(QueryText, "/m3_query/query_text")
    assert service.wait_for_service(timeout_sec=TIMEOUT)

    response = wait(service.call_async(QueryText.Request(text="yellow bath duck")))
    assert response.success and response.found, response.message
    assert response.target.header.frame_id == "base_link"
    p = response.target.pose.position
    assert np.allclose([p.x, p.y, p.z], (invert_T(T_WORLD_BASE) @ np.r_[DUCK_WORLD, 1.0])[:3], atol=0.03)
    assert (response.heatmap.width, response.heatmap.height, response.heatmap.encoding) == (160, 120, "32FC1")
    end = time.monotonic() + 5
    while not markers and time.monotonic() < end:
        time.sleep(0.05)
    assert markers and markers[-1].header.frame_id == "base_link"

    for request, problem in ((QueryText.Request(text=""), "text is empty"),
                             (QueryText.Request(text="duck", target_frame="no_such_frame"), "no_such_frame")):
        response = wait(service.call_async(request))
        assert not response.success and problem in response.message


def test_query_service_without_a_memory(graph, tmp_path):
    from m3_memory.ros.query_node import QueryNode

    add, client = graph(f"memory:={tmp_path / 'missing.m3'}")
    add(QueryNode())
    service = client.create_client(QueryText, "/m3_query/query_text")
    assert service.wait_for_service(timeout_sec=TIMEOUT)
    response = wait(service.call_async(QueryText.Request(text="yellow bath duck")))
    assert not response.success and "missing.m3" in response.message


def test_build_action_feedback_cancel_and_bad_bag(graph, synth, tmp_path):
    from m3_memory.ros.mapping_node import MappingNode

    add, client = graph(f"output_dir:={tmp_path}", "model:=clip-fixture")
    add(MappingNode())
    action = ActionClient(client, BuildMemory, "/m3_mapping/build_memory")
    assert action.wait_for_server(timeout_sec=TIMEOUT)

    stages, cancel = [], {}

    def on_feedback(msg) -> None:
        stages.append(msg.feedback.stage)
        if msg.feedback.stage == "train" and "sent" not in cancel:
            cancel["sent"] = cancel["handle"].cancel_goal_async()

    goal = BuildMemory.Goal(bag_path=str(synth.rosbag2), fast=True, out="scan.m3")
    handle = wait(action.send_goal_async(goal, feedback_callback=on_feedback))
    assert handle.accepted
    cancel["handle"] = handle
    outcome = wait(handle.get_result_async(), timeout=600)
    assert outcome.status == 5 and not outcome.result.success  # GoalStatus.STATUS_CANCELED
    assert {"check", "read", "train"} <= set(stages)
    assert not (tmp_path / "scan.m3").exists()

    handle = wait(action.send_goal_async(BuildMemory.Goal(bag_path=str(tmp_path / "no_bag"))))
    outcome = wait(handle.get_result_async())
    assert outcome.status == 6 and "does not exist" in outcome.result.message  # GoalStatus.STATUS_ABORTED
