"""Reading and writing the image files of posed folders, with errors that name the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from m3_memory.errors import InputError


def _open(path: Path) -> np.ndarray:
    if not path.is_file():
        raise InputError(path, "image file is missing")
    try:
        with Image.open(path) as im:
            im.load()
            return np.array(im)
    except (OSError, SyntaxError, ValueError) as err:
        raise InputError(path, f"corrupt or truncated image ({err})") from None


def read_rgb(path: str | Path) -> np.ndarray:
    """Colour image -> uint8 [H, W, 3] RGB (grey and RGBA are converted)."""
    a = _open(Path(path))
    if a.dtype != np.uint8:
        raise InputError(path, f"colour image must be 8-bit, got {a.dtype}")
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    return np.ascontiguousarray(a[:, :, :3])


def read_u16(path: str | Path) -> np.ndarray:
    """16-bit single-channel PNG (depth, masks) -> uint16 [H, W]."""
    a = _open(Path(path))
    if a.ndim != 2 or a.dtype not in (np.uint16, np.int32, np.uint8):
        raise InputError(path, f"expected a single-channel 16-bit image, got {a.dtype} {list(a.shape)}")
    return a.astype(np.uint16)


def read_u8(path: str | Path) -> np.ndarray:
    """8-bit single-channel image (label maps) -> uint8 [H, W]."""
    a = _open(Path(path))
    if a.ndim != 2 or a.dtype != np.uint8:
        raise InputError(path, f"expected a single-channel 8-bit image, got {a.dtype} {list(a.shape)}")
    return a


def write_png(path: str | Path, array: np.ndarray) -> None:
    """uint8 [H, W, 3] / [H, W] or uint16 [H, W] array -> PNG (lossless)."""
    Image.fromarray(np.ascontiguousarray(array)).save(path)


def read_depth(path: str | Path, metres_per_unit: float | None = None) -> np.ndarray:
    """Depth map -> float32 [H, W] metres: a uint16 PNG in units of ``metres_per_unit`` (None:
    millimetres), or a ``.npy`` array already in metres. 0 (and non-finite values) = invalid.

    An 8-bit PNG cannot hold millimetres (at most 255 mm): it is refused unless
    ``metres_per_unit`` is given explicitly (the recording says what one step is)."""
    path = Path(path)
    if path.suffix != ".npy":
        a = _open(path)
        if a.ndim != 2 or a.dtype not in (np.uint16, np.int32, np.uint8):
            raise InputError(path, f"expected a single-channel 16-bit depth image, got {a.dtype} {list(a.shape)}")
        if a.dtype == np.uint8 and metres_per_unit is None:
            raise InputError(path, "8-bit depth image: it cannot hold millimetres (255 mm at most); save depth as "
                             "16-bit millimetres, or give its scale (metres per step)")
        scale = np.float32(1e-3 if metres_per_unit is None else metres_per_unit)
        return (a.astype(np.float32) * scale).astype(np.float32)
    if not path.is_file():
        raise InputError(path, "depth file is missing")
    try:
        depth = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise InputError(path, f"corrupt depth array ({err})") from None
    if depth.ndim != 2:
        raise InputError(path, f"depth array must be [H, W], got {list(depth.shape)}")
    return np.nan_to_num(depth.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
