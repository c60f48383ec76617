"""What every recording reader is: a lazily iterated sequence of validated frames."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from m3_memory.errors import InputError
from m3_memory.recording.frame import Frame
from m3_memory.robot_pose import RobotPose


@dataclass
class ReadStats:
    """What a pass over a recording found: frames yielded and frames dropped, with reasons."""

    yielded: int = 0
    dropped: dict[str, int] = field(default_factory=dict)

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1


class Recording(ABC):
    """A recording on disk. Iterating streams :class:`Frame` objects without loading the
    whole recording; each pass re-opens the source, so a recording can be iterated again.
    """

    format_name: str = ""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise InputError(self.path, "does not exist")
        self.stats = ReadStats()

    @property
    def objects(self) -> list[str]:
        """Names of the annotated objects whose masks frames carry (may be empty)."""
        return []

    def sparse_points(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Structure-from-motion points of the scene, when the recording has them:
        (xyz [M, 3] float64 world metres, rgb [M, 3] uint8); None otherwise."""
        return None

    @property
    def tf_frame(self) -> str:
        """The tf frame of the poses (``Frame.T_world_cam``) that a memory built from this recording
        lives in: REP-105's ``map`` unless the recording names one."""
        return "map"

    def robot_pose(self, stamp: float) -> RobotPose | None:
        """Where the robot's base stood in the recording's world frame (the frame of
        ``Frame.T_world_cam``) at ``stamp`` seconds, when the recording says; None otherwise."""
        return None

    @abstractmethod
    def _frames(self) -> Iterator[Frame]:
        """Yield raw frames; the base class validates and counts them."""

    def __iter__(self) -> Iterator[Frame]:
        self.stats = ReadStats()
        for frame in self._frames():
            frame.validate(str(self.path))
            self.stats.yielded += 1
            yield frame

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"
