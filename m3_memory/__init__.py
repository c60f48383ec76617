"""m3: a 3D spatial multimodal memory for robots (M3, ICLR 2025).

The core never imports rclpy; ROS 2 nodes live in ``m3_memory.ros``.
"""

from m3_memory.errors import InputError
from m3_memory.recording import Frame, open_recording

__all__ = ["Frame", "InputError", "open_recording"]
__version__ = "0.1.0"
