"""The query node (``m3_query``): loads a ``*.m3`` memory and serves ``~/query_text``
(m3_msgs/srv/QueryText). Publishes, latched (transient local, so RViz started later still shows
them), each query's heatmap (``~/heatmap``, sensor_msgs/Image 32FC1), its target
(``~/target_marker``, visualization_msgs/Marker) and the memory's status (``~/memory_status``,
std_msgs/String). The camera pose comes from tf (robot_state_publisher's URDF plus the lidar
odometry) at the stamp of the request's pose or depth image, intrinsics from
``camera_info_topic``. Setting the memory, model or weights parameter loads the memory again.
"""

from __future__ import annotations

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import String
from visualization_msgs.msg import Marker

from m3_memory.errors import InputError
from m3_memory.ros.callbacks import CallbackGuard, log_outcome
from m3_memory.ros.convert import Intrinsics, intrinsics_of_info
from m3_memory.ros.node_support import LATCHED, TfLookup, declare_parameters, make, on_parameter_change, spin
from m3_memory.ros.params import QueryParams
from m3_memory.ros.query_handler import QueryHandler
from m3_msgs.srv import QueryText


class QueryNode(Node):
    def __init__(self) -> None:
        super().__init__("m3_query")
        self.guard = CallbackGuard(self.get_logger())
        params = declare_parameters(self, QueryParams)
        self.handler = QueryHandler(params, TfLookup(self, lambda: self.handler.params.tf_timeout))
        self.status_pub = self.create_publisher(String, "~/memory_status", LATCHED)
        self.heatmap_pub = self.create_publisher(Image, "~/heatmap", LATCHED)
        self.marker_pub = self.create_publisher(Marker, "~/target_marker", LATCHED)
        status = self.handler.load()
        log_outcome(self.get_logger(), not self.handler.load_error, status, failure="error")
        self.status_pub.publish(String(data=status))
        self.live: Intrinsics | None = None
        self.create_subscription(CameraInfo, params.camera_info_topic, self.guard.wrap("camera_info", self.on_camera_info),
                                 qos_profile_sensor_data)
        # its own group, so tf and camera_info callbacks run while a query waits for tf or renders
        self.create_service(QueryText, "~/query_text", self.on_query, callback_group=MutuallyExclusiveCallbackGroup())
        on_parameter_change(self, self.guard, lambda: self.handler.params, self.update)

    def update(self, params: QueryParams) -> str:
        """Apply changed parameters (InputError refuses them) and publish the memory's status."""
        status = self.handler.update(params)
        self.status_pub.publish(String(data=status))
        return status

    def on_camera_info(self, msg: CameraInfo) -> None:
        try:
            self.live = intrinsics_of_info(msg, self.handler.params.camera_info_topic)
        except InputError as err:
            self.guard.report("camera_info", str(err))

    def on_query(self, request: QueryText.Request, response: QueryText.Response) -> QueryText.Response:
        return self.guard.call("query", lambda: self.answer(request),
                               lambda reason: QueryText.Response(success=False, message=reason))

    def answer(self, request: QueryText.Request) -> QueryText.Response:
        reply = self.handler.handle_msg(request, self.live)
        log_outcome(self.get_logger(), reply.success, f"query {request.text!r}: {reply.message}")
        response = QueryText.Response(**reply.fields(make))
        if reply.heatmap is not None:
            self.heatmap_pub.publish(response.heatmap)
        self.marker_pub.publish(reply.marker(make, request.text))
        return response


def main(args: list[str] | None = None) -> None:
    spin(QueryNode, args)


if __name__ == "__main__":
    main()
