"""Parameters of the m3 nodes: name, default and description, written once.

Each node's parameters are a dataclass whose fields carry their description; the node declares
one ROS parameter per field (``declare_parameter(name, default, descriptor)``) and reads them
back into the dataclass. ``config/<node>.yaml`` (``node_name: ros__parameters: ...``) holds the
same defaults for launch files (a test checks they agree). Units: metres, seconds, radians.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from m3_memory.recording.rosbag2 import OPTICAL_FRAME, RealSenseTopics

_TOPICS = RealSenseTopics()


def param(default: Any, description: str) -> Any:
    """A dataclass field that is a node parameter with this default and description."""
    return field(default=default, metadata={"description": description})


def describe(params_cls: type) -> list[tuple[str, Any, str]]:
    """(name, default, description) of every parameter of a parameters dataclass."""
    return [(f.name, f.default, f.metadata["description"]) for f in fields(params_cls)]


@dataclass
class MappingParams:
    """Parameters of the mapping node (``m3_mapping``): the BuildMemory action server."""

    output_dir: str = param("m3_memories", "folder for memories (and live recordings) whose goal gives no absolute out path")
    model: str = param("clip", "foundation model: clip, siglip, dinov2, clip-fixture (tests)")
    weights: str = param("", "model weights file or hub tag; '' = the model's default")
    fast: bool = param(False, "quick preview builds (fewer training iterations) unless a goal says otherwise")
    color_topic: str = param(_TOPICS.color, "colour image topic (bag or live)")
    depth_topic: str = param(_TOPICS.depth, "depth image topic, registered to colour (bag or live)")
    camera_info_topic: str = param(_TOPICS.color_info, "colour camera_info topic (bag or live)")
    depth_info_topic: str = param(_TOPICS.depth_info, "depth camera_info topic, for depth not registered to colour")
    world_frame: str = param(_TOPICS.world_frame, "frame of the memory: camera poses are tf world_frame <- colour optical frame")
    record_seconds: float = param(30.0, "live recordings: seconds of topics to record")
    max_dt: float = param(0.005, "largest colour/depth stamp difference of a frame pair, seconds")
    poses: str = param("auto", "camera poses: auto (tf when it connects), tf, odometry (RGB-D odometry), none")


@dataclass
class QueryParams:
    """Parameters of the query node (``m3_query``): the QueryText service."""

    memory: str = param("", "path of the *.m3 memory to load at start")
    model: str = param("clip", "foundation model whose text encoder asks the memory (one the memory was built with)")
    weights: str = param("", "model weights file or hub tag; '' = the model's default")
    method: str = param("relevancy", "scoring: relevancy (LERF, against canonical negatives) or cosine")
    min_score: float = param(-1.0, "lowest mean region score that counts as found; < 0 = the method's default "
                                   "(relevancy 0.1, cosine 0.3)")
    threshold: str = param("otsu", "target region: 'otsu' or a fixed score bound such as '0.6'")
    render_scale: float = param(1.0, "render at this fraction of the view's resolution (0..1]; scores are upsampled")
    world_frame: str = param(_TOPICS.world_frame, "tf frame the memory's coordinates are in")
    target_frame: str = param("base_link", "frame of the returned target when the request names none")
    camera_frame: str = param(OPTICAL_FRAME, "optical frame rendered at when the request gives no camera pose")
    camera_info_topic: str = param(_TOPICS.color_info, "camera_info topic giving the view's intrinsics")
    default_width: int = param(640, "image width when neither the request nor camera_info_topic gives intrinsics, pixels")
    default_height: int = param(480, "image height in that case, pixels")
    default_hfov: float = param(1.2043, "horizontal field of view in that case, radians (RealSense D435 colour: 69 deg)")
    tf_timeout: float = param(0.5, "seconds to wait for a tf lookup")
