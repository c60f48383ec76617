"""The grasp node (``m3_grasp``): serves ``~/grasp`` (m3_msgs/action/Grasp). A goal names the
object in words (found in the node's memory) or as a pose; the node plans a Z1 grasp with the
robot's base_link pose from tf and carries it out on the configured backend (dry-run by default),
with feedback per stage. One grasp at a time. The memory's status is published latched on
``~/memory_status`` (std_msgs/String); setting the memory, model or weights parameter loads the
memory again (between goals).
"""

from __future__ import annotations

import time

from rclpy.action.server import ServerGoalHandle
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import String

from m3_grasp.ros.action_clients import GripperActionClient, TrajectoryActionClient
from m3_grasp.ros.grasp_handler import GraspHandler, GraspParams, GraspResult, arm_state_from_joint_state
from m3_grasp.state import ArmState
from m3_memory.errors import InputError
from m3_memory.ros.build_handler import StageFeedback
from m3_memory.ros.callbacks import CallbackGuard, OneAtATime, log_outcome
from m3_memory.ros.node_support import LATCHED, TfLookup, declare_parameters, make, on_parameter_change, one_goal_server, spin
from m3_memory.ros.query_handler import RELOAD
from m3_msgs.action import Grasp


class GraspNode(Node):
    def __init__(self) -> None:
        super().__init__("m3_grasp")
        self.guard = CallbackGuard(self.get_logger())
        p = declare_parameters(self, GraspParams)
        controllers = (TrajectoryActionClient(self, p.trajectory_action),
                       GripperActionClient(self, p.gripper_action) if p.gripper_action else None)
        self.handler = GraspHandler(p, TfLookup(self, lambda: self.handler.params.tf_timeout), self.latest_joint_state,
                                    controllers)
        self.joint_state: tuple[float, ArmState] | None = None  # (receipt time s, state)
        self.status_pub = self.create_publisher(String, "~/memory_status", LATCHED)
        status = self.handler.load()
        log_outcome(self.get_logger(), not self.handler.load_error, status)
        self.status_pub.publish(String(data=status))
        self.one = OneAtATime()
        self.create_subscription(JointState, "/joint_states", self.guard.wrap("joint_states", self.on_joint_state), 10,
                                 callback_group=ReentrantCallbackGroup())
        self.server = one_goal_server(self, Grasp, "~/grasp", "grasp", self.guard, self.one, self.execute,
                                      lambda reason: GraspResult(False, reason))
        on_parameter_change(self, self.guard, lambda: self.handler.params, self.update)

    def update(self, params: GraspParams) -> str:
        """Apply changed parameters (InputError refuses them) and publish the memory's status. The
        memory is not swapped under a running grasp."""
        if self.one.busy and any(getattr(params, k) != getattr(self.handler.params, k) for k in RELOAD):
            raise InputError("memory", "a grasp is running; set it again when the goal has ended")
        status = self.handler.update(params)
        self.status_pub.publish(String(data=status))
        return status

    def on_joint_state(self, msg: JointState) -> None:
        try:
            self.joint_state = (time.monotonic(), arm_state_from_joint_state(msg.name, msg.position, msg.velocity))
        except InputError:
            pass  # other joints (legs, another arm): not the Z1's

    def latest_joint_state(self) -> ArmState | None:
        latest = self.joint_state
        if latest is None or time.monotonic() - latest[0] > self.handler.params.joint_states_max_age:
            return None
        return latest[1]

    def execute(self, goal_handle: ServerGoalHandle) -> GraspResult:
        """Plan and carry out one Grasp goal, with feedback per stage."""
        def feedback(fb: StageFeedback) -> None:
            goal_handle.publish_feedback(Grasp.Feedback(**fb.fields(make)))

        return self.handler.execute_msg(goal_handle.request, feedback, lambda: goal_handle.is_cancel_requested)


def main(args: list[str] | None = None) -> None:
    spin(GraspNode, args)


if __name__ == "__main__":
    main()
