"""ROS 2 side of m3_grasp: the grasp node (``grasp_node.py``, the only module here that imports
rclpy or message packages) and the ROS-free logic behind it (``grasp_handler.py``)."""
