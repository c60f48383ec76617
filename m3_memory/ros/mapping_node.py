"""The mapping node (``m3_mapping``): serves ``~/build_memory`` (m3_msgs/action/BuildMemory).
A goal names a recording to build from, or none: then the node records the live realsense-ros
topics (and /tf, /tf_static) into a ROS 2 bag first (one writer thread owns the bag; the
subscriptions queue messages for it). One build at a time; cancel stops it without writing a
memory. The last goal's outcome is published latched on ``~/status`` (std_msgs/String).
Parameters apply from the next goal on.
"""

from __future__ import annotations

from rclpy.action.server import ServerGoalHandle
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rosidl_runtime_py.utilities import get_message
from std_msgs.msg import String

from m3_memory.ros.build_handler import TF_STATIC_TOPIC, TF_TOPIC, BuildGoal, BuildJob, BuildResult, StageFeedback, Write
from m3_memory.ros.callbacks import CallbackGuard, OneAtATime
from m3_memory.ros.node_support import LATCHED, declare_parameters, make, on_parameter_change, one_goal_server, spin
from m3_memory.ros.params import MappingParams
from m3_msgs.action import BuildMemory

TF_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
TF_STATIC_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


class MappingNode(Node):
    def __init__(self) -> None:
        super().__init__("m3_mapping")
        self.guard = CallbackGuard(self.get_logger())
        self.params = declare_parameters(self, MappingParams)
        self.one = OneAtATime()
        self.group = ReentrantCallbackGroup()
        self.status_pub = self.create_publisher(String, "~/status", LATCHED)
        self.server = one_goal_server(self, BuildMemory, "~/build_memory", "build", self.guard, self.one, self.build,
                                      lambda reason: BuildResult(False, reason),
                                      lambda result: self.status_pub.publish(String(data=result.message)), self.group)
        on_parameter_change(self, self.guard, lambda: self.params, self.update)

    def update(self, params: MappingParams) -> str:
        self.params = params
        return "used from the next goal on"

    def subscribe(self, topics: dict[str, str], write: Write):
        """Raw subscriptions feeding ``write``; returns the function that removes them."""
        def callback(topic: str):
            return self.guard.wrap(f"recording {topic}", lambda data: write(topic, self.get_clock().now().nanoseconds, data))

        qos = {TF_TOPIC: TF_QOS, TF_STATIC_TOPIC: TF_STATIC_QOS}
        subs = [self.create_subscription(get_message(msgtype), topic, callback(topic), qos.get(topic, qos_profile_sensor_data),
                                         callback_group=self.group, raw=True) for topic, msgtype in topics.items()]
        return lambda: [self.destroy_subscription(s) for s in subs]

    def build(self, goal_handle: ServerGoalHandle) -> BuildResult:
        """Record (when the goal names no recording) and build one BuildMemory goal, with feedback."""
        job = BuildJob(BuildGoal.from_msg(goal_handle.request), self.params)

        def feedback(fb: StageFeedback) -> None:
            goal_handle.publish_feedback(BuildMemory.Feedback(**fb.fields(make)))

        return job.execute(self.subscribe, feedback, lambda: goal_handle.is_cancel_requested)


def main(args: list[str] | None = None) -> None:
    spin(MappingNode, args)


if __name__ == "__main__":
    main()
