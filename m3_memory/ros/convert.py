"""ROS messages <-> numpy, without rclpy.

Reading works on any object with the message's field names (rclpy messages, rosbags messages).
Building goes through a factory ``make(typename, **fields)`` ("geometry_msgs/msg/Pose", ...):
the nodes pass one that builds rclpy messages, the tests one that builds rosbags messages
(:func:`m3_memory.ros.interfaces.message_factory`). Primitive arrays are handed to ``make`` as
numpy arrays, numbers as Python ``int`` / ``float``. Poses are ``T_a_b`` 4x4 float64 (metres);
quaternions become xyzw only here, at the message edge.
"""

from __future__ import annotations

import array
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from m3_memory.conventions import T_from_quat_wxyz, intrinsics_matrix, quat_wxyz_from_T, quat_wxyz_to_xyzw, quat_xyzw_to_wxyz
from m3_memory.errors import InputError
from m3_memory.recording.rosbag2 import decode_image

Make = Callable[..., Any]
NS_PER_S = 1_000_000_000
Lookup = Callable[[str, str, int], tuple[np.ndarray, int]]
"""``lookup(target_frame, source_frame, stamp ns) -> (T_target_source [4, 4], stamp ns)``: the transform
tf has at that stamp (stamp 0: the latest); raises :class:`m3_memory.recording.tf.TfLookupError` with a
one-line reason (unknown frame, not connected, not available at that stamp within the timeout)."""


@dataclass
class StampedPose:
    """A pose ``T [4, 4]`` of something in ``frame_id`` (metres), at ``stamp`` nanoseconds."""

    T: np.ndarray
    frame_id: str
    stamp: int = 0


@dataclass
class StampedImage:
    """An image ``values [H, W]`` in ``frame_id`` at ``stamp`` nanoseconds."""

    values: np.ndarray
    frame_id: str
    stamp: int = 0


class Intrinsics(NamedTuple):
    """A pinhole view: K [3, 3] OpenCV intrinsics (pixels) of a width x height image."""

    K: np.ndarray
    width: int
    height: int


def rclpy_value(value: Any) -> Any:
    """A field value as rclpy's message setters take it: numpy uint8 arrays as ``array('B')``
    (fast for images), other numpy arrays as lists; everything else unchanged."""
    if isinstance(value, np.ndarray):
        return array.array("B", value.tobytes()) if value.dtype == np.uint8 else value.tolist()
    return value


def stamp_msg(make: Make, stamp_ns: int):
    """builtin_interfaces/Time of a stamp in integer nanoseconds."""
    return make("builtin_interfaces/msg/Time", sec=int(stamp_ns // NS_PER_S), nanosec=int(stamp_ns % NS_PER_S))


def stamp_ns(stamp) -> int:
    """builtin_interfaces/Time -> integer nanoseconds."""
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


def header_msg(make: Make, frame_id: str, stamp: int):
    """std_msgs/Header in ``frame_id`` at ``stamp`` nanoseconds."""
    return make("std_msgs/msg/Header", stamp=stamp_msg(make, stamp), frame_id=frame_id)


def pose_msg(make: Make, T: np.ndarray):
    """geometry_msgs/Pose of a rigid transform T [4, 4] (the child frame's pose in the parent)."""
    x, y, z, w = quat_wxyz_to_xyzw(quat_wxyz_from_T(T))
    t = np.asarray(T, dtype=np.float64)[:3, 3]
    return make("geometry_msgs/msg/Pose",
                position=make("geometry_msgs/msg/Point", x=float(t[0]), y=float(t[1]), z=float(t[2])),
                orientation=make("geometry_msgs/msg/Quaternion", x=float(x), y=float(y), z=float(z), w=float(w)))


def pose_stamped_msg(make: Make, T: np.ndarray | None, frame_id: str, stamp: int):
    """geometry_msgs/PoseStamped of T [4, 4] in ``frame_id``; None -> identity pose with an empty frame_id
    (the convention of m3_msgs for "no pose")."""
    if T is None:
        return make("geometry_msgs/msg/PoseStamped", header=header_msg(make, "", stamp), pose=pose_msg(make, np.eye(4)))
    return make("geometry_msgs/msg/PoseStamped", header=header_msg(make, frame_id, stamp), pose=pose_msg(make, T))


def vector3_msg(make: Make, v) -> Any:
    """geometry_msgs/Vector3 of a 3-vector."""
    x, y, z = (float(c) for c in np.asarray(v, dtype=np.float64).reshape(3))
    return make("geometry_msgs/msg/Vector3", x=x, y=y, z=z)


def matrix_of_pose(pose, where: str) -> np.ndarray:
    """geometry_msgs/Pose -> T [4, 4]; InputError for a non-finite pose or a zero quaternion."""
    p, q = pose.position, pose.orientation
    xyzw = np.array([q.x, q.y, q.z, q.w], dtype=np.float64)
    xyz = np.array([p.x, p.y, p.z], dtype=np.float64)
    if not (np.all(np.isfinite(xyzw)) and np.all(np.isfinite(xyz))):
        raise InputError(where, "pose contains NaN or infinity")
    if np.linalg.norm(xyzw) < 1e-6:
        raise InputError(where, "orientation is the zero quaternion (set w = 1 for no rotation)")
    return T_from_quat_wxyz(quat_xyzw_to_wxyz(xyzw), xyz)


def stamped_pose_of(msg, where: str) -> StampedPose | None:
    """geometry_msgs/PoseStamped -> StampedPose (frame without a leading '/'), None when its frame
    is empty (the field was left unset); InputError naming ``where`` for a malformed pose."""
    if not msg.header.frame_id:
        return None
    return StampedPose(matrix_of_pose(msg.pose, where), msg.header.frame_id.lstrip("/"), stamp_ns(msg.header.stamp))


def float_image_msg(make: Make, values: np.ndarray | None, frame_id: str, stamp: int):
    """sensor_msgs/Image 32FC1 of float values [H, W]; None -> an empty image (width 0)."""
    if values is None:
        return make("sensor_msgs/msg/Image", header=header_msg(make, frame_id, stamp), height=0, width=0,
                    encoding="32FC1", is_bigendian=0, step=0, data=np.zeros(0, dtype=np.uint8))
    a = np.ascontiguousarray(values, dtype="<f4")  # [H, W]
    h, w = a.shape
    return make("sensor_msgs/msg/Image", header=header_msg(make, frame_id, stamp), height=int(h), width=int(w),
                encoding="32FC1", is_bigendian=0, step=int(w * 4), data=a.view(np.uint8).reshape(-1))


def depth_of_image(msg, where: str) -> np.ndarray | None:
    """sensor_msgs/Image (16UC1 mm or 32FC1 m) -> depth float32 [H, W] metres; width 0 -> None."""
    if msg.width == 0:
        return None
    depth = decode_image(msg, where)
    if depth.ndim != 2:
        raise InputError(where, f"a depth image must be 16UC1 or 32FC1, got {msg.encoding}")
    return depth


def intrinsics_of_info(info, where: str) -> Intrinsics | None:
    """sensor_msgs/CameraInfo -> its intrinsics; width 0 -> None."""
    if info.width == 0:
        return None
    K = np.asarray(info.k, dtype=np.float64).reshape(3, 3)
    if info.height == 0 or not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0 or not np.allclose(K[2], [0, 0, 1]):
        raise InputError(where, f"camera_info needs width, height and a pinhole k (got {info.width}x{info.height}, "
                         f"k {K.reshape(-1).tolist()})")
    return Intrinsics(K, int(info.width), int(info.height))


def intrinsics_of_fov(width: int, height: int, hfov: float) -> Intrinsics:
    """A centred pinhole view with square pixels and horizontal field of view ``hfov`` radians."""
    f = width / 2.0 / np.tan(hfov / 2.0)
    return Intrinsics(intrinsics_matrix(f, f, (width - 1) / 2.0, (height - 1) / 2.0), int(width), int(height))


def target_marker_msg(make: Make, T: np.ndarray | None, size, frame_id: str, stamp: int, text: str, ns: str = "m3"):
    """visualization_msgs/Marker of a query target: a yellow box of ``size`` [3] metres (at least
    2 cm a side) at pose T [4, 4] in ``frame_id``, labelled with ``text``; T None -> DELETE the
    previous marker."""
    cube, delete = 1, 2  # Marker.CUBE, Marker.DELETE
    scale = np.maximum(np.asarray(size, dtype=np.float64).reshape(3), 0.02)
    return make("visualization_msgs/msg/Marker", header=header_msg(make, frame_id, stamp), ns=ns, id=0, type=cube,
                action=delete if T is None else 0, pose=pose_msg(make, np.eye(4) if T is None else T),
                scale=vector3_msg(make, scale),
                color=make("std_msgs/msg/ColorRGBA", r=1.0, g=0.85, b=0.0, a=0.6), text=text)


def joint_trajectory_msg(make: Make, joint_names: list[str], q: np.ndarray, times: np.ndarray, frame_id: str, stamp: int):
    """trajectory_msgs/JointTrajectory of positions q [T, J] (radians) reached at ``times`` [T] seconds
    after ``stamp``; no joints -> an empty trajectory."""
    q = np.asarray(q, dtype=np.float64).reshape(-1, len(joint_names)) if joint_names else np.zeros((0, 0))
    points = []
    for qi, t in zip(q, np.asarray(times, dtype=np.float64).reshape(-1)):
        ns = round(float(t) * NS_PER_S)
        points.append(make("trajectory_msgs/msg/JointTrajectoryPoint", positions=qi.copy(),
                           time_from_start=make("builtin_interfaces/msg/Duration", sec=ns // NS_PER_S,
                                                nanosec=ns % NS_PER_S)))
    return make("trajectory_msgs/msg/JointTrajectory", header=header_msg(make, frame_id, stamp),
                joint_names=list(joint_names), points=points)
