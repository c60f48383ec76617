"""Recordings -> :class:`Frame` streams, with format auto-detection.

Supported formats (``fmt`` names):

- ``realsense``: librealsense recordings, ``.bag`` (ROS1 v2 layout) and ``.db3``
- ``rosbag2``: ROS 2 bags (sqlite3 or mcap) of realsense-ros topics
- ``3dmatch``: 3DMatch / SUN3D folders (camera-intrinsics.txt, seq-*/frame-*.{color,depth,pose})
- ``apc2016``: APC 2016 folders (cam.info.txt, frame-*.{color,depth}.png, masks/)
- ``nerfstudio``: a folder with transforms.json (depth_file_path per frame)
- ``colmap``: a COLMAP text model (cameras.txt, images.txt) with depth maps beside
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from m3_memory.errors import InputError, missing_reason
from m3_memory.recording.base import ReadStats, Recording
from m3_memory.recording.frame import Frame


@dataclass(frozen=True)
class Format:
    name: str
    description: str
    module: str  # module under m3_memory.recording holding the detector and the class
    cls: str
    detect: str = "detect"

    def load(self) -> tuple[Callable[[Path], bool], type[Recording]]:
        mod = importlib.import_module(f"m3_memory.recording.{self.module}")
        return getattr(mod, self.detect), getattr(mod, self.cls)


FORMATS: tuple[Format, ...] = (
    Format("realsense", "librealsense recording (.bag ROS1 v2 layout, .db3)", "realsense", "RealSenseRecording"),
    Format("rosbag2", "ROS 2 bag of realsense-ros topics (folder with metadata.yaml, .db3 or .mcap)",
           "rosbag2", "Ros2BagRecording"),
    Format("3dmatch", "3DMatch/SUN3D folder (camera-intrinsics.txt + seq-*/frame-*.color/depth/pose)",
           "threedmatch", "ThreeDMatchRecording", "detect_3dmatch"),
    Format("apc2016", "APC 2016 folder (cam.info.txt + frame-*.color/depth.png)", "apc2016", "Apc2016Recording",
           "detect_apc2016"),
    Format("nerfstudio", "nerfstudio folder (transforms.json with depth_file_path)", "nerfstudio", "NerfstudioRecording",
           "detect_nerfstudio"),
    Format("colmap", "COLMAP text model (cameras.txt, images.txt) with depth maps beside", "colmap",
           "ColmapRecording", "detect_colmap"),
)


def supported_formats() -> str:
    """One line listing every supported format."""
    return "; ".join(f"{f.name}: {f.description}" for f in FORMATS)


def detect_format(path: str | Path) -> str:
    """Name of the format of ``path``; :class:`InputError` listing what is supported if none."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, missing_reason(path))
    if path.is_dir() and not any(path.iterdir()):
        raise InputError(path, "is an empty folder")
    for fmt in FORMATS:
        detect, _ = fmt.load()
        if detect(path):
            return fmt.name
    raise InputError(path, f"not a recognised recording. Supported: {supported_formats()}")


def open_recording(path: str | Path, fmt: str = "auto", **options) -> Recording:
    """Open a recording for streaming frames.

    fmt: a name from :data:`FORMATS` or ``"auto"``. options: passed to the reader
    (e.g. ``max_dt`` seconds for RealSense pairing, ``poses="odometry"``, rosbag2 ``topics``).
    """
    name = detect_format(path) if fmt == "auto" else fmt
    by_name = {f.name: f for f in FORMATS}
    if name not in by_name:
        raise InputError(fmt, f"unknown recording format; supported: {', '.join(by_name)}")
    _, cls = by_name[name].load()
    try:
        return cls(path, **options)
    except TypeError as err:
        raise InputError(path, f"bad option for the {name} reader: {err}") from None


__all__ = ["FORMATS", "Frame", "ReadStats", "Recording", "detect_format", "open_recording", "supported_formats"]
