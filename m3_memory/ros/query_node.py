"""The query node (``m3_query``): loads a ``*.m3`` memory and serves ``~/query_text``
(m3_msgs/srv/QueryText). Publishes each query's heatmap (``~/heatmap``, sensor_msgs/Image 32FC1)
and target (``~/target_marker``, visualization_msgs/Marker). The camera pose comes from tf
(robot_state_publisher's URDF plus the lidar odometry), intrinsics from ``camera_info_topic``.
"""

from __future__ import annotations

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image
from visualization_msgs.msg import Marker

from m3_memory.errors import InputError
from m3_memory.ros.convert import Intrinsics, intrinsics_of_info
from m3_memory.ros.node_support import TfLookup, declare_parameters, make, spin
from m3_memory.ros.params import QueryParams
from m3_memory.ros.query_handler import QueryHandler
from m3_msgs.srv import QueryText


class QueryNode(Node):
    def __init__(self) -> None:
        super().__init__("m3_query")
        self.params = declare_parameters(self, QueryParams)
        self.handler = QueryHandler(self.params, TfLookup(self, self.params.tf_timeout))
        status = self.handler.load()
        (self.get_logger().error if self.handler.load_error else self.get_logger().info)(status)
        self.live: Intrinsics | None = None
        self.create_subscription(CameraInfo, self.params.camera_info_topic, self.on_camera_info, qos_profile_sensor_data)
        self.heatmap_pub = self.create_publisher(Image, "~/heatmap", 1)
        self.marker_pub = self.create_publisher(Marker, "~/target_marker", 1)
        # its own group, so tf and camera_info callbacks run while a query waits for tf or renders
        self.create_service(QueryText, "~/query_text", self.on_query, callback_group=MutuallyExclusiveCallbackGroup())

    def on_camera_info(self, msg: CameraInfo) -> None:
        try:
            self.live = intrinsics_of_info(msg, self.params.camera_info_topic)
        except InputError as err:
            self.get_logger().warning(str(err), throttle_duration_sec=10.0)

    def on_query(self, request: QueryText.Request, response: QueryText.Response) -> QueryText.Response:
        reply = self.handler.handle_msg(request, self.live)
        (self.get_logger().info if reply.success else self.get_logger().warning)(f"query {request.text!r}: {reply.message}")
        response = QueryText.Response(**reply.fields(make))
        if reply.heatmap is not None:
            self.heatmap_pub.publish(response.heatmap)
        self.marker_pub.publish(reply.marker(make, request.text))
        return response


def main(args: list[str] | None = None) -> None:
    spin(QueryNode, args)


if __name__ == "__main__":
    main()
