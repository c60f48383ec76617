"""APC 2016 shelf folders: ``cam.info.txt`` (intrinsics, depth-to-colour extrinsic and one
camera-to-world pose per frame), ``frame-*.{color,depth}.png`` and ``masks/``; detection and reader.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from m3_memory.errors import InputError
from m3_memory.recording.base import Recording
from m3_memory.recording.frame import Frame
from m3_memory.recording.images import read_rgb, read_u16
from m3_memory.recording.posed import NOMINAL_FPS, Entry, checked_pose, numbers, read_text

_APC_INFO = "cam.info.txt"
_APC_POSE = re.compile(r"Camera-to-world extrinsic matrix \(camera pose\) for (frame-(\d+))$")
_APC_K = "Color camera intrinsic matrix"
_APC_K_DEPTH = "Depth camera intrinsic matrix"
_APC_DEPTH_TO_COLOR = "Depth-to-color camera extrinsic matrix"
_APC_BIN_TO_WORLD = "Bin-to-world transformation matrix"


def detect_apc2016(path: Path) -> bool:
    """A folder with cam.info.txt (the APC 2016 shelf/tote scene layout)."""
    path = Path(path)
    return path.is_dir() and (path / _APC_INFO).is_file()


def decode_apc_depth(raw: np.ndarray) -> np.ndarray:
    """APC 2016 depth PNG [H, W] (uint16, the value's bits rotated right by 3, units of 0.1 mm)
    -> float32 [H, W] metres, 0 = invalid."""
    d = raw.astype(np.uint32)
    return ((((d << 13) | (d >> 3)) & 0xFFFF).astype(np.float32) / np.float32(10000.0)).astype(np.float32)


def _apc_blocks(path: Path, text: str) -> dict[str, np.ndarray]:
    """The numeric blocks of cam.info.txt [N], keyed by the ``# ...`` heading above them
    (headings without numbers under them, like ``# Bin ID: B``, are left out)."""
    lines_of: dict[str, list[str]] = {}
    heading = None
    for line in text.splitlines():
        if line.startswith("#"):
            heading = line.lstrip("# ").strip()
            lines_of[heading] = []
        elif line.strip():
            if heading is None:
                raise InputError(path, f"numbers before the first '# ...' heading: {line.strip()[:40]!r}")
            lines_of[heading].append(line)
    return {h: numbers(f"{path} '# {h}'", " ".join(lines)) for h, lines in lines_of.items() if lines}


def _apc_matrix(path: Path, blocks: dict[str, np.ndarray], heading: str, n: int, required: bool) -> np.ndarray | None:
    """The n x n matrix under ``# heading`` [n, n], None when absent and not ``required``."""
    if heading not in blocks:
        if required:
            raise InputError(path, f"has no '# {heading}' block")
        return None
    values = blocks[heading]
    if values.size != n * n:
        raise InputError(path, f"'# {heading}' has {values.size} numbers, expected {n * n}")
    return values.reshape(n, n)


class Apc2016Recording(Recording):
    """APC 2016 scene folder (MIT-Princeton shelf/tote captures).

    ``cam.info.txt`` holds, under ``# ...`` headings: the object list (``# Objects: [...]``),
    the colour K, the depth K, the depth-to-colour extrinsic, the bin-to-world transform and a
    camera-to-world pose per frame (``# Camera-to-world extrinsic matrix (camera pose) for
    frame-XXXXXX``, OpenCV optical camera, metres). Frames are those with a pose, in frame
    order: ``frame-XXXXXX.color.png`` and ``frame-XXXXXX.depth.png``, depth already
    registered to colour and stored as uint16 in units of 0.1 mm with its bits rotated
    (:func:`decode_apc_depth`). The ``raw/`` unregistered depth is not used.

    Masks: ``masks/frame-XXXXXX.<object>.mask.png`` are uint16 segmentation confidence maps
    (65535 = 1) and ``masks/<object>.thresh.txt`` the confidence threshold in [0, 1] for that
    object; a frame's mask is ``confidence > threshold``. Objects without a threshold file
    have no masks; a frame without a mask file for an object has no mask for it.

    No timestamps: stamp = frame number / 30 s.

    Attributes besides the frames: ``K_depth`` [3, 3] depth intrinsics (pixels),
    ``T_color_depth`` [4, 4] depth camera to colour camera, ``T_world_bin`` [4, 4] shelf bin
    (or tote) to world; each None when the file lacks it.
    """

    format_name = "apc2016"

    def __init__(self, path: str | Path):
        super().__init__(path)
        if not detect_apc2016(self.path):
            raise InputError(self.path, f"is not an APC 2016 scene folder: expected {_APC_INFO} in it")
        info = self.path / _APC_INFO
        text = read_text(info)
        blocks = _apc_blocks(info, text)
        self.K = _apc_matrix(info, blocks, _APC_K, 3, True)  # [3, 3] pixels
        self.K_depth = _apc_matrix(info, blocks, _APC_K_DEPTH, 3, False)  # [3, 3] pixels
        self.T_color_depth = _apc_matrix(info, blocks, _APC_DEPTH_TO_COLOR, 4, False)  # [4, 4]
        self.T_world_bin = _apc_matrix(info, blocks, _APC_BIN_TO_WORLD, 4, False)  # [4, 4]
        self._objects = self._read_objects(info, text)
        self.thresholds: dict[str, float] = {}  # object -> confidence threshold in [0, 1]
        for obj in self._objects:
            tfile = self.path / "masks" / f"{obj}.thresh.txt"
            if tfile.is_file():
                thresh = float(numbers(tfile, read_text(tfile), 1)[0])
                if not 0.0 <= thresh <= 1.0:
                    raise InputError(tfile, f"threshold {thresh} is outside [0, 1]")
                self.thresholds[obj] = thresh
        self.entries: list[Entry] = []
        for heading, values in blocks.items():
            m = _APC_POSE.match(heading)
            if not m:
                continue
            stem, number = m.group(1), int(m.group(2))
            where = f"{info} '# {heading}'"
            if values.size != 16:
                raise InputError(where, f"has {values.size} numbers, expected 16")
            self.entries.append(Entry(self.path / f"{stem}.color.png", self.path / f"{stem}.depth.png", self.K,
                                       checked_pose(where, values.reshape(4, 4)), number / NOMINAL_FPS, stem))
        if not self.entries:
            raise InputError(info, "lists no camera poses ('# Camera-to-world extrinsic matrix (camera pose) for frame-N')")
        self.entries.sort(key=lambda e: e.stamp)

    @staticmethod
    def _read_objects(info: Path, text: str) -> list[str]:
        """Object names of the ``# Objects: ["a","b"]`` line (empty when there is none)."""
        m = re.search(r"^# Objects:\s*(.*)$", text, flags=re.MULTILINE)
        if not m:
            return []
        try:
            names = json.loads(m.group(1))
        except json.JSONDecodeError as err:
            raise InputError(info, f"malformed '# Objects' line ({err})") from None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise InputError(info, "'# Objects' must be a list of names")
        return list(dict.fromkeys(names))  # a name listed twice (two instances) is one mask

    @property
    def objects(self) -> list[str]:
        return list(self._objects)

    def __len__(self) -> int:
        return len(self.entries)

    def _frames(self) -> Iterator[Frame]:
        for e in self.entries:
            masks = {}
            for obj, thresh in self.thresholds.items():
                mfile = self.path / "masks" / f"{e.name}.{obj}.mask.png"
                if mfile.is_file():
                    masks[obj] = read_u16(mfile).astype(np.float32) / np.float32(65535.0) > thresh  # [H, W] bool
            yield e.frame(read_rgb(e.color), decode_apc_depth(read_u16(e.depth)), masks)
