"""Feature maps computed elsewhere (SEEM, LLaMA, your own model), read from a folder.

One file per frame: ``<frame name or index>.npy`` holding [h, w, d], or
``<frame name or index>.safetensors`` with the tensor under key "features". Index file names
may be zero-padded (``000012.npy`` is frame 12).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open

from m3_memory.errors import InputError
from m3_memory.foundation.base import FoundationModel, register
from m3_memory.recording.frame import Frame

SUFFIXES = (".npy", ".safetensors")


@register("precomputed")
class PrecomputedModel(FoundationModel):
    """Dense features read per frame from ``weights`` (a folder); nothing is encoded here.

    name: what the features are (e.g. "seem"), used in messages and memories. All files must
    hold 3-D [h, w, d] maps with the same d (checked from the file headers on construction);
    NaN or infinite values are reported when a file is read.
    """

    cacheable = False

    def __init__(self, weights: str | None = None, device: str = "cpu", name: str = "precomputed"):
        if weights is None:
            raise InputError(name, "precomputed features need their folder: pass --weights FOLDER")
        self.folder = Path(weights).expanduser()
        if not self.folder.is_dir():
            raise InputError(self.folder, "feature folder does not exist" if not self.folder.exists() else "is not a folder")
        self.name = name
        self.device = torch.device(device)
        self.files: dict[str, Path] = {}  # stem -> file
        for path in sorted(self.folder.iterdir()):
            if path.suffix in SUFFIXES and path.is_file():
                if path.stem in self.files:
                    raise InputError(path, f"two feature files for frame {path.stem!r} ({self.files[path.stem].name}); keep one")
                self.files[path.stem] = path
        if not self.files:
            raise InputError(self.folder, f"no feature files ({' or '.join(SUFFIXES)}) in the folder")
        self.by_index = {int(stem): path for stem, path in self.files.items() if stem.isdigit()}
        dims = {path: _header_shape(path) for path in self.files.values()}
        for path, shape in dims.items():
            if len(shape) != 3:
                raise InputError(path, f"features must be [h, w, d], got shape {list(shape)}")
        first = next(iter(dims))
        self.feature_dim = int(dims[first][2])
        for path, shape in dims.items():
            if shape[2] != self.feature_dim:
                raise InputError(path, f"feature dim {shape[2]} differs from {self.feature_dim} in {first.name}")
        self.checkpoint = f"precomputed:{self.folder.resolve()}"

    def encode_image(self, rgb: np.ndarray) -> torch.Tensor:
        raise InputError(self.folder, "precomputed features are read per frame (by frame name or index), "
                                      "not computed from an image; use encode_frame")

    def encode_frame(self, frame: Frame | int | str, index: int | None = None) -> torch.Tensor:
        """Features of one frame: float32 [h, w, d] on the CPU.

        frame: a :class:`Frame` (looked up by its name, then by ``index``), a frame index, or
        a file stem. Raises :class:`InputError` naming the missing file.
        """
        keys: list[str | int] = []
        if isinstance(frame, Frame):
            keys = [frame.name] if frame.name else []
            keys += [index] if index is not None else []
        else:
            keys = [frame]
        for key in keys:
            path = self.by_index.get(key) if isinstance(key, int) else self.files.get(Path(str(key)).stem)
            if path is not None:
                return self._read(path)
        wanted = " or ".join(f"{k}{SUFFIXES[0]}" for k in keys) or "a file named after the frame"
        raise InputError(self.folder, f"no features for frame {' / '.join(map(str, keys)) or '?'}: expected {wanted}")

    def _read(self, path: Path) -> torch.Tensor:
        """One file's map as float32 [h, w, d]; :class:`InputError` on bad content."""
        try:
            if path.suffix == ".npy":
                features = torch.from_numpy(np.load(path, allow_pickle=False).astype(np.float32, copy=False))
            else:
                with safe_open(str(path), "pt") as f:
                    features = f.get_tensor("features").float()
        except (ValueError, OSError, SafetensorError) as err:
            raise InputError(path, f"unreadable feature file: {err}") from err
        if features.ndim != 3 or features.shape[2] != self.feature_dim:
            raise InputError(path, f"features must be [h, w, {self.feature_dim}], got {list(features.shape)}")
        if not torch.isfinite(features).all():
            raise InputError(path, f"{int((~torch.isfinite(features)).sum())} NaN or infinite feature values")
        return features


def _header_shape(path: Path) -> tuple[int, ...]:
    """Shape of the map in ``path`` read from its header only (no data loaded)."""
    try:
        if path.suffix == ".npy":
            return tuple(np.load(path, mmap_mode="r", allow_pickle=False).shape)
        with safe_open(str(path), "pt") as f:
            if "features" not in f.keys():
                raise InputError(path, f"no tensor named 'features' (has: {', '.join(f.keys()) or 'none'})")
            return tuple(f.get_slice("features").get_shape())
    except (ValueError, OSError, SafetensorError) as err:
        raise InputError(path, f"unreadable feature file: {err}") from err
