"""What the posed-folder formats share: checked reading of their text indexes (numbers,
poses, image sizes, with errors naming the file) and the per-frame index entry.

Every folder reader indexes its frames when it is opened (file names, intrinsics and poses:
small, and checked then, so a malformed index fails at once naming its file) and reads a
frame's images only when that frame is yielded. Intrinsics are returned in m3's convention,
pixel centres at integer coordinates (OpenCV). None of these formats stores timestamps except
m3's nerfstudio extension: stamps are made up as frame number (or index) / :data:`NOMINAL_FPS`
seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from m3_memory.conventions import rigid_error
from m3_memory.errors import InputError
from m3_memory.recording.frame import Frame

NOMINAL_FPS = 30.0  # formats without timestamps: stamp = frame number (or index) / NOMINAL_FPS seconds


def read_text(path: Path) -> str:
    """The text of ``path``; InputError naming it when it is missing or not text."""
    if not path.is_file():
        raise InputError(path, "file is missing")
    try:
        return path.read_text()
    except UnicodeDecodeError:
        raise InputError(path, "is not a text file") from None
    except OSError as err:
        raise InputError(path, f"cannot be read ({err.strerror})") from None


def numbers(where: str | Path, text: str, count: int | None = None) -> np.ndarray:
    """Whitespace-separated floats of ``text`` [N]; InputError naming ``where`` when malformed
    or (with ``count``) when there are not exactly ``count`` of them."""
    try:
        values = np.array([float(x) for x in text.split()], dtype=np.float64)
    except ValueError as err:
        raise InputError(where, f"malformed number ({err})") from None
    if count is not None and values.size != count:
        raise InputError(where, f"expected {count} numbers, found {values.size}")
    return values


def checked_pose(where: str | Path, T: np.ndarray) -> np.ndarray:
    """``T`` [4, 4] when it is a finite rigid transform; otherwise InputError naming ``where``."""
    problem = rigid_error(T)
    if problem:
        raise InputError(where, problem)
    return T


def check_size(image: Path, rgb: np.ndarray, declared: tuple[int, int] | None, index: Path) -> None:
    """InputError naming ``image`` when its (H, W) differs from what ``index`` declares for it."""
    if declared is not None and rgb.shape[:2] != declared:
        raise InputError(image, f"image is {rgb.shape[1]}x{rgb.shape[0]} pixels but {index} gives "
                         f"{declared[1]}x{declared[0]} for its intrinsics")


@dataclass
class Entry:
    """One frame of a folder: where its files are and what the index says about it.

    K: [3, 3] colour intrinsics (pixels, OpenCV centres). T_world_cam: [4, 4] colour optical
    frame (OpenCV) to world, or None when unknown or still to be read from ``pose_file``.
    stamp: seconds. size: (H, W) the index declares for the colour image, or None.
    pose_file: 3DMatch pose text read when the frame is yielded. label: nerfstudio m3 label image.
    """

    color: Path
    depth: Path
    K: np.ndarray
    T_world_cam: np.ndarray | None
    stamp: float
    name: str
    size: tuple[int, int] | None = None
    pose_file: Path | None = None
    label: Path | None = None

    def frame(self, rgb: np.ndarray, depth: np.ndarray, masks: dict[str, np.ndarray] | None = None) -> Frame:
        """The frame of this entry from its images (K and pose copied, so frames own them)."""
        pose = None if self.T_world_cam is None else self.T_world_cam.copy()
        return Frame(rgb, depth, self.K.copy(), pose, self.stamp, masks=masks or {}, name=self.name)
