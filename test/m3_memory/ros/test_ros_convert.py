"""Message <-> numpy conversions at the ROS edge (rosbags messages stand in for rclpy's)."""

from __future__ import annotations

import array

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from m3_memory.conventions import make_T
from m3_memory.errors import InputError
from m3_memory.recording.rosbag2 import decode_image
from m3_memory.ros.convert import (
    depth_of_image,
    float_image_msg,
    intrinsics_of_fov,
    intrinsics_of_info,
    joint_trajectory_msg,
    matrix_of_pose,
    pose_stamped_msg,
    rclpy_value,
    stamp_msg,
    stamp_ns,
    target_marker_msg,
)


def roundtrip(store, msg):
    return store.deserialize_cdr(store.serialize_cdr(msg, msg.__msgtype__), msg.__msgtype__)


def test_pose_roundtrip_and_quaternion_order(store, make):
    T = make_T(Rotation.from_euler("xyz", [0.3, -0.2, 1.1]).as_matrix(), [1.0, -2.0, 0.5])
    msg = roundtrip(store, pose_stamped_msg(make, T, "base_link", 1_700_000_000_123_456_789))
    assert msg.header.frame_id == "base_link" and stamp_ns(msg.header.stamp) == 1_700_000_000_123_456_789
    q = msg.pose.orientation
    assert np.allclose(Rotation.from_quat([q.x, q.y, q.z, q.w]).as_matrix(), T[:3, :3])  # xyzw at the edge
    assert np.allclose(matrix_of_pose(msg.pose, "pose"), T)
    empty = pose_stamped_msg(make, None, "ignored", 0)
    assert empty.header.frame_id == "" and empty.pose.orientation.w == 1.0


def test_stamps_are_exact_nanoseconds(make):
    for ns in (0, 1, 999_999_999, 1_000_000_000, 1_732_000_000_000_000_001):
        assert stamp_ns(stamp_msg(make, ns)) == ns


def test_matrix_of_pose_rejects_bad_poses(make):
    pose = pose_stamped_msg(make, np.eye(4), "w", 0).pose
    pose.orientation.w = 0.0
    with pytest.raises(InputError, match="zero quaternion"):
        matrix_of_pose(pose, "camera_pose")
    pose.orientation.w, pose.position.y = 1.0, float("inf")
    with pytest.raises(InputError, match="NaN or infinity"):
        matrix_of_pose(pose, "camera_pose")


def test_float_image_roundtrip(store, make):
    values = np.random.default_rng(0).random((3, 5), dtype=np.float32)
    msg = roundtrip(store, float_image_msg(make, values, "cam", 5))
    assert (msg.encoding, msg.width, msg.height, msg.step, msg.header.frame_id) == ("32FC1", 5, 3, 20, "cam")
    assert np.array_equal(decode_image(msg, "heatmap"), values)
    assert float_image_msg(make, None, "", 0).width == 0


def test_depth_images(make):
    mm = np.array([[0, 1000], [1500, 65535]], dtype="<u2")
    msg = make("sensor_msgs/msg/Image", width=2, height=2, encoding="16UC1", step=4, data=mm.view(np.uint8).reshape(-1))
    assert np.allclose(depth_of_image(msg, "depth"), [[0.0, 1.0], [1.5, 65.535]])
    assert depth_of_image(make("sensor_msgs/msg/Image"), "depth") is None


def test_intrinsics(make):
    view = intrinsics_of_fov(640, 480, np.pi / 2)
    assert view.width == 640 and np.isclose(view.K[0, 0], 320.0) and np.isclose(view.K[0, 2], 319.5)
    info = make("sensor_msgs/msg/CameraInfo", width=640, height=480, k=view.K.reshape(-1))
    assert np.array_equal(intrinsics_of_info(info, "info").K, view.K)
    assert intrinsics_of_info(make("sensor_msgs/msg/CameraInfo"), "info") is None


def test_joint_trajectory(store, make):
    q = np.arange(14, dtype=float).reshape(2, 7)
    msg = roundtrip(store, joint_trajectory_msg(make, [f"j{i}" for i in range(7)], q, np.array([0.0, 1.25]), "", 9))
    assert msg.joint_names == [f"j{i}" for i in range(7)] and np.array_equal(msg.points[1].positions, q[1])
    assert (msg.points[1].time_from_start.sec, msg.points[1].time_from_start.nanosec) == (1, 250_000_000)


def test_empty_joint_trajectory(store, make):
    """A failed grasp has no plan: no joints, no points (reshaping [0] to [-1, 0] raised, losing the result)."""
    msg = roundtrip(store, joint_trajectory_msg(make, [], np.zeros((0, 0)), np.zeros(0), "", 0))
    assert msg.joint_names == [] and msg.points == []


def test_target_marker(store, make):
    marker = roundtrip(store, target_marker_msg(make, make_T(np.eye(3), [1, 2, 3]), [0.1, 0.0, 0.05], "base_link", 3, "duck"))
    assert (marker.type, marker.action, marker.text, marker.header.frame_id) == (1, 0, "duck", "base_link")
    assert (marker.scale.x, marker.scale.y, marker.scale.z) == pytest.approx((0.1, 0.02, 0.05))
    assert target_marker_msg(make, None, np.zeros(3), "", 0, "duck").action == 2


def test_rclpy_values():
    data = rclpy_value(np.array([1, 2, 255], dtype=np.uint8))
    assert isinstance(data, array.array) and data.typecode == "B" and list(data) == [1, 2, 255]
    assert rclpy_value(np.array([0.5, 1.0])) == [0.5, 1.0] and rclpy_value("x") == "x"
