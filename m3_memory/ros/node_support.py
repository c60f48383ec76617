"""What every m3 node does with rclpy: declare its parameters (and take changes to them), build
messages, look up tf at a stamp, publish latched outputs, spin without dying."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import Any

import numpy as np
import rclpy
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import CallbackGroup, ReentrantCallbackGroup
from rclpy.duration import Duration
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.time import Time
from rosidl_runtime_py.utilities import get_message
from tf2_ros import TransformException
from tf2_ros.buffer import Buffer
from tf2_ros.transform_listener import TransformListener

from m3_memory.errors import InputError
from m3_memory.recording.rosmsg import pose_of
from m3_memory.recording.tf import TfLookupError
from m3_memory.ros.callbacks import CallbackGuard, OneAtATime, describe, keep_spinning
from m3_memory.ros.convert import NS_PER_S, rclpy_value, stamp_ns
from m3_memory.ros.params import changed, read_only
from m3_memory.ros.params import describe as describe_params

# The last message stays with the publisher and reaches subscribers that come later (RViz started
# after the answer, `ros2 topic echo`); they must ask for transient-local durability too.
LATCHED = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)


def declare_parameters(node: Node, params_cls: type):
    """Declare one parameter per field of a parameters dataclass (default, description, read_only)
    and return the dataclass filled with the values the node was started with."""
    values = {}
    fixed = read_only(params_cls)
    for name, default, description in describe_params(params_cls):
        node.declare_parameter(name, default, ParameterDescriptor(description=description, read_only=name in fixed))
        values[name] = node.get_parameter(name).value
    return params_cls(**values)


def on_parameter_change(node: Node, guard: CallbackGuard, current: Callable[[], Any], apply: Callable[[Any], str]) -> None:
    """Take ``ros2 param set`` changes: each set is checked (:func:`m3_memory.ros.params.changed`) and
    handed to ``apply(new parameters) -> status line``; an InputError from either refuses the change with
    its reason (rclpy then keeps the old value), so a reported success means the node uses the value."""
    def callback(parameters) -> SetParametersResult:
        def attempt() -> SetParametersResult:
            params = current()
            ours = {p.name: p.value for p in parameters if p.name in {f.name for f in fields(params)}}
            if not ours:  # rclpy's own (use_sim_time, ...): not ours to check
                return SetParametersResult(successful=True)
            try:
                status = apply(changed(params, ours))
            except InputError as err:
                return SetParametersResult(successful=False, reason=str(err))
            node.get_logger().info(f"parameters {', '.join(ours)} set: {status}")
            return SetParametersResult(successful=True)

        return guard.call("parameter change", attempt, lambda reason: SetParametersResult(successful=False, reason=reason))

    node.add_on_set_parameters_callback(callback)


def make(typename: str, **fields) -> Any:
    """An rclpy message of type ``pkg/msg/Name`` (the factory :mod:`m3_memory.ros.convert` builds with)."""
    return get_message(typename)(**{name: rclpy_value(value) for name, value in fields.items()})


class TfLookup:
    """tf2 as a :data:`m3_memory.ros.convert.Lookup`: the transform at a stamp (0: the latest), waiting
    up to ``timeout()`` seconds; tf2's errors (unknown frame, not connected, extrapolation, timeout)
    become TfLookupError saying which transform at which time was not available."""

    def __init__(self, node: Node, timeout: Callable[[], float]):
        self.buffer = Buffer()
        self.listener = TransformListener(self.buffer, node)
        self.timeout = timeout

    def __call__(self, target: str, source: str, stamp: int = 0) -> tuple[np.ndarray, int]:
        timeout = self.timeout()
        when = f"at {stamp / NS_PER_S:.3f} s" if stamp else "(latest)"
        at = Time(nanoseconds=int(stamp)) if stamp else Time()
        try:
            tf = self.buffer.lookup_transform(target, source, at, timeout=Duration(seconds=timeout))
        except TransformException as err:
            raise TfLookupError(f"no transform {target} <- {source} {when} within tf_timeout {timeout} s: "
                                f"{describe(err)}") from None
        return pose_of(tf), stamp_ns(tf.header.stamp)


def spin(node_factory: Callable[[], Node], args: list[str] | None = None) -> None:
    """Run one node on a multi-threaded executor (so tf keeps arriving while a request waits). An
    exception that a callback lets out is logged and the node keeps serving; Ctrl-C or a shutdown
    ends it."""
    try:
        rclpy.init(args=args)
        node = node_factory()
        executor = MultiThreadedExecutor()
        executor.add_node(node)
        guard = CallbackGuard(node.get_logger())
        keep_spinning(lambda: executor.spin_once(timeout_sec=0.5), rclpy.ok,
                      lambda err: guard.report("a callback", f"a callback failed: {describe(err)} (the node keeps running)"),
                      stop=(ExternalShutdownException,))
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        rclpy.try_shutdown()


def finish_goal(node: Node, goal_handle, success: bool, message: str) -> None:
    """End an action goal: succeeded, canceled (when a cancel was requested) or aborted, and log its
    message (each severity from its own line, as rclpy requires)."""
    if success:
        goal_handle.succeed()
        node.get_logger().info(message)
    elif goal_handle.is_cancel_requested:
        goal_handle.canceled()
        node.get_logger().info(message)
    else:
        goal_handle.abort()
        node.get_logger().error(message)


def one_goal_server(node: Node, action: type, name: str, what: str, guard: CallbackGuard, one: OneAtATime,
                    run: Callable[[Any], Any], failed: Callable[[str], Any], on_result: Callable[[Any], None] = lambda r: None,
                    group: CallbackGroup | None = None) -> ActionServer:
    """An action server ``name`` of ``action`` that runs one goal at a time (``one``; a goal
    while another runs is rejected with a warning "a <what> is running"). ``run(goal_handle)``
    returns the outcome: an object with ``success``, ``message`` and ``fields(make)`` (the
    result message's fields); an exception in it becomes ``failed(reason)``. The goal then ends
    succeeded, canceled or aborted (:func:`finish_goal`), ``on_result(outcome)`` follows (e.g. a
    status topic), and the result message is returned; a result that cannot be built aborts the
    goal with the outcome's message and why. Cancel requests are accepted; the outcome says
    whether one stopped the work. Callbacks run in ``group`` (default: a reentrant one, so goals
    are answered while one runs)."""
    kind = action.__name__

    def on_goal(goal) -> GoalResponse:
        def decide() -> GoalResponse:
            if one.claim():  # released when the goal's execution ends
                return GoalResponse.ACCEPT
            node.get_logger().warning(f"a {what} is running; goal rejected")
            return GoalResponse.REJECT

        return guard.call(f"{kind} goal request", decide, lambda reason: GoalResponse.REJECT)

    def execute(goal_handle):
        try:
            outcome = guard.call(f"{kind} goal", lambda: run(goal_handle), failed)
        finally:
            one.release()

        def finish():
            msg = action.Result(**outcome.fields(make))  # first: a result that cannot be built leaves the goal to be aborted
            finish_goal(node, goal_handle, outcome.success, outcome.message)
            on_result(outcome)
            return msg

        return guard.call(f"{kind} result", finish,
                          lambda reason: action.Result(success=False, message=f"{outcome.message} ({reason})"))

    return ActionServer(node, action, name, execute_callback=execute, goal_callback=on_goal,
                        cancel_callback=lambda goal_handle: CancelResponse.ACCEPT,
                        callback_group=group or ReentrantCallbackGroup())
