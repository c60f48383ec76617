"""The mapping node (``m3_mapping``): serves ``~/build_memory`` (m3_msgs/action/BuildMemory).
A goal names a recording to build from, or none: then the node records the live realsense-ros
topics (and /tf, /tf_static) into a ROS 2 bag first. One build at a time; cancel stops it
without writing a memory.
"""

from __future__ import annotations

import threading

from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.action.server import ServerGoalHandle
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rosidl_runtime_py.utilities import get_message

from m3_memory.ros.build_handler import TF_STATIC_TOPIC, TF_TOPIC, BuildGoal, BuildJob, StageFeedback, Write
from m3_memory.ros.node_support import declare_parameters, make, spin
from m3_memory.ros.params import MappingParams
from m3_msgs.action import BuildMemory

TF_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
TF_STATIC_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


class MappingNode(Node):
    def __init__(self) -> None:
        super().__init__("m3_mapping")
        self.params = declare_parameters(self, MappingParams)
        self.busy = threading.Lock()
        self.group = ReentrantCallbackGroup()
        self.server = ActionServer(self, BuildMemory, "~/build_memory", execute_callback=self.execute, goal_callback=self.on_goal,
                                   cancel_callback=lambda goal_handle: CancelResponse.ACCEPT, callback_group=self.group)

    def on_goal(self, goal: BuildMemory.Goal) -> GoalResponse:
        if self.busy.locked():
            self.get_logger().warning("a build is running; goal rejected")
            return GoalResponse.REJECT
        return GoalResponse.ACCEPT

    def subscribe(self, topics: dict[str, str], write: Write):
        """Raw subscriptions feeding ``write``; returns the function that removes them."""
        def callback(topic: str):
            return lambda data: write(topic, self.get_clock().now().nanoseconds, data)

        qos = {TF_TOPIC: TF_QOS, TF_STATIC_TOPIC: TF_STATIC_QOS}
        subs = [self.create_subscription(get_message(msgtype), topic, callback(topic), qos.get(topic, qos_profile_sensor_data),
                                         callback_group=self.group, raw=True) for topic, msgtype in topics.items()]
        return lambda: [self.destroy_subscription(s) for s in subs]

    def execute(self, goal_handle: ServerGoalHandle) -> BuildMemory.Result:
        with self.busy:
            job = BuildJob(BuildGoal.from_msg(goal_handle.request), self.params)

            def feedback(fb: StageFeedback) -> None:
                goal_handle.publish_feedback(BuildMemory.Feedback(**fb.fields(make)))

            result = job.execute(self.subscribe, feedback, lambda: goal_handle.is_cancel_requested)
        if result.success:
            goal_handle.succeed()
            self.get_logger().info(result.message)
        elif goal_handle.is_cancel_requested:
            goal_handle.canceled()
            self.get_logger().info(result.message)
        else:
            goal_handle.abort()
            self.get_logger().error(result.message)
        return BuildMemory.Result(**result.fields(make))


def main(args: list[str] | None = None) -> None:
    spin(MappingNode, args)


if __name__ == "__main__":
    main()
