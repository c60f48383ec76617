"""The query and mapping nodes end to end over ROS 2: service calls and action goals, good and bad
ones in a row (the node must keep answering), parameter changes, latched outputs, a live recording
from real publishers. Run where ROS 2 and the built m3_msgs are sourced (colcon test); skipped elsewhere."""

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
from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.action import ActionClient  # noqa: E402
from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from tf2_ros.static_transform_broadcaster import StaticTransformBroadcaster  # noqa: E402
from visualization_msgs.msg import Marker  # noqa: E402

from m3_msgs.action import BuildMemory  # noqa: E402
from m3_msgs.srv import QueryText  # noqa: E402

TIMEOUT = 60.0
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
SUCCEEDED, CANCELED, ABORTED = 4, 5, 6  # action_msgs/GoalStatus


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


def wait_for(condition, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while not condition() and time.monotonic() < end:
        time.sleep(0.05)
    return condition()


@pytest.fixture
def graph():
    """Start ROS (rclpy.init first, then the executor) with global parameter overrides; returns
    (add_node, client node); the executor spins in a thread."""
    started = {}

    def start(*params: str):
        rclpy.init(args=["--ros-args", *[a for p in params for a in ("-p", p)]])
        executor = started["executor"] = MultiThreadedExecutor()
        client = rclpy.create_node("m3_test_client")
        executor.add_node(client)
        threading.Thread(target=executor.spin, daemon=True).start()
        return executor.add_node, client

    yield start
    if "executor" in started:
        nodes = started["executor"].get_nodes()
        started["executor"].shutdown()
        for node in nodes:  # gone from the graph: the next test's late subscribers must not hear them
            node.destroy_node()
    rclpy.try_shutdown()


def latest(client, msg_type, topic: str) -> list:
    """Messages of a late, transient-local subscriber (it gets the publisher's last message)."""
    got = []
    client.create_subscription(msg_type, topic, got.append, LATCHED)
    return got


def set_parameters(client, node: str, **values):
    service = client.create_client(SetParameters, f"/{node}/set_parameters")
    assert service.wait_for_service(timeout_sec=TIMEOUT)
    request = SetParameters.Request(parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()])
    return wait(service.call_async(request)).results


def query_node(graph, duck_memory, *params):
    from m3_memory.ros.query_node import QueryNode

    add, client = graph(f"memory:={duck_memory}", "model:=clip", "default_width:=160", "default_height:=120",
                        "default_hfov:=1.2", *params)
    StaticTransformBroadcaster(client).sendTransform([static_tf("world", "base_link", T_WORLD_BASE),
                                                      static_tf("world", "camera_color_optical_frame", T_WORLD_CAM)])
    node = QueryNode()
    add(node)
    service = client.create_client(QueryText, "/m3_query/query_text")
    assert service.wait_for_service(timeout_sec=TIMEOUT)
    return node, client, service


def test_query_service_and_latched_outputs(graph, duck_memory):
    node, client, service = query_node(graph, duck_memory)
    response = wait(service.call_async(QueryText.Request(text="yellow bath duck")))
    assert response.success and response.found, response.message
    assert response.target.header.frame_id == "base_link"
    p = response.target.pose.position
    assert np.allclose([p.x, p.y, p.z], (invert_T(T_WORLD_BASE) @ np.r_[DUCK_WORLD, 1.0])[:3], atol=0.03)
    assert (response.heatmap.width, response.heatmap.height, response.heatmap.encoding) == (160, 120, "32FC1")

    # subscribers that come after the answer (RViz started later) still get it
    markers, heatmaps = latest(client, Marker, "/m3_query/target_marker"), latest(client, Image, "/m3_query/heatmap")
    status = latest(client, String, "/m3_query/memory_status")
    assert wait_for(lambda: markers and heatmaps and status)
    assert markers[-1].header.frame_id == "base_link" and markers[-1].text == "yellow bath duck"
    assert heatmaps[-1].width == 160 and status[-1].data.startswith("loaded memory") and "frame world" in status[-1].data


def test_query_node_survives_good_and_bad_requests(graph, duck_memory, monkeypatch):
    """Successes and failures in turn (rclpy refused a second log severity from one line, which killed
    the node), malformed fields, and an exception inside the handler: every request is answered."""
    node, client, service = query_node(graph, duck_memory)
    nan_pose = QueryText.Request(text="duck")
    nan_pose.camera_pose.header.frame_id = "base_link"
    nan_pose.camera_pose.pose.position.x = float("nan")
    bad_info = QueryText.Request(text="duck")
    bad_info.camera_info.width, bad_info.camera_info.height = 160, 120  # k all zero
    rgb_depth = QueryText.Request(text="duck")
    rgb_depth.depth.width, rgb_depth.depth.height, rgb_depth.depth.encoding, rgb_depth.depth.step = 1, 1, "rgb8", 3
    rgb_depth.depth.data = [0, 0, 0]
    script = [(QueryText.Request(text="yellow bath duck"), True, "found"),
              (QueryText.Request(text=""), False, "text is empty"),
              (QueryText.Request(text="yellow bath duck"), True, "found"),
              (QueryText.Request(text="duck", target_frame="no_such_frame"), False, "no_such_frame"),
              (nan_pose, False, "NaN"),
              (bad_info, False, "pinhole k"),
              (rgb_depth, False, "16UC1 or 32FC1"),
              (QueryText.Request(text="yellow bath duck"), True, "found")]
    for request, ok, words in script:
        response = wait(service.call_async(request))
        assert response.success == ok and words in response.message, (request.text, response.message)
    tf_failure = wait(service.call_async(QueryText.Request(text="duck", target_frame="no_such_frame"))).message
    assert "no transform no_such_frame <- world" in tf_failure and "tf_timeout" in tf_failure

    calls = []

    def broken(*args):
        calls.append(1)
        raise RuntimeError("renderer crashed")

    monkeypatch.setattr(node.handler, "handle_msg", broken)
    response = wait(service.call_async(QueryText.Request(text="yellow bath duck")))
    assert not response.success and "RuntimeError: renderer crashed" in response.message and calls
    monkeypatch.undo()
    response = wait(service.call_async(QueryText.Request(text="yellow bath duck")))
    assert response.success and response.found, response.message


def test_query_parameters_change_at_run_time(graph, duck_memory, tmp_path):
    node, client, service = query_node(graph, duck_memory)
    results = set_parameters(client, "m3_query", camera_info_topic="/other/camera_info")
    assert not results[0].successful and "read-only" in results[0].reason  # rclpy refuses it itself
    results = set_parameters(client, "m3_query", threshold="half")
    assert not results[0].successful and "otsu" in results[0].reason
    results = set_parameters(client, "m3_query", memory=str(tmp_path / "missing.m3"))
    assert not results[0].successful and "failed to load" in results[0].reason
    assert node.get_parameter("memory").value == str(duck_memory)  # refused: the old value and memory stay
    results = set_parameters(client, "m3_query", target_frame="camera_color_optical_frame")
    assert results[0].successful, results[0].reason
    response = wait(service.call_async(QueryText.Request(text="yellow bath duck")))
    assert response.success and response.target.header.frame_id == "camera_color_optical_frame", response.message


def test_query_service_without_a_memory(graph, tmp_path):
    from m3_memory.ros.query_node import QueryNode

    add, client = graph(f"memory:={tmp_path / 'missing.m3'}")
    add(QueryNode())
    service = client.create_client(QueryText, "/m3_query/query_text")
    assert service.wait_for_service(timeout_sec=TIMEOUT)
    response = wait(service.call_async(QueryText.Request(text="yellow bath duck")))
    assert not response.success and "missing.m3" in response.message
    status = latest(client, String, "/m3_query/memory_status")
    assert wait_for(lambda: status) and "missing.m3" in status[-1].data


def build_action(graph, tmp_path):
    from m3_memory.ros.mapping_node import MappingNode

    add, client = graph(f"output_dir:={tmp_path}", "model:=clip-fixture", "world_frame:=world")  # the synthetic bag's frame
    node = MappingNode()
    add(node)
    action = ActionClient(client, BuildMemory, "/m3_mapping/build_memory")
    assert action.wait_for_server(timeout_sec=TIMEOUT)
    return node, client, action


def test_build_action_feedback_cancel_and_bad_goals(graph, synth, tmp_path, monkeypatch):
    node, client, action = build_action(graph, tmp_path)
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
    assert outcome.status == CANCELED and not outcome.result.success
    assert {"check", "read", "train"} <= set(stages)
    assert not (tmp_path / "scan.m3").exists()

    handle = wait(action.send_goal_async(BuildMemory.Goal(bag_path=str(tmp_path / "no_bag"))))
    outcome = wait(handle.get_result_async())
    assert outcome.status == ABORTED and "does not exist" in outcome.result.message

    def broken(goal_handle):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(node, "build", broken)
    handle = wait(action.send_goal_async(BuildMemory.Goal(bag_path=str(synth.rosbag2))))
    outcome = wait(handle.get_result_async())
    assert outcome.status == ABORTED and "RuntimeError: out of memory" in outcome.result.message
    monkeypatch.undo()
    handle = wait(action.send_goal_async(BuildMemory.Goal(bag_path=str(tmp_path / "no_bag"))))
    assert handle.accepted  # the failed goal released the one-at-a-time lock
    outcome = wait(handle.get_result_async())
    assert outcome.status == ABORTED and "does not exist" in outcome.result.message
    status = latest(client, String, "/m3_mapping/status")
    assert wait_for(lambda: status) and "does not exist" in status[-1].data


def test_live_recording_from_publishers(graph, synth, tmp_path):
    """A live goal records what real publishers send (the synthetic bag's messages, replayed over DDS),
    one writer thread owning the bag; the recording reads back like the source."""
    from rosbags.rosbag2 import Reader
    from rosidl_runtime_py.utilities import get_message

    from m3_memory.recording import open_recording
    from m3_memory.recording.compare import compare_recordings

    node, client, action = build_action(graph, tmp_path)
    with Reader(synth.rosbag2) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        messages = [(c.topic, bytes(data)) for c, _, data in reader.messages()]
    reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    publishers = {topic: client.create_publisher(get_message(t), topic, LATCHED if topic == "/tf_static" else reliable)
                  for topic, t in types.items()}
    recording, stages, published = threading.Event(), [], threading.Event()

    def replay() -> None:
        recording.wait(TIMEOUT)
        assert wait_for(lambda: all(p.get_subscription_count() > 0 for p in publishers.values()))
        for topic, data in messages:
            publishers[topic].publish(data)  # serialized, as recorded
            time.sleep(0.01)
        published.set()

    def on_feedback(msg) -> None:
        stages.append(msg.feedback.stage)
        if msg.feedback.stage == "record":
            recording.set()
        if msg.feedback.stage == "read" and "cancel" not in stages:
            stages.append("cancel")
            handle.cancel_goal_async()  # the bag is what this test is about, not the build

    threading.Thread(target=replay, daemon=True).start()
    handle = wait(action.send_goal_async(BuildMemory.Goal(record_seconds=6.0, fast=True), feedback_callback=on_feedback))
    outcome = wait(handle.get_result_async(), timeout=600)
    assert published.is_set() and stages[0] == "record" and "check" in stages, stages
    assert outcome.status == CANCELED and outcome.result.recorded_bag, outcome.result.message
    with Reader(outcome.result.recorded_bag) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
    p = node.params
    assert {p.color_topic, p.depth_topic, p.camera_info_topic, "/tf", "/tf_static"} <= set(counts)
    assert all(counts[topic] == sum(1 for t, _ in messages if t == topic) for topic in counts), counts
    diff = compare_recordings(open_recording(synth.rosbag2), open_recording(outcome.result.recorded_bag))
    assert diff["frames_reference"] == diff["frames_other"] > 0
    assert diff["rgb"] == diff["depth_m"] == diff["pose"] == diff["stamp_s"] == 0
