"""Parameters of the m3 nodes: name, default and description, written once.

Each node's parameters are a dataclass whose fields carry their description; the node declares
one ROS parameter per field (``declare_parameter(name, default, descriptor)``) and reads them
back into the dataclass. ``config/<node>.yaml`` (``node_name: ros__parameters: ...``) holds the
same defaults for launch files (a test checks they agree). Units: metres, seconds, radians.

A parameter used only at start (a topic subscribed to, an action client created) is declared
``read_only``: ``ros2 param set`` then fails instead of reporting a change that does nothing.
The others may change while the node runs: :func:`changed` checks a change (types, then the
dataclass's ``check``) and gives the parameters after it; the node applies them (a new memory
path reloads the memory) or refuses the change with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from m3_memory.device import resolve_device
from m3_memory.errors import InputError
from m3_memory.recording.rosbag2 import OPTICAL_FRAME, RealSenseTopics

_TOPICS = RealSenseTopics()
POSES = ("auto", "tf", "odometry", "none")
METHODS = ("relevancy", "cosine")


def param(default: Any, description: str, read_only: bool = False) -> Any:
    """A dataclass field that is a node parameter with this default and description; ``read_only``:
    read once at start, so it cannot be set while the node runs."""
    return field(default=default, metadata={"description": description, "read_only": read_only})


def describe(params_cls: type) -> list[tuple[str, Any, str]]:
    """(name, default, description) of every parameter of a parameters dataclass."""
    return [(f.name, f.default, f.metadata["description"]) for f in fields(params_cls)]


def read_only(params_cls: type) -> set[str]:
    """Names of the parameters read only at start."""
    return {f.name for f in fields(params_cls) if f.metadata.get("read_only")}


def changed(params: Any, changes: dict[str, Any]) -> Any:
    """The parameters after ``changes`` (name -> new value); InputError naming the parameter for an
    unknown or read-only name, a value of another type than the default's (an int is taken for a
    float), or a value the dataclass's ``check`` refuses. ``params`` itself is left as it was."""
    kinds = {f.name: (type(f.default), f.metadata.get("read_only")) for f in fields(params)}
    values = {}
    for name, value in changes.items():
        if name not in kinds:
            raise InputError(name, "is not a parameter of this node")
        kind, fixed = kinds[name]
        if fixed:
            raise InputError(name, "is read only: it is used at start; restart the node to change it")
        if kind is float and type(value) is int:
            value = float(value)
        if type(value) is not kind:
            raise InputError(name, f"must be a {kind.__name__}, got {value!r}")
        values[name] = value
    new = replace(params, **values)
    check = getattr(new, "check", None)
    if check is not None:
        check()
    return new


@dataclass
class MappingParams:
    """Parameters of the mapping node (``m3_mapping``): the BuildMemory action server."""

    output_dir: str = param("m3_memories", "folder for memories (and live recordings) whose goal gives no absolute out path")
    model: str = param("clip", "foundation model: clip, siglip, dinov2, clip-fixture (tests)")
    weights: str = param("", "model weights file or hub tag; '' = the model's default")
    fast: bool = param(False, "the fast preset even on CUDA (false: the preset follows the device, the authors' "
                       "schedule on CUDA, the fast one on the CPU) unless a goal says otherwise")
    device: str = param("auto", "where to compute: auto (CUDA when available, else the CPU), cpu, cuda or cuda:N")
    color_topic: str = param(_TOPICS.color, "colour image topic (bag or live)")
    depth_topic: str = param(_TOPICS.depth, "depth image topic, registered to colour (bag or live)")
    camera_info_topic: str = param(_TOPICS.color_info, "colour camera_info topic (bag or live)")
    depth_info_topic: str = param(_TOPICS.depth_info, "depth camera_info topic, for depth not registered to colour")
    world_frame: str = param("map", "tf frame of the memory (REP-105 map or odom): camera poses are tf world_frame <- "
                                    "colour optical frame; the memory records it")
    record_seconds: float = param(30.0, "live recordings: seconds of topics to record")
    max_dt: float = param(0.005, "largest colour/depth stamp difference of a frame pair, seconds")
    poses: str = param("auto", "camera poses: auto (tf when it connects), tf, odometry (RGB-D odometry), none")

    def check(self) -> None:
        """InputError for a value no goal could use."""
        resolve_device(self.device)
        if self.record_seconds <= 0:
            raise InputError("record_seconds", f"must be > 0, got {self.record_seconds}")
        if self.max_dt <= 0:
            raise InputError("max_dt", f"must be > 0, got {self.max_dt}")
        if self.poses not in POSES:
            raise InputError("poses", f"must be one of {', '.join(POSES)}, got {self.poses!r}")


@dataclass
class QueryParams:
    """Parameters of the query node (``m3_query``): the QueryText service."""

    memory: str = param("", "path of the *.m3 memory; setting it loads that memory")
    model: str = param("clip", "foundation model whose text encoder asks the memory (one the memory was built with)")
    weights: str = param("", "model weights file or hub tag; '' = the model's default")
    method: str = param("relevancy", "scoring: relevancy (LERF, against canonical negatives) or cosine")
    min_score: float = param(-1.0, "lowest mean region score that counts as found; < 0 = the method's default "
                                   "(relevancy 0.1, cosine 0.3)")
    threshold: str = param("otsu", "target region: 'otsu' or a fixed score bound such as '0.6'")
    render_scale: float = param(1.0, "render at this fraction of the view's resolution (0..1]; scores are upsampled")
    world_frame: str = param("", "tf frame the memory's coordinates are in; '' = the one the memory records")
    target_frame: str = param("base_link", "frame of the returned target when the request names none")
    camera_frame: str = param(OPTICAL_FRAME, "optical frame rendered at when the request gives no camera pose")
    camera_info_topic: str = param(_TOPICS.color_info, "camera_info topic giving the view's intrinsics",
                                   read_only=True)
    default_width: int = param(640, "image width when neither the request nor camera_info_topic gives intrinsics, pixels")
    default_height: int = param(480, "image height in that case, pixels")
    default_hfov: float = param(1.2043, "horizontal field of view in that case, radians (RealSense D435 colour: 69 deg)")
    tf_timeout: float = param(0.5, "seconds to wait for a tf lookup")
    device: str = param("auto", "where to compute: auto (CUDA when available, else the CPU), cpu, cuda or cuda:N")

    def check(self) -> None:
        """InputError for a value no query could use."""
        resolve_device(self.device)
        threshold_of(self.threshold)
        if self.method not in METHODS:
            raise InputError("method", f"must be one of {', '.join(METHODS)}, got {self.method!r}")
        if not 0 < self.render_scale <= 1:
            raise InputError("render_scale", f"must be in (0, 1], got {self.render_scale}")
        if self.default_width <= 0 or self.default_height <= 0 or not 0 < self.default_hfov < 3.14:
            raise InputError("default_width/height/hfov", "need a positive image size and a field of view in (0, pi)")
        if self.tf_timeout < 0:
            raise InputError("tf_timeout", f"must be >= 0, got {self.tf_timeout}")


def threshold_of(text: str) -> str | float:
    """The threshold parameter as QueryConfig takes it: 'otsu' or a number."""
    if text == "otsu":
        return text
    try:
        return float(text)
    except ValueError:
        raise InputError(f"threshold={text}", "must be 'otsu' or a number") from None
