"""The grasp node (``m3_grasp``): serves ``~/grasp`` (m3_msgs/action/Grasp). A goal names the
object in words (found in the node's memory) or as a pose; the node plans a Z1 grasp with the
robot's base_link pose from tf and carries it out on the configured backend (dry-run by default),
with feedback per stage. One grasp at a time.
"""

from __future__ import annotations

import threading

from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.action.server import ServerGoalHandle
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node

from m3_grasp.ros.grasp_handler import GraspHandler, GraspParams
from m3_memory.ros.build_handler import StageFeedback
from m3_memory.ros.node_support import TfLookup, declare_parameters, make, spin
from m3_msgs.action import Grasp


class GraspNode(Node):
    def __init__(self) -> None:
        super().__init__("m3_grasp")
        self.params = declare_parameters(self, GraspParams)
        self.handler = GraspHandler(self.params, TfLookup(self, self.params.tf_timeout))
        status = self.handler.load()
        (self.get_logger().warning if self.handler.load_error else self.get_logger().info)(status)
        self.busy = threading.Lock()
        # reentrant: goals are answered (rejected while busy) and tf keeps arriving while a goal runs
        self.server = ActionServer(self, Grasp, "~/grasp", execute_callback=self.execute, goal_callback=self.on_goal,
                                   cancel_callback=lambda goal_handle: CancelResponse.ACCEPT,
                                   callback_group=ReentrantCallbackGroup())

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
            self.get_logger().info(result.message)
        elif goal_handle.is_cancel_requested:
            goal_handle.canceled()
            self.get_logger().info(result.message)
        else:
            goal_handle.abort()
            self.get_logger().error(result.message)
        return Grasp.Result(**result.fields(make))


def main(args: list[str] | None = None) -> None:
    spin(GraspNode, args)


if __name__ == "__main__":
    main()
