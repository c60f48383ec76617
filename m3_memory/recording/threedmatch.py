"""3DMatch / SUN3D folders: ``camera-intrinsics.txt`` beside ``seq-XX/`` folders of
``frame-XXXXXX.{color,depth}.png`` and ``.pose.txt``; its detection and its reader.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from m3_memory.errors import InputError
from m3_memory.recording.base import Recording
from m3_memory.recording.frame import Frame
from m3_memory.recording.images import read_depth, read_rgb
from m3_memory.recording.posed import NOMINAL_FPS, Entry, checked_pose, numbers, read_text

_3DMATCH_COLOR = re.compile(r"frame-(\d+)\.color\.(png|jpg)$")
_3DMATCH_INTRINSICS = "camera-intrinsics.txt"


def detect_3dmatch(path: Path) -> bool:
    """A folder with camera-intrinsics.txt and seq-* folders, or a seq-* folder inside one."""
    path = Path(path)
    if not path.is_dir():
        return False
    if (path / _3DMATCH_INTRINSICS).is_file() and any(p.is_dir() for p in path.glob("seq-*")):
        return True
    return path.name.startswith("seq-") and (path.parent / _3DMATCH_INTRINSICS).is_file()


class ThreeDMatchRecording(Recording):
    """3DMatch / SUN3D layout: ``camera-intrinsics.txt`` (3x3 K, pixels) beside ``seq-XX/``
    folders of ``frame-XXXXXX.color.png`` (or ``.jpg``), ``.depth.png`` (uint16 millimetres,
    registered to colour, 0 invalid) and ``.pose.txt`` (4x4 camera-to-world, OpenCV optical
    camera, metres; a frame without one has no pose). ``path`` is the root or one ``seq-XX``
    folder in it.

    Frames come sequence by sequence, in file-name order. The format has no timestamps: a
    frame's stamp is its frame number / 30 s, and each further sequence starts 1/30 s after
    the previous one ends, so stamps increase through the recording.
    """

    format_name = "3dmatch"

    def __init__(self, path: str | Path):
        super().__init__(path)
        if not detect_3dmatch(self.path):
            raise InputError(self.path, f"is not a 3DMatch folder: expected {_3DMATCH_INTRINSICS} and seq-*/ folders, "
                             "or a seq-* folder inside such a folder")
        has_intrinsics = (self.path / _3DMATCH_INTRINSICS).is_file()
        root = self.path if has_intrinsics else self.path.parent
        kfile = root / _3DMATCH_INTRINSICS
        self.K = numbers(kfile, read_text(kfile), 9).reshape(3, 3)  # [3, 3] pixels
        seqs = sorted(p for p in root.glob("seq-*") if p.is_dir()) if has_intrinsics else [self.path]
        self.entries: list[Entry] = []
        start = 0.0  # stamp of frame 0 of the current sequence, seconds
        for seq in seqs:
            last = -1
            for color in sorted(seq.iterdir()):
                m = _3DMATCH_COLOR.match(color.name)
                if not m:
                    continue
                number, stem = int(m.group(1)), f"frame-{m.group(1)}"
                pose = seq / f"{stem}.pose.txt"
                self.entries.append(Entry(color, seq / f"{stem}.depth.png", self.K, None, start + number / NOMINAL_FPS,
                                           f"{seq.name}/{stem}", pose_file=pose if pose.is_file() else None))
                last = max(last, number)
            start += (last + 1) / NOMINAL_FPS
        if not self.entries:
            raise InputError(self.path, "has no seq-*/frame-XXXXXX.color.png files")

    def __len__(self) -> int:
        return len(self.entries)

    def _frames(self) -> Iterator[Frame]:
        for e in self.entries:
            pose = None
            if e.pose_file is not None:
                pose = checked_pose(e.pose_file, numbers(e.pose_file, read_text(e.pose_file), 16).reshape(4, 4))
            depth = read_depth(e.depth)  # uint16 millimetres -> metres
            yield Frame(read_rgb(e.color), depth, e.K.copy(), pose, e.stamp, name=e.name)
