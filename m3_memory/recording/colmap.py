"""COLMAP text models (``cameras.txt``, ``images.txt``) with depth maps beside the images;
detection and reader. COLMAP puts the first pixel's centre at (0.5, 0.5), so cx, cy are shifted
by -0.5 on reading.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from m3_memory.conventions import T_from_quat_wxyz, intrinsics_matrix, invert_T
from m3_memory.errors import InputError
from m3_memory.recording.base import Recording
from m3_memory.recording.frame import Frame
from m3_memory.recording.images import read_depth, read_rgb
from m3_memory.recording.posed import NOMINAL_FPS, Entry, check_size, checked_pose, numbers, read_text


def _colmap_model_dir(path: Path) -> Path | None:
    """The folder holding cameras.txt and images.txt: ``path``, ``path/sparse/0`` or ``path/sparse``."""
    for cand in (path, path / "sparse" / "0", path / "sparse"):
        if (cand / "cameras.txt").is_file() and (cand / "images.txt").is_file():
            return cand
    return None


def detect_colmap(path: Path) -> bool:
    """A folder with cameras.txt and images.txt (directly, in sparse/0 or in sparse/)."""
    path = Path(path)
    return path.is_dir() and _colmap_model_dir(path) is not None


@dataclass
class _ColmapCamera:
    """One camera of cameras.txt: K [3, 3] (pixels, OpenCV centres) and (H, W) in pixels."""

    K: np.ndarray
    size: tuple[int, int]


class ColmapRecording(Recording):
    """A COLMAP text model with depth maps beside it.

    ``cameras.txt`` and ``images.txt`` in ``path``, ``path/sparse/0`` or ``path/sparse``.
    Only undistorted cameras are read (PINHOLE, SIMPLE_PINHOLE; run ``colmap
    image_undistorter`` first otherwise). images.txt gives per image ``IMAGE_ID QW QX QY QZ TX
    TY TZ CAMERA_ID NAME`` (T_cam_world, OpenCV camera, wxyz quaternion, model units taken as
    metres) followed by one line of 2D points, ignored.

    Colour ``images/NAME`` and depth ``depth/NAME`` with the suffix ``.png`` (uint16
    millimetres) or ``.npy`` (float32 metres) are looked up in the model folder and its
    parents up to ``path`` (up to the folder holding ``sparse/`` when ``path`` is the model
    folder inside it). Frames are in IMAGE_ID order; no timestamps: stamp = index / 30 s.
    """

    format_name = "colmap"

    def __init__(self, path: str | Path):
        super().__init__(path)
        if not detect_colmap(self.path):
            raise InputError(self.path, "is not a COLMAP model folder: expected cameras.txt and images.txt in it, "
                             "in sparse/0/ or in sparse/")
        given = self.path.resolve()
        model = _colmap_model_dir(given)
        top = next((p.parent for p in (given, given.parent) if p.name == "sparse"), given)
        chain = [model, *model.parents]
        self._search: list[Path] = chain[: chain.index(top) + 1]  # where images/ and depth/ may be, nearest first
        self.cameras = self._read_cameras(model / "cameras.txt")
        self.images_txt = model / "images.txt"
        rows = self._read_images(self.images_txt)
        self.entries: list[Entry] = []
        for i, (_, T_world_cam, cam_id, name) in enumerate(sorted(rows, key=lambda r: r[0])):
            if cam_id not in self.cameras:
                raise InputError(self.images_txt, f"image {name} uses camera {cam_id}, which cameras.txt does not define")
            color = self._find(Path("images") / name)
            if color is None:
                raise InputError(self.images_txt, f"colour image images/{name} not found in {self._search_text()}")
            depth = self._find(Path("depth") / Path(name).with_suffix(".png")) or \
                self._find(Path("depth") / Path(name).with_suffix(".npy"))
            if depth is None:
                raise InputError(self.images_txt, f"depth map depth/{Path(name).with_suffix('.png')} (or .npy) not found in "
                                 f"{self._search_text()}; m3 needs a depth map per image")
            cam = self.cameras[cam_id]
            self.entries.append(Entry(color, depth, cam.K, T_world_cam, i / NOMINAL_FPS, Path(name).stem,
                                       size=cam.size))

    def _find(self, rel: Path) -> Path | None:
        """The first existing ``folder / rel`` over the search folders."""
        return next((b / rel for b in self._search if (b / rel).is_file()), None)

    def _search_text(self) -> str:
        return " or ".join(str(b) for b in self._search)

    @staticmethod
    def _read_cameras(path: Path) -> dict[int, _ColmapCamera]:
        """cameras.txt: ``CAMERA_ID MODEL WIDTH HEIGHT PARAMS[]`` per line -> id -> camera."""
        cameras: dict[int, _ColmapCamera] = {}
        for n, line in enumerate(read_text(path).splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            parts = line.split()
            if len(parts) < 5 or not parts[0].isdigit():
                raise InputError(path, f"line {n} is not 'CAMERA_ID MODEL WIDTH HEIGHT PARAMS[]': {line.strip()[:60]!r}")
            cam_id, model = int(parts[0]), parts[1]
            w, h = numbers(f"{path} line {n}", " ".join(parts[2:4]), 2)
            p = numbers(f"{path} line {n}", " ".join(parts[4:]))
            if model == "SIMPLE_PINHOLE" and p.size == 3:
                fx = fy = p[0]
                cx, cy = p[1], p[2]
            elif model == "PINHOLE" and p.size == 4:
                fx, fy, cx, cy = p
            else:
                raise InputError(path, f"camera {cam_id} is {model} with {p.size} parameters; m3 reads PINHOLE or "
                                 "SIMPLE_PINHOLE cameras: undistort with 'colmap image_undistorter' first")
            cameras[cam_id] = _ColmapCamera(intrinsics_matrix(fx, fy, cx - 0.5, cy - 0.5), (int(h), int(w)))
        if not cameras:
            raise InputError(path, "defines no cameras")
        return cameras

    @staticmethod
    def _read_images(path: Path) -> list[tuple[int, np.ndarray, int, str]]:
        """images.txt -> (IMAGE_ID, T_world_cam [4, 4], CAMERA_ID, NAME) per image.

        As COLMAP reads it: blank and ``#`` lines are skipped before an image line, and the line
        right after an image line is its 2D points line (may be empty)."""
        lines = read_text(path).splitlines()
        rows = []
        n = 0
        while n < len(lines):
            line = lines[n].strip()
            n += 1
            if not line or line.startswith("#"):
                continue
            where = f"{path} line {n}"
            parts = line.split()
            if len(parts) < 10 or not parts[0].isdigit() or not parts[8].isdigit():
                raise InputError(where, "is not 'IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME'")
            values = numbers(where, " ".join(parts[1:8]), 7)
            q = values[:4]  # wxyz
            if not np.all(np.isfinite(values)) or np.linalg.norm(q) < 1e-12:
                raise InputError(where, "pose contains NaN or infinity, or a zero quaternion")
            T_world_cam = checked_pose(where, invert_T(T_from_quat_wxyz(q, values[4:7])))
            rows.append((int(parts[0]), T_world_cam, int(parts[8]), " ".join(parts[9:])))
            n += 1  # the POINTS2D line
        if not rows:
            raise InputError(path, "lists no images")
        return rows

    def __len__(self) -> int:
        return len(self.entries)

    def sparse_points(self) -> tuple[np.ndarray, np.ndarray] | None:
        """points3D.txt beside images.txt (``POINT3D_ID X Y Z R G B ERROR TRACK...`` per line):
        (xyz [M, 3] world metres, rgb [M, 3] uint8), or None when the model has no such file."""
        path = self.images_txt.parent / "points3D.txt"
        if not path.is_file():
            return None
        xyz, rgb = [], []
        for n, line in enumerate(read_text(path).splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            values = numbers(f"{path} line {n}", " ".join(parts[1:7]), 6) if len(parts) >= 8 else None
            if values is None or not np.all(np.isfinite(values[:3])) or not np.all((values[3:] >= 0) & (values[3:] <= 255)):
                raise InputError(f"{path} line {n}", "is not 'POINT3D_ID X Y Z R G B ERROR TRACK...'")
            xyz.append(values[:3])
            rgb.append(values[3:])
        if not xyz:
            return None
        return np.array(xyz, dtype=np.float64), np.array(rgb).astype(np.uint8)

    def _frames(self) -> Iterator[Frame]:
        for e in self.entries:
            rgb = read_rgb(e.color)
            check_size(e.color, rgb, e.size, self.images_txt.with_name("cameras.txt"))
            yield e.frame(rgb, read_depth(e.depth))
