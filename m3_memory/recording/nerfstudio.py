"""nerfstudio folders: ``transforms.json`` with ``depth_file_path`` per frame (and m3's
stamp and label extensions); detection and reader. nerfstudio puts the first pixel's centre at
(0.5, 0.5), so cx, cy are shifted by -0.5 on reading.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from m3_memory.conventions import GL_FROM_CV, intrinsics_matrix
from m3_memory.errors import InputError
from m3_memory.recording.base import Recording
from m3_memory.recording.frame import Frame
from m3_memory.recording.images import read_depth, read_rgb, read_u8
from m3_memory.recording.posed import NOMINAL_FPS, Entry, check_size, checked_pose, read_text
from m3_memory.robot_pose import BASE_FRAME, RobotPose

_NS_PINHOLE_MODELS = ("PINHOLE", "SIMPLE_PINHOLE", "OPENCV")  # OPENCV only with all distortion zero
_NS_DISTORTION = ("k1", "k2", "k3", "k4", "p1", "p2")


def _load_json(path: Path) -> dict:
    """The top-level object of a JSON file; InputError naming it when corrupt."""
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise InputError(path, f"corrupt or truncated JSON ({err})") from None
    if not isinstance(data, dict):
        raise InputError(path, "top level must be a JSON object")
    return data


def _json_number(where: str, value: object, key: str) -> float:
    """``value`` as a float; InputError naming ``where`` and ``key`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(where, f"{key} must be a number, got {value!r}")
    return float(value)


def _json_path(where: str, value: object, key: str) -> str:
    """``value`` as a relative or absolute file path; InputError otherwise."""
    if not isinstance(value, str) or not value:
        raise InputError(where, f"{key} must be a file path, got {value!r}")
    return value


def detect_nerfstudio(path: Path) -> bool:
    """A transforms.json file, or a folder holding one."""
    path = Path(path)
    return (path.is_file() and path.name == "transforms.json") or (path.is_dir() and (path / "transforms.json").is_file())


class NerfstudioRecording(Recording):
    """nerfstudio ``transforms.json`` (``path``: the file or its folder), with depth.

    Intrinsics ``fl_x fl_y cx cy`` (pixels, first pixel centre at 0.5) and ``w h`` at the top
    level or per frame (per frame wins); ``camera_model`` PINHOLE (or absent), SIMPLE_PINHOLE,
    or OPENCV with all distortion zero, else the frames must be undistorted first. Per frame:
    ``file_path`` (colour), ``transform_matrix`` (4x4 camera-to-world, OpenGL camera x right,
    y up, z back; converted to OpenCV optical), ``depth_file_path`` (required: uint16 PNG in
    units of the top-level ``depth_unit_scale_factor`` metres, default 0.001 as in nerfstudio,
    or ``.npy`` float metres; an 8-bit PNG only with an explicit ``depth_unit_scale_factor``).
    Paths are relative to the file's folder.

    m3 extensions: top-level ``m3_objects`` ``[{"id": 1, "name": "..."}]`` with per-frame
    ``m3_label_path`` (uint8 label image, 0 = background, id = that object) giving
    ``Frame.masks``, per-frame ``m3_stamp`` (seconds; otherwise index / 30 s), and top-level
    ``m3_robot_pose`` ``{"T_world_base": 4x4, "frame": "base_link", "source": "..."}`` (where
    the robot's base stands in the world frame of ``transform_matrix``, metres; frame and
    source optional) giving :meth:`robot_pose`.
    """

    format_name = "nerfstudio"

    def __init__(self, path: str | Path):
        super().__init__(path)
        if not detect_nerfstudio(self.path):
            raise InputError(self.path, "is not a nerfstudio folder: expected transforms.json (or that file itself)")
        self.json_path = self.path if self.path.is_file() else self.path / "transforms.json"
        root = self.json_path.parent
        meta = _load_json(self.json_path)
        frames = meta.get("frames")
        if not isinstance(frames, list) or not frames:
            raise InputError(self.json_path, "has no 'frames' list")
        given = meta.get("depth_unit_scale_factor")  # metres per PNG unit; None: millimetres, 8-bit refused
        self.depth_scale = None if given is None else _json_number(str(self.json_path), given, "depth_unit_scale_factor")
        self._objects = self._read_objects(meta)  # label id -> object name
        self._robot_pose = self._read_robot_pose(meta.get("m3_robot_pose"))
        self.entries: list[Entry] = []
        for i, fr in enumerate(frames):
            where = f"{self.json_path} frame {i}"
            if not isinstance(fr, dict):
                raise InputError(where, "must be a JSON object")
            if "depth_file_path" not in fr:
                raise InputError(where, "has no depth_file_path; m3 needs a depth map per frame")
            color = _json_path(where, fr.get("file_path"), "file_path")
            depth = _json_path(where, fr["depth_file_path"], "depth_file_path")
            label = root / _json_path(where, fr["m3_label_path"], "m3_label_path") if "m3_label_path" in fr else None
            stamp = _json_number(where, fr["m3_stamp"], "m3_stamp") if "m3_stamp" in fr else i / NOMINAL_FPS
            K, size = self._intrinsics(where, meta, fr)
            self.entries.append(Entry(root / color, root / depth, K, self._pose(where, fr), stamp, Path(color).stem,
                                       size=size, label=label))

    def _read_robot_pose(self, d: object) -> RobotPose | None:
        """``m3_robot_pose`` (None when absent), checked; the source names this file."""
        if d is None:
            return None
        if not isinstance(d, dict) or "T_world_base" not in d:
            raise InputError(self.json_path, 'm3_robot_pose must be {"T_world_base": 4x4, "frame": "base_link"}')
        source = f"m3_robot_pose in {self.json_path}" + (f" ({d['source']})" if d.get("source") else "")
        try:
            return RobotPose(d["T_world_base"], source, str(d.get("frame", BASE_FRAME)))
        except InputError as err:
            raise InputError(self.json_path, f"m3_robot_pose: {err.problem}") from None

    def robot_pose(self, stamp: float) -> RobotPose | None:
        """``m3_robot_pose`` of transforms.json (one pose for the whole recording), or None."""
        return self._robot_pose

    def _read_objects(self, meta: dict) -> dict[int, str]:
        """``m3_objects`` as label id -> name."""
        objects = meta.get("m3_objects", [])
        bad = InputError(self.json_path, 'm3_objects must be a list of {"id": 1..255, "name": "..."}')
        if not isinstance(objects, list):
            raise bad
        out: dict[int, str] = {}
        for o in objects:
            if not isinstance(o, dict) or not isinstance(o.get("name"), str) or not isinstance(o.get("id"), int) \
                    or not 0 < o["id"] < 256:
                raise bad
            out[o["id"]] = o["name"]
        return out

    @staticmethod
    def _pose(where: str, fr: dict) -> np.ndarray | None:
        """The frame's T_world_cam [4, 4] (OpenCV optical), or None without transform_matrix."""
        if "transform_matrix" not in fr:
            return None
        try:
            T_world_gl = np.array(fr["transform_matrix"], dtype=np.float64)  # [4, 4]
        except (TypeError, ValueError):
            raise InputError(where, "transform_matrix is not a 4x4 matrix of numbers") from None
        if T_world_gl.shape != (4, 4):
            raise InputError(where, f"transform_matrix has shape {T_world_gl.shape}, expected (4, 4)")
        return checked_pose(where, T_world_gl @ GL_FROM_CV)

    @staticmethod
    def _intrinsics(where: str, meta: dict, fr: dict) -> tuple[np.ndarray, tuple[int, int] | None]:
        """K [3, 3] (pixels, OpenCV centres) and the declared (H, W) or None, for one frame."""
        def get(key: str) -> object:
            return fr.get(key, meta.get(key))  # per-frame values override the top level

        model = get("camera_model") or "PINHOLE"
        distortion = [_json_number(where, get(k), k) for k in _NS_DISTORTION if get(k) is not None]
        if model not in _NS_PINHOLE_MODELS or any(distortion):
            raise InputError(where, f"camera model {model} with distortion {distortion} is not supported; "
                             "undistort the images first (m3 reads pinhole cameras)")
        if any(get(k) is None for k in ("fl_x", "fl_y", "cx", "cy")):
            raise InputError(where, "intrinsics fl_x, fl_y, cx, cy are missing")
        fx, fy, cx, cy = (_json_number(where, get(k), k) for k in ("fl_x", "fl_y", "cx", "cy"))
        size = None
        if get("w") is not None and get("h") is not None:
            size = (int(_json_number(where, get("h"), "h")), int(_json_number(where, get("w"), "w")))
        return intrinsics_matrix(fx, fy, cx - 0.5, cy - 0.5), size

    @property
    def objects(self) -> list[str]:
        return list(self._objects.values())

    def __len__(self) -> int:
        return len(self.entries)

    def _frames(self) -> Iterator[Frame]:
        for e in self.entries:
            rgb = read_rgb(e.color)
            check_size(e.color, rgb, e.size, self.json_path)
            masks = {}
            if e.label is not None:
                label = read_u8(e.label)  # [H, W] object ids
                masks = {name: label == oid for oid, name in self._objects.items()}
            yield e.frame(rgb, read_depth(e.depth, self.depth_scale), masks)
