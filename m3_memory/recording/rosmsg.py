"""ROS 2 messages as rosbags builds them (no ROS install): the typestore, headers and
transforms. The only place where quaternions are xyzw (the ROS message edge)."""

from __future__ import annotations

from functools import cache

import numpy as np

from m3_memory.conventions import T_from_quat_wxyz, quat_wxyz_from_T, quat_wxyz_to_xyzw, quat_xyzw_to_wxyz


@cache
def typestore():
    """rosbags' message types of ROS 2 Humble (standard messages, CDR serialisation)."""
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_HUMBLE)


def stamp_seconds(header) -> float:
    """std_msgs/Header stamp -> seconds."""
    return header.stamp.sec + header.stamp.nanosec * 1e-9


def header(stamp: float, frame_id: str):
    """std_msgs/Header at ``stamp`` seconds."""
    T = typestore().types
    ns = round(stamp * 1e9)
    return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=ns // 1_000_000_000,
                                                                           nanosec=ns % 1_000_000_000),
                                    frame_id=frame_id)


def transform_msg(T_parent_child: np.ndarray, stamp: float, parent: str, child: str):
    """4x4 pose -> geometry_msgs/TransformStamped (parent <- child)."""
    T = typestore().types
    x, y, z, w = quat_wxyz_to_xyzw(quat_wxyz_from_T(T_parent_child))
    t = T_parent_child[:3, 3]
    return T["geometry_msgs/msg/TransformStamped"](
        header=header(stamp, parent), child_frame_id=child,
        transform=T["geometry_msgs/msg/Transform"](
            translation=T["geometry_msgs/msg/Vector3"](x=float(t[0]), y=float(t[1]), z=float(t[2])),
            rotation=T["geometry_msgs/msg/Quaternion"](x=x, y=y, z=z, w=w)))


def pose_of(tf) -> np.ndarray:
    """geometry_msgs/TransformStamped -> T_parent_child [4, 4]."""
    r, p = tf.transform.rotation, tf.transform.translation
    return T_from_quat_wxyz(quat_xyzw_to_wxyz((r.x, r.y, r.z, r.w)), (p.x, p.y, p.z))


def tf_message(transforms: list):
    """tf2_msgs/TFMessage holding ``transforms``."""
    return typestore().types["tf2_msgs/msg/TFMessage"](transforms=transforms)


def serialize(msg, msgtype: str) -> bytes:
    return bytes(typestore().serialize_cdr(msg, msgtype))


def deserialize(data: bytes, msgtype: str):
    return typestore().deserialize_cdr(data, msgtype)
