"""The common frame every reader yields."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from m3_memory.conventions import rigid_error
from m3_memory.errors import InputError


@dataclass
class Frame:
    """One RGB-D view.

    rgb: uint8 [H, W, 3]. depth: float32 [H, W] metres registered to the colour camera,
    0 = invalid. K: float64 [3, 3] colour intrinsics (pixels). T_world_cam: float64 [4, 4]
    colour optical frame (OpenCV) to world, or None when the recording has no pose.
    stamp: seconds. masks: optional object name -> bool [H, W]. name: a label for messages.
    """

    rgb: np.ndarray
    depth: np.ndarray
    K: np.ndarray
    T_world_cam: np.ndarray | None
    stamp: float
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    name: str = ""

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return self.rgb.shape[0], self.rgb.shape[1]

    def validate(self, source: str) -> "Frame":
        """Check shapes, dtypes and the pose; raise :class:`InputError` naming ``source``."""
        where = f"{source}{' ' + self.name if self.name else ''}"
        if self.rgb.ndim != 3 or self.rgb.shape[2] != 3 or self.rgb.dtype != np.uint8:
            raise InputError(where, f"colour image must be uint8 [H, W, 3], got {self.rgb.dtype} {list(self.rgb.shape)}")
        if self.depth.shape != self.rgb.shape[:2]:
            raise InputError(where, f"depth {list(self.depth.shape)} and colour {list(self.rgb.shape[:2])} differ in size "
                             "and no intrinsics/extrinsics are given to register them")
        if self.depth.dtype != np.float32:
            raise InputError(where, f"depth must be float32 metres, got {self.depth.dtype}")
        if self.K.shape != (3, 3) or not np.all(np.isfinite(self.K)) or self.K[0, 0] <= 0 or self.K[1, 1] <= 0:
            raise InputError(where, f"invalid intrinsics K {np.asarray(self.K).tolist()}")
        if self.T_world_cam is not None:
            problem = rigid_error(self.T_world_cam)
            if problem:
                raise InputError(where, problem)
        for obj, m in self.masks.items():
            if m.shape != self.depth.shape or m.dtype != bool:
                raise InputError(where, f"mask {obj!r} must be bool {list(self.depth.shape)}, got {m.dtype} {list(m.shape)}")
        return self
