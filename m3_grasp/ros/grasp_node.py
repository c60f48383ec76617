"""The grasp node (``m3_grasp``): serves ``~/grasp`` (m3_msgs/action/Grasp). A goal names the
object in words (found in the node's memory) or as a pose; the node plans a Z1 grasp with the
robot's base_link pose from tf and carries it out on the configured backend (dry-run by default),
with feedback per stage. One grasp at a time.
"""

from __future__ import annotations

import threading
import time

from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.action.server import ServerGoalHandle
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import JointState

from m3_grasp.ros.action_clients import GripperActionClient, TrajectoryActionClient
from m3_grasp.ros.grasp_handler import GraspHandler, GraspParams, arm_state_from_joint_state
from m3_grasp.state import ArmState
from m3_memory.errors import InputError
from m3_memory.ros.build_handler import StageFeedback
from m3_memory.ros.node_support import TfLookup, declare_parameters, make, spin
from m3_msgs.action import Grasp


class GraspNode(Node):
    def __init__(self) -> None:
        super().__init__("m3_grasp")
        self.params = declare_parameters(self, GraspParams)
        p = self.params
        controllers = (TrajectoryActionClient(self, p.trajectory_action),
                       GripperActionClient(self, p.gripper_action) if p.gripper_action else None)
        self.handler = GraspHandler(p, TfLookup(self, p.tf_timeout), self.latest_joint_state, controllers)
        self.joint_state: tuple[float, ArmState] | None = None  # (receipt time s, state)
        status = self.handler.load()
        if self.handler.load_error:
            self.get_logger().warning(status)
        else:
            self.get_logger().info(status)
        self.busy = threading.Lock()
        self.create_subscription(JointState, "/joint_states", self.on_joint_state, 10,
                                 callback_group=ReentrantCallbackGroup())
        # reentrant: goals are answered (rejected while busy) and tf keeps arriving while a goal runs
        self.server = ActionServer(self, Grasp, "~/grasp", execute_callback=self.execute, goal_callback=self.on_goal,
                                   cancel_callback=lambda goal_handle: CancelResponse.ACCEPT,
                                   callback_group=ReentrantCallbackGroup())

    def on_joint_state(self, msg: JointState) -> None:
        try:
            self.joint_state = (time.monotonic(), arm_state_from_joint_state(msg.name, msg.position, msg.velocity))
        except InputError:
            pass  # other joints (legs, another arm): not the Z1's

    def latest_joint_state(self) -> ArmState | None:
        latest = self.joint_state
        if latest is None or time.monotonic() - latest[0] > self.params.joint_states_max_age:
            return None
        return latest[1]

    def on_goal(self, goal: Grasp.Goal) -> GoalResponse:
        if self.busy.locked():
            self.get_logger().warning("a grasp is running; goal rejected")
            return GoalResponse.REJECT
        return GoalResponse.ACCEPT

    def execute(self, goal_handle: ServerGoalHandle) -> Grasp.Result:
        def feedback(fb: StageFeedback) -> None:
            goal_handle.publish_feedback(Grasp.Feedback(**fb.fields(make)))

        with self.busy:
            result = self.handler.execute_msg(goal_handle.request, feedback, lambda: goal_handle.is_cancel_requested)
        if result.success:
            goal_handle.succeed()
        elif goal_handle.is_cancel_requested:
            goal_handle.canceled()
        else:
            goal_handle.abort()
        if result.success or goal_handle.is_cancel_requested:
            self.get_logger().info(result.message)
        else:
            self.get_logger().error(result.message)
        return Grasp.Result(**result.fields(make))


def main(args: list[str] | None = None) -> None:
    spin(GraspNode, args)


if __name__ == "__main__":
    main()
