"""rclpy action clients for the ``ros2_control`` backend (:mod:`m3_grasp.ros.trajectory_client`):
``control_msgs/action/FollowJointTrajectory`` for the arm, ``control_msgs/action/GripperCommand``
for the gripper.

They block the calling thread (the grasp node's goal, on its MultiThreadedExecutor) on threading
events set by the futures' done callbacks, never spinning themselves: the executor spins in
its other threads and runs the clients' callbacks in a reentrant callback group.
"""

from __future__ import annotations

import threading

from action_msgs.msg import GoalStatus
from control_msgs.action import FollowJointTrajectory, GripperCommand
from rclpy.action import ActionClient
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.task import Future

from m3_grasp.ros.trajectory_client import ControllerState, GripperOutcome, JointGoal, Outcome, controller_state, trajectory_msg
from m3_memory.errors import InputError
from m3_memory.ros.node_support import make

STATUS = {GoalStatus.STATUS_SUCCEEDED: "succeeded", GoalStatus.STATUS_ABORTED: "aborted",
          GoalStatus.STATUS_CANCELED: "canceled"}


def wait(future: Future, timeout: float):
    """The future's result, waiting up to ``timeout`` seconds without spinning; None when not done."""
    done = threading.Event()
    future.add_done_callback(lambda _: done.set())
    return future.result() if future.done() or done.wait(timeout) else None


class RunningTrajectory:
    """An accepted FollowJointTrajectory goal (a :class:`m3_grasp.ros.trajectory_client.RunningGoal`)."""

    def __init__(self, joint_names: list[str]):
        self.joint_names = joint_names
        self.handle = None
        self.result_future: Future | None = None
        self.latest: ControllerState | None = None
        self.lock = threading.Lock()

    def on_feedback(self, msg) -> None:
        state = controller_state(msg.feedback, self.joint_names)
        with self.lock:
            self.latest = state

    def feedback(self) -> ControllerState | None:
        with self.lock:
            return self.latest

    def result(self, timeout: float) -> Outcome | None:
        response = wait(self.result_future, timeout)
        if response is None:
            return None
        result = response.result
        return Outcome(STATUS.get(response.status, f"status {response.status}"), int(result.error_code), result.error_string)

    def cancel(self) -> None:
        self.handle.cancel_goal_async()


class BlockingActionClient:
    """A client of the action ``name`` (``default_name`` when None) whose calls block the caller
    while the executor's other threads run its callbacks."""

    action: type
    default_name: str

    def __init__(self, node: Node, name: str | None = None):
        self.name = self.default_name if name is None else name
        self.client = ActionClient(node, self.action, self.name, callback_group=ReentrantCallbackGroup())

    def ready(self, timeout: float) -> bool:
        """True when the action server answers within ``timeout`` seconds."""
        return self.client.wait_for_server(timeout_sec=timeout)


class TrajectoryActionClient(BlockingActionClient):
    """FollowJointTrajectory goals to the action ``name`` (a :class:`m3_grasp.ros.trajectory_client.TrajectoryClient`)."""

    action = FollowJointTrajectory
    default_name = "/arm_controller/follow_joint_trajectory"

    def send(self, goal: JointGoal, timeout: float) -> RunningTrajectory | None:
        running = RunningTrajectory(list(goal.joint_names))
        future = self.client.send_goal_async(FollowJointTrajectory.Goal(trajectory=trajectory_msg(make, goal)),
                                             feedback_callback=running.on_feedback)
        handle = wait(future, timeout)
        if handle is None:
            raise InputError(self.name, f"did not answer a goal within {timeout} s")
        if not handle.accepted:
            return None
        running.handle, running.result_future = handle, handle.get_result_async()
        return running


class GripperActionClient(BlockingActionClient):
    """GripperCommand goals to the action ``name`` (a :class:`m3_grasp.ros.trajectory_client.GripperClient`)."""

    action = GripperCommand
    default_name = "/gripper_controller/gripper_cmd"

    def command(self, position: float, max_effort: float, timeout: float) -> GripperOutcome:
        goal = GripperCommand.Goal()
        goal.command.position, goal.command.max_effort = float(position), float(max_effort)
        handle = wait(self.client.send_goal_async(goal), timeout)
        if handle is None:
            return GripperOutcome("timed out")
        if not handle.accepted:
            return GripperOutcome("rejected")
        response = wait(handle.get_result_async(), timeout)
        if response is None:
            handle.cancel_goal_async()
            return GripperOutcome("timed out")
        r = response.result
        return GripperOutcome(STATUS.get(response.status, f"status {response.status}"), float(r.position), bool(r.stalled),
                              bool(r.reached_goal))
