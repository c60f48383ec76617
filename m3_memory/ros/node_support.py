"""What every m3 node does with rclpy: declare its parameters, build messages, look up tf, spin."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.duration import Duration
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.time import Time
from rosidl_runtime_py.utilities import get_message
from tf2_ros import TransformException
from tf2_ros.buffer import Buffer
from tf2_ros.transform_listener import TransformListener

from m3_memory.recording.rosmsg import pose_of
from m3_memory.recording.tf import TfLookupError
from m3_memory.ros.convert import rclpy_value, stamp_ns
from m3_memory.ros.params import describe


def declare_parameters(node: Node, params_cls: type):
    """Declare one parameter per field of a parameters dataclass (default, description) and
    return the dataclass filled with the values the node was started with."""
    values = {}
    for name, default, description in describe(params_cls):
        node.declare_parameter(name, default, ParameterDescriptor(description=description))
        values[name] = node.get_parameter(name).value
    return params_cls(**values)


def make(typename: str, **fields) -> Any:
    """An rclpy message of type ``pkg/msg/Name`` (the factory :mod:`m3_memory.ros.convert` builds with)."""
    return get_message(typename)(**{name: rclpy_value(value) for name, value in fields.items()})


class TfLookup:
    """tf2 as a :data:`m3_memory.ros.query_handler.Lookup`: the latest transform, waiting up to
    ``timeout`` seconds; tf2's errors (unknown frame, not connected, timeout) become TfLookupError."""

    def __init__(self, node: Node, timeout: float):
        self.buffer = Buffer()
        self.listener = TransformListener(self.buffer, node)
        self.timeout = timeout

    def __call__(self, target: str, source: str) -> tuple[np.ndarray, int]:
        try:
            tf = self.buffer.lookup_transform(target, source, Time(), timeout=Duration(seconds=self.timeout))
        except TransformException as err:
            raise TfLookupError(f"no transform {target} <- {source} within {self.timeout} s ({err})") from None
        return pose_of(tf), stamp_ns(tf.header.stamp)


def spin(node_factory: Callable[[], Node], args: list[str] | None = None) -> None:
    """Run one node on a multi-threaded executor (so tf keeps arriving while a request waits)."""
    try:
        rclpy.init(args=args)
        node = node_factory()
        executor = MultiThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        rclpy.try_shutdown()
