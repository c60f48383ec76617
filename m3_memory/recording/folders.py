"""Posed image folders: 3DMatch/SUN3D, APC 2016, nerfstudio ``transforms.json``, COLMAP text.

Every reader lists its frames up front (file names and poses, small) and reads a frame's
images only when that frame is yielded.

Intrinsics are returned in m3's convention, pixel centres at integer coordinates
(OpenCV). nerfstudio and COLMAP put the centre of the first pixel at (0.5, 0.5), so their
cx, cy are shifted by -0.5 on reading.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from m3_memory.conventions import GL_FROM_CV, T_from_quat_wxyz, depth_from_u16, intrinsics_matrix, invert_T
from m3_memory.errors import InputError
from m3_memory.recording.base import Recording
from m3_memory.recording.frame import Frame
from m3_memory.recording.images import read_depth, read_rgb, read_u8, read_u16

NOMINAL_FPS = 30.0  # folder formats without timestamps: stamp = frame number / NOMINAL_FPS


def _numbers(path: Path, text: str, count: int | None = None) -> np.ndarray:
    """Whitespace-separated floats of ``text``; InputError naming ``path`` when malformed."""
    try:
        values = np.array([float(x) for x in text.split()], dtype=np.float64)
    except ValueError as err:
        raise InputError(path, f"malformed number ({err})") from None
    if count is not None and values.size != count:
        raise InputError(path, f"expected {count} numbers, found {values.size}")
    return values


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise InputError(path, "file is missing")
    try:
        return path.read_text()
    except UnicodeDecodeError:
        raise InputError(path, "is not a text file") from None


@dataclass
class _Entry:
    """One frame of a folder: where its files are and what is known without reading them."""

    color: Path
    depth: Path
    T_world_cam: np.ndarray | None
    stamp: float
    name: str
    pose_file: Path | None = None
    label: Path | None = None


# ---------------------------------------------------------------- 3DMatch / SUN3D

_FRAME_RE = re.compile(r"frame-(\d+)\.color\.(png|jpg)$")


def detect_3dmatch(path: Path) -> bool:
    """A folder with camera-intrinsics.txt and seq-* folders, or a seq-* folder inside one."""
    if not path.is_dir():
        return False
    if (path / "camera-intrinsics.txt").is_file() and any(path.glob("seq-*")):
        return True
    return path.name.startswith("seq-") and (path.parent / "camera-intrinsics.txt").is_file()


class ThreeDMatchRecording(Recording):
    """3DMatch / SUN3D layout: ``camera-intrinsics.txt`` (3x3) and ``seq-XX/frame-XXXXXX``
    ``.color.png``, ``.depth.png`` (uint16 millimetres, registered to colour) and ``.pose.txt``
    (4x4 camera-to-world). The format has no timestamps: stamp = frame number / 30 s."""

    format_name = "3dmatch"

    def __init__(self, path: str | Path):
        super().__init__(path)
        root = self.path if (self.path / "camera-intrinsics.txt").is_file() else self.path.parent
        seqs = [self.path] if self.path.name.startswith("seq-") else sorted(root.glob("seq-*"))
        kfile = root / "camera-intrinsics.txt"
        self.K = _numbers(kfile, _read_text(kfile), 9).reshape(3, 3)
        self.entries: list[_Entry] = []
        for seq in seqs:
            for color in sorted(seq.iterdir()):
                m = _FRAME_RE.match(color.name)
                if not m:
                    continue
                stem = color.name[: -len(".color." + m.group(2))]
                self.entries.append(_Entry(color, seq / f"{stem}.depth.png", None, int(m.group(1)) / NOMINAL_FPS,
                                           f"{seq.name}/{stem}", pose_file=seq / f"{stem}.pose.txt"))
        if not self.entries:
            raise InputError(self.path, "no frame-XXXXXX.color.png files in the seq-* folders")

    def __len__(self) -> int:
        return len(self.entries)

    def _frames(self) -> Iterator[Frame]:
        for e in self.entries:
            pose = None
            if e.pose_file.is_file():
                pose = _numbers(e.pose_file, _read_text(e.pose_file), 16).reshape(4, 4)
            yield Frame(read_rgb(e.color), depth_from_u16(read_u16(e.depth)), self.K.copy(), pose, e.stamp,
                        name=e.name)


# ---------------------------------------------------------------- APC 2016


def detect_apc2016(path: Path) -> bool:
    """A folder with cam.info.txt (the APC 2016 shelf/tote scene layout)."""
    return path.is_dir() and (path / "cam.info.txt").is_file()


def decode_apc_depth(raw: np.ndarray) -> np.ndarray:
    """APC 2016 depth PNG (uint16 with its bits rotated right by 3) -> float32 metres."""
    d = raw.astype(np.uint32)
    return ((((d << 13) | (d >> 3)) & 0xFFFF).astype(np.float32) / np.float32(10000.0)).astype(np.float32)


def _apc_blocks(path: Path, text: str) -> dict[str, np.ndarray]:
    """The numeric blocks of cam.info.txt, keyed by their ``# ...`` heading."""
    blocks: dict[str, list[str]] = {}
    heading = None
    for line in text.splitlines():
        if line.startswith("#"):
            heading = line.lstrip("# ").strip()
            blocks[heading] = []
        elif line.strip() and heading is not None:
            blocks[heading].append(line)
    return {h: _numbers(path, " ".join(lines)) for h, lines in blocks.items() if lines}


class Apc2016Recording(Recording):
    """APC 2016 scene: ``cam.info.txt`` (colour K, depth K, depth-to-colour extrinsic, a
    camera-to-world pose per frame, object names), ``frame-XXXXXX.color.png``,
    ``.depth.png`` (registered to colour, rotated bits, 1/10000 m) and object masks
    ``masks/frame-XXXXXX.<object>.mask.png`` (uint16 probabilities, thresholds in
    ``masks/<object>.thresh.txt``). No timestamps: stamp = frame number / 30 s."""

    format_name = "apc2016"

    def __init__(self, path: str | Path):
        super().__init__(path)
        info = self.path / "cam.info.txt"
        text = _read_text(info)
        blocks = _apc_blocks(info, text)
        if "Color camera intrinsic matrix" not in blocks:
            raise InputError(info, "has no '# Color camera intrinsic matrix' block")
        self.K = blocks["Color camera intrinsic matrix"].reshape(3, 3)
        m = re.search(r"# Objects:\s*(\[.*\])", text)
        try:
            self._objects = json.loads(m.group(1)) if m else []
        except json.JSONDecodeError as err:
            raise InputError(info, f"malformed '# Objects' line ({err})") from None
        self.thresholds = {}
        for obj in self._objects:
            tfile = self.path / "masks" / f"{obj}.thresh.txt"
            if tfile.is_file():
                self.thresholds[obj] = float(_numbers(tfile, _read_text(tfile), 1)[0])
        self.entries = []
        for heading, values in blocks.items():
            fm = re.match(r"Camera-to-world extrinsic matrix \(camera pose\) for (frame-\d+)", heading)
            if not fm:
                continue
            if values.size != 16:
                raise InputError(info, f"pose of {fm.group(1)} has {values.size} numbers, expected 16")
            stem = fm.group(1)
            self.entries.append(_Entry(self.path / f"{stem}.color.png", self.path / f"{stem}.depth.png",
                                       values.reshape(4, 4), int(stem[6:]) / NOMINAL_FPS, stem))
        if not self.entries:
            raise InputError(info, "lists no camera poses ('# Camera-to-world extrinsic matrix ... for frame-N')")

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
                    masks[obj] = read_u16(mfile).astype(np.float64) / 65535.0 > thresh
            yield Frame(read_rgb(e.color), decode_apc_depth(read_u16(e.depth)), self.K.copy(), e.T_world_cam.copy(),
                        e.stamp, masks=masks, name=e.name)


# ---------------------------------------------------------------- nerfstudio


def _load_json(path: Path) -> dict:
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as err:
        raise InputError(path, f"corrupt or truncated JSON ({err})") from None
    if not isinstance(data, dict):
        raise InputError(path, "top level must be a JSON object")
    return data


def detect_nerfstudio(path: Path) -> bool:
    """A transforms.json file, or a folder holding one."""
    return (path.is_file() and path.name == "transforms.json") or (path.is_dir() and (path / "transforms.json").is_file())


class NerfstudioRecording(Recording):
    """nerfstudio ``transforms.json``: intrinsics (``fl_x fl_y cx cy w h``, top level or per
    frame), ``transform_matrix`` camera-to-world in the OpenGL convention (converted to
    OpenCV), ``depth_file_path`` (uint16 PNG in units of ``depth_unit_scale_factor`` metres,
    default 0.001, or ``.npy`` float metres). m3 extensions: ``m3_objects`` (id, name) with
    per-frame ``m3_label_path`` (uint8 label image) and ``m3_stamp`` (seconds)."""

    format_name = "nerfstudio"

    def __init__(self, path: str | Path):
        super().__init__(path)
        self.json_path = self.path if self.path.is_file() else self.path / "transforms.json"
        self.root = self.json_path.parent
        meta = self.meta = _load_json(self.json_path)
        frames = meta.get("frames")
        if not isinstance(frames, list) or not frames:
            raise InputError(self.json_path, "has no 'frames' list")
        self.depth_scale = float(meta.get("depth_unit_scale_factor", 1e-3))
        self._objects = {int(o["id"]): str(o["name"]) for o in meta.get("m3_objects", [])}
        self.entries = []
        for i, fr in enumerate(frames):
            where = f"{self.json_path} frame {i}"
            if "file_path" not in fr:
                raise InputError(where, "has no file_path")
            if "depth_file_path" not in fr:
                raise InputError(where, "has no depth_file_path; m3 needs a depth map per frame")
            pose = None
            if "transform_matrix" in fr:
                try:
                    pose = np.array(fr["transform_matrix"], dtype=np.float64)
                except (TypeError, ValueError):
                    raise InputError(where, "transform_matrix is not a 4x4 matrix of numbers") from None
                if pose.shape != (4, 4):
                    raise InputError(where, f"transform_matrix has shape {pose.shape}, expected (4, 4)")
                pose = pose @ GL_FROM_CV
            label = self.root / fr["m3_label_path"] if "m3_label_path" in fr else None
            self.entries.append(_Entry(self.root / fr["file_path"], self.root / fr["depth_file_path"], pose,
                                       float(fr.get("m3_stamp", i / NOMINAL_FPS)), Path(fr["file_path"]).stem,
                                       label=label))
        self._K = [self._intrinsics(fr, f"{self.json_path} frame {i}") for i, fr in enumerate(frames)]

    def _intrinsics(self, fr: dict, where: str) -> np.ndarray:
        get = lambda key: fr.get(key, self.meta.get(key))  # noqa: E731 - per-frame overrides top level
        model = get("camera_model") or "PINHOLE"
        distortion = [get(k) or 0.0 for k in ("k1", "k2", "k3", "k4", "p1", "p2")]
        if model not in ("PINHOLE", "OPENCV", "SIMPLE_PINHOLE") or any(distortion):
            raise InputError(where, f"camera model {model} with distortion is not supported; undistort the images first")
        values = [get(k) for k in ("fl_x", "fl_y", "cx", "cy")]
        if any(v is None for v in values):
            raise InputError(where, "intrinsics fl_x, fl_y, cx, cy are missing")
        fx, fy, cx, cy = (float(v) for v in values)
        return intrinsics_matrix(fx, fy, cx - 0.5, cy - 0.5)

    @property
    def objects(self) -> list[str]:
        return list(self._objects.values())

    def __len__(self) -> int:
        return len(self.entries)

    def _frames(self) -> Iterator[Frame]:
        for e, K in zip(self.entries, self._K):
            masks = {}
            if e.label is not None:
                label = read_u8(e.label)
                masks = {name: label == oid for oid, name in self._objects.items()}
            yield Frame(read_rgb(e.color), read_depth(e.depth, self.depth_scale), K, e.T_world_cam, e.stamp, masks=masks, name=e.name)


# ---------------------------------------------------------------- COLMAP


def _colmap_model_dir(path: Path) -> Path | None:
    for cand in (path, path / "sparse" / "0", path / "sparse"):
        if (cand / "cameras.txt").is_file() and (cand / "images.txt").is_file():
            return cand
    return None


def detect_colmap(path: Path) -> bool:
    """A folder with cameras.txt and images.txt (directly, in sparse/0 or in sparse/)."""
    return path.is_dir() and _colmap_model_dir(path) is not None


class ColmapRecording(Recording):
    """A COLMAP text model (``cameras.txt``, ``images.txt``; T_cam_world as wxyz quaternion
    and translation) with colour images in ``images/`` and depth maps in ``depth/`` (uint16
    millimetre PNG or float32-metre ``.npy`` named like the image) beside the model, looked
    up from the model folder up to the folder given. Only undistorted models (PINHOLE,
    SIMPLE_PINHOLE) are read. No timestamps: stamp = index / 30 s."""

    format_name = "colmap"

    def __init__(self, path: str | Path):
        super().__init__(path)
        model = _colmap_model_dir(self.path)
        if model is None:
            raise InputError(self.path, "has no cameras.txt and images.txt")
        self.cameras = self._read_cameras(model / "cameras.txt")
        bases = [model, *model.parents]
        bases = bases[: bases.index(self.path) + 1] if self.path in bases else [model]
        self.entries = []
        images = model / "images.txt"
        lines = [ln for ln in _read_text(images).splitlines() if not ln.startswith("#")]
        for row, line in enumerate(lines[::2]):
            parts = line.split()
            if len(parts) < 10:
                if not line.strip():
                    continue
                raise InputError(images, f"image line {2 * row + 1} has {len(parts)} fields, expected 10")
            values = _numbers(images, " ".join(parts[1:9]), 8)
            cam_id, name = int(values[7]), " ".join(parts[9:])
            if cam_id not in self.cameras:
                raise InputError(images, f"image {name} uses camera {cam_id}, which cameras.txt does not define")
            T_world_cam = invert_T(T_from_quat_wxyz(values[:4], values[4:7])) if np.all(np.isfinite(values)) \
                else np.full((4, 4), np.nan)
            color = self._find(bases, Path("images") / name)
            depth = next((p for ext in (".png", ".npy")
                          if (p := self._find(bases, Path("depth") / (Path(name).stem + ext))) is not None), None)
            if color is None:
                raise InputError(images, f"colour image images/{name} not found beside the model")
            if depth is None:
                raise InputError(images, f"depth map depth/{Path(name).stem}.png (or .npy) not found beside the "
                                 "model; m3 needs depth")
            self.entries.append((int(parts[0]), cam_id, _Entry(color, depth, T_world_cam, 0.0, Path(name).stem)))
        self.entries.sort(key=lambda e: e[0])
        for i, (_, _, e) in enumerate(self.entries):
            e.stamp = i / NOMINAL_FPS
        if not self.entries:
            raise InputError(images, "lists no images")

    @staticmethod
    def _find(bases: list[Path], rel: Path) -> Path | None:
        return next((b / rel for b in bases if (b / rel).is_file()), None)

    @staticmethod
    def _read_cameras(path: Path) -> dict[int, np.ndarray]:
        cameras = {}
        for line in _read_text(path).splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) < 5:
                raise InputError(path, f"camera line '{line.strip()}' is too short")
            cam_id, model = int(parts[0]), parts[1]
            p = _numbers(path, " ".join(parts[4:]))
            if model == "SIMPLE_PINHOLE" and p.size == 3:
                fx = fy = p[0]
                cx, cy = p[1], p[2]
            elif model == "PINHOLE" and p.size == 4:
                fx, fy, cx, cy = p
            else:
                raise InputError(path, f"camera {cam_id} is {model} with {p.size} parameters; m3 reads PINHOLE or "
                                 "SIMPLE_PINHOLE models: undistort with 'colmap image_undistorter' first")
            cameras[cam_id] = intrinsics_matrix(fx, fy, cx - 0.5, cy - 0.5)
        return cameras

    def __len__(self) -> int:
        return len(self.entries)

    def _frames(self) -> Iterator[Frame]:
        for _, cam_id, e in self.entries:
            yield Frame(read_rgb(e.color), read_depth(e.depth), self.cameras[cam_id].copy(), e.T_world_cam, e.stamp, name=e.name)
