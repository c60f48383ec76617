"""ROS 2 side of m3: the mapping and query nodes (``*_node.py``, the only modules here that
import rclpy or message packages) and the ROS-free logic behind them (handlers, parameters,
message conversion), which is what the tests exercise without a ROS install."""
