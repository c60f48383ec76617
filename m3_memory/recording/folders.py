"""Posed image folders: 3DMatch/SUN3D, APC 2016, nerfstudio ``transforms.json``, COLMAP text.

Every reader indexes its frames when it is opened (file names, intrinsics and poses: small,
and checked then, so a malformed index fails at once naming its file) and reads a frame's
images only when that frame is yielded.

Intrinsics are returned in m3's convention, pixel centres at integer coordinates (OpenCV).
nerfstudio and COLMAP put the centre of the first pixel at (0.5, 0.5), so their cx, cy are
shifted by -0.5 on reading.

None of these formats stores timestamps except m3's nerfstudio extension: stamps are made up
as frame number (or index) / :data:`NOMINAL_FPS` seconds.

Each format has its own detector (``detect_3dmatch``, ``detect_apc2016``,
``detect_nerfstudio``, ``detect_colmap``) named in the registry of
:mod:`m3_memory.recording`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from m3_memory.conventions import GL_FROM_CV, T_from_quat_wxyz, intrinsics_matrix, invert_T, rigid_error
from m3_memory.errors import InputError
from m3_memory.recording.base import Recording
from m3_memory.recording.frame import Frame
from m3_memory.recording.images import read_depth, read_rgb, read_u8, read_u16
from m3_memory.robot_pose import BASE_FRAME, RobotPose

NOMINAL_FPS = 30.0  # formats without timestamps: stamp = frame number (or index) / NOMINAL_FPS seconds


# ---------------------------------------------------------------- shared helpers


def _read_text(path: Path) -> str:
    """The text of ``path``; InputError naming it when it is missing or not text."""
    if not path.is_file():
        raise InputError(path, "file is missing")
    try:
        return path.read_text()
    except UnicodeDecodeError:
        raise InputError(path, "is not a text file") from None
    except OSError as err:
        raise InputError(path, f"cannot be read ({err.strerror})") from None


def _numbers(where: str | Path, text: str, count: int | None = None) -> np.ndarray:
    """Whitespace-separated floats of ``text`` [N]; InputError naming ``where`` when malformed
    or (with ``count``) when there are not exactly ``count`` of them."""
    try:
        values = np.array([float(x) for x in text.split()], dtype=np.float64)
    except ValueError as err:
        raise InputError(where, f"malformed number ({err})") from None
    if count is not None and values.size != count:
        raise InputError(where, f"expected {count} numbers, found {values.size}")
    return values


def _checked_pose(where: str | Path, T: np.ndarray) -> np.ndarray:
    """``T`` [4, 4] when it is a finite rigid transform; otherwise InputError naming ``where``."""
    problem = rigid_error(T)
    if problem:
        raise InputError(where, problem)
    return T


def _check_size(image: Path, rgb: np.ndarray, declared: tuple[int, int] | None, index: Path) -> None:
    """InputError naming ``image`` when its (H, W) differs from what ``index`` declares for it."""
    if declared is not None and rgb.shape[:2] != declared:
        raise InputError(image, f"image is {rgb.shape[1]}x{rgb.shape[0]} pixels but {index} gives "
                         f"{declared[1]}x{declared[0]} for its intrinsics")


@dataclass
class _Entry:
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


# ---------------------------------------------------------------- 3DMatch / SUN3D

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
        self.K = _numbers(kfile, _read_text(kfile), 9).reshape(3, 3)  # [3, 3] pixels
        seqs = sorted(p for p in root.glob("seq-*") if p.is_dir()) if has_intrinsics else [self.path]
        self.entries: list[_Entry] = []
        start = 0.0  # stamp of frame 0 of the current sequence, seconds
        for seq in seqs:
            last = -1
            for color in sorted(seq.iterdir()):
                m = _3DMATCH_COLOR.match(color.name)
                if not m:
                    continue
                number, stem = int(m.group(1)), f"frame-{m.group(1)}"
                pose = seq / f"{stem}.pose.txt"
                self.entries.append(_Entry(color, seq / f"{stem}.depth.png", self.K, None, start + number / NOMINAL_FPS,
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
                pose = _checked_pose(e.pose_file, _numbers(e.pose_file, _read_text(e.pose_file), 16).reshape(4, 4))
            depth = read_depth(e.depth)  # uint16 millimetres -> metres
            yield Frame(read_rgb(e.color), depth, e.K.copy(), pose, e.stamp, name=e.name)


# ---------------------------------------------------------------- APC 2016

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
    return {h: _numbers(f"{path} '# {h}'", " ".join(lines)) for h, lines in lines_of.items() if lines}


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
        text = _read_text(info)
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
                thresh = float(_numbers(tfile, _read_text(tfile), 1)[0])
                if not 0.0 <= thresh <= 1.0:
                    raise InputError(tfile, f"threshold {thresh} is outside [0, 1]")
                self.thresholds[obj] = thresh
        self.entries: list[_Entry] = []
        for heading, values in blocks.items():
            m = _APC_POSE.match(heading)
            if not m:
                continue
            stem, number = m.group(1), int(m.group(2))
            where = f"{info} '# {heading}'"
            if values.size != 16:
                raise InputError(where, f"has {values.size} numbers, expected 16")
            self.entries.append(_Entry(self.path / f"{stem}.color.png", self.path / f"{stem}.depth.png", self.K,
                                       _checked_pose(where, values.reshape(4, 4)), number / NOMINAL_FPS, stem))
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


# ---------------------------------------------------------------- nerfstudio

_NS_PINHOLE_MODELS = ("PINHOLE", "SIMPLE_PINHOLE", "OPENCV")  # OPENCV only with all distortion zero
_NS_DISTORTION = ("k1", "k2", "k3", "k4", "p1", "p2")


def _load_json(path: Path) -> dict:
    """The top-level object of a JSON file; InputError naming it when corrupt."""
    try:
        data = json.loads(_read_text(path))
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
        self.entries: list[_Entry] = []
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
            self.entries.append(_Entry(root / color, root / depth, K, self._pose(where, fr), stamp, Path(color).stem,
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
        return _checked_pose(where, T_world_gl @ GL_FROM_CV)

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
            _check_size(e.color, rgb, e.size, self.json_path)
            masks = {}
            if e.label is not None:
                label = read_u8(e.label)  # [H, W] object ids
                masks = {name: label == oid for oid, name in self._objects.items()}
            yield e.frame(rgb, read_depth(e.depth, self.depth_scale), masks)


# ---------------------------------------------------------------- COLMAP


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
        self.entries: list[_Entry] = []
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
            self.entries.append(_Entry(color, depth, cam.K, T_world_cam, i / NOMINAL_FPS, Path(name).stem,
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
        for n, line in enumerate(_read_text(path).splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            parts = line.split()
            if len(parts) < 5 or not parts[0].isdigit():
                raise InputError(path, f"line {n} is not 'CAMERA_ID MODEL WIDTH HEIGHT PARAMS[]': {line.strip()[:60]!r}")
            cam_id, model = int(parts[0]), parts[1]
            w, h = _numbers(f"{path} line {n}", " ".join(parts[2:4]), 2)
            p = _numbers(f"{path} line {n}", " ".join(parts[4:]))
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
        lines = _read_text(path).splitlines()
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
            values = _numbers(where, " ".join(parts[1:8]), 7)
            q = values[:4]  # wxyz
            if not np.all(np.isfinite(values)) or np.linalg.norm(q) < 1e-12:
                raise InputError(where, "pose contains NaN or infinity, or a zero quaternion")
            T_world_cam = _checked_pose(where, invert_T(T_from_quat_wxyz(q, values[4:7])))
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
        for n, line in enumerate(_read_text(path).splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            values = _numbers(f"{path} line {n}", " ".join(parts[1:7]), 6) if len(parts) >= 8 else None
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
            _check_size(e.color, rgb, e.size, self.images_txt.with_name("cameras.txt"))
            yield e.frame(rgb, read_depth(e.depth))
