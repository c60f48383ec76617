"""The camera a query is asked from, and reading one from a pose file.

A pose file is JSON, ``{"T_world_cam": [[4x4]], "K": [[3x3]], "width": W, "height": H}`` (K and
size optional), or text holding 16 numbers (a 4x4 T_world_cam, row-major). T_world_cam maps the
OpenCV optical camera (x right, y down, z forward) into the memory's frame, metres.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from m3_memory.conventions import rigid_error, scale_intrinsics
from m3_memory.errors import InputError
from m3_memory.memory.artifact import CameraView


@dataclass
class Camera:
    """A pinhole camera: ``K [3, 3]`` OpenCV intrinsics (pixels, centres at integers) for a
    ``width x height`` image, ``T_world_cam [4, 4]`` camera (OpenCV optical) -> memory frame (m)."""

    K: np.ndarray
    width: int
    height: int
    T_world_cam: np.ndarray

    def __post_init__(self) -> None:
        self.K = np.asarray(self.K, dtype=np.float64)
        self.T_world_cam = np.asarray(self.T_world_cam, dtype=np.float64)
        problem = rigid_error(self.T_world_cam)
        if problem:
            raise InputError("camera pose", problem)
        if (self.K.shape != (3, 3) or not np.all(np.isfinite(self.K)) or self.K[0, 0] <= 0 or self.K[1, 1] <= 0
                or not np.allclose(self.K[2], [0, 0, 1])):
            raise InputError("camera intrinsics", f"invalid K {self.K.tolist()}")
        if int(self.width) < 1 or int(self.height) < 1:
            raise InputError("camera", f"image size must be positive, got {self.width}x{self.height}")
        self.width, self.height = int(self.width), int(self.height)

    @classmethod
    def from_view(cls, view: CameraView) -> "Camera":
        return cls(view.K, view.width, view.height, view.T_world_cam)

    def scaled(self, factor: float) -> "Camera":
        """The same camera at ``factor`` times the resolution (pixel centres kept consistent)."""
        w, h = max(1, round(self.width * factor)), max(1, round(self.height * factor))
        return Camera(scale_intrinsics(self.K, w / self.width, h / self.height), w, h, self.T_world_cam)

    def to_json(self) -> dict:
        return {"K": self.K.tolist(), "width": self.width, "height": self.height, "T_world_cam": self.T_world_cam.tolist()}


def read_pose_file(path: str | Path, default: CameraView | None = None) -> Camera:
    """A :class:`Camera` from a pose file (module doc); K and size default to ``default``'s."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "pose file does not exist")
    text = path.read_text(errors="replace")
    K, size = None, None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
            T = np.array(data["T_world_cam"], dtype=np.float64)
            if "K" in data:
                K, size = np.array(data["K"], dtype=np.float64), (int(data["width"]), int(data["height"]))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise InputError(path, f"not a pose JSON with T_world_cam (and optionally K, width, height): {err}") from None
    else:
        try:
            T = np.array(text.replace(",", " ").split(), dtype=np.float64)
        except ValueError:
            raise InputError(path, "pose text must hold 16 numbers (a 4x4 T_world_cam)") from None
        if T.size != 16:
            raise InputError(path, f"pose text must hold 16 numbers (a 4x4 T_world_cam), found {T.size}")
        T = T.reshape(4, 4)
    if T.shape != (4, 4):
        raise InputError(path, f"T_world_cam has shape {list(T.shape)}, expected [4, 4]")
    problem = rigid_error(T)
    if problem:
        raise InputError(path, problem)
    if K is None:
        if default is None:
            raise InputError(path, "gives no intrinsics (K, width, height) and the memory stores no source camera")
        K, size = default.K, (default.width, default.height)
    try:
        return Camera(K, size[0], size[1], T)
    except InputError as err:
        raise InputError(path, err.problem) from None
