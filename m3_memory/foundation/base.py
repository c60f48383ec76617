"""What every foundation model is: an image in, a dense ``[h, w, d]`` feature map out.

Also the registry (``load_model("clip")``), the shared image preprocessing, and the
model-hub helpers that look in the local cache first and fail fast when offline.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import socket
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch
import torch.nn.functional as F

from m3_memory.errors import InputError
from m3_memory.recording.frame import Frame

# Built-in models: name -> module that registers it on import (imported only when asked for,
# so listing models or reading precomputed features never imports open_clip or timm).
_BUILTIN_MODULES = {
    "clip": "m3_memory.foundation.clip",
    "siglip": "m3_memory.foundation.clip",
    "dinov2": "m3_memory.foundation.dinov2",
    "precomputed": "m3_memory.foundation.precomputed",
    "clip-fixture": "m3_memory.foundation.fixture",
}
_REGISTRY: dict[str, Callable[..., "FoundationModel"]] = {}

# Seconds to wait for a TCP connection to the model hub before calling it unreachable.
HUB_CONNECT_TIMEOUT_S = 3.0


class FoundationModel(ABC):
    """A frozen 2D model that turns one RGB view into a dense feature map.

    name: registry name ("clip", "siglip", "dinov2", "precomputed", ...).
    feature_dim: d, the channel count of every feature map (and text embedding).
    checkpoint: identity of the weights (architecture plus tag, or file name plus a content
    hash), recorded in memories and used as part of feature-cache keys.
    image_size: the short side in pixels images are resized to before encoding (0 when the
    model does not encode images itself).
    psc_threshold: the PSC similarity threshold this model's features need, when it differs
    from the authors' default for its name (the fixture CLIP's features are far more
    similar to each other than real CLIP's).
    canonical_negatives: the texts a relevancy query is scored against (LERF's "object",
    "things", "stuff", "texture"; a model that knows other words says its own).
    """

    name: str = ""
    feature_dim: int = 0
    checkpoint: str = ""
    image_size: int = 0
    cacheable: bool = True  # False when features already live on disk (nothing to cache)
    psc_threshold: float | None = None
    canonical_negatives: tuple[str, ...] = ("object", "things", "stuff", "texture")

    @abstractmethod
    def encode_image(self, rgb: np.ndarray) -> torch.Tensor:
        """Dense features of one image.

        rgb: uint8 [H, W, 3]. Returns float32 [h, w, d] on the CPU, one vector per patch,
        row-major over the patch grid (row 0 = top of the image).
        """

    def encode_frame(self, frame: Frame, index: int) -> torch.Tensor:
        """Dense features of ``frame`` (the ``index``-th of its recording): float32 [h, w, d]."""
        return self.encode_image(frame.rgb)

    @property
    def has_text(self) -> bool:
        """Whether :meth:`encode_text` works (vision-language models only)."""
        return False

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """L2-normalised text embeddings in the image features' joint space: float32 [k, d]."""
        raise InputError(self.name, "has no text encoder; text queries need a vision-language model such as clip or siglip")


def register(name: str) -> Callable[[Callable[..., FoundationModel]], Callable[..., FoundationModel]]:
    """Class decorator: make ``load_model(name, weights, device, **kwargs)`` build this class."""

    def decorate(factory: Callable[..., FoundationModel]) -> Callable[..., FoundationModel]:
        _REGISTRY[name] = factory
        return factory

    return decorate


def known_models() -> list[str]:
    """Names :func:`load_model` accepts, sorted."""
    return sorted(set(_BUILTIN_MODULES) | set(_REGISTRY))


def load_model(name: str, /, weights: str | None = None, device: str = "cpu", **kwargs) -> FoundationModel:
    """Build the foundation model registered as ``name``.

    weights: a local checkpoint file, a hub tag, or None for the model's default weights
    (for "precomputed": the folder of feature files). device: torch device string.
    kwargs: model-specific options (e.g. ``arch=`` to pick another architecture,
    ``image_size=`` for the short side in pixels). Unknown names raise :class:`InputError`.
    """
    if name not in _REGISTRY and name in _BUILTIN_MODULES:
        importlib.import_module(_BUILTIN_MODULES[name])
    if name not in _REGISTRY:
        raise InputError(name, f"unknown foundation model; known: {', '.join(known_models())}")
    return _REGISTRY[name](weights=weights, device=device, **kwargs)


def check_rgb(rgb: np.ndarray, source: str) -> None:
    """Raise :class:`InputError` naming ``source`` unless ``rgb`` is uint8 [H, W, 3]."""
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        got = f"{rgb.dtype} {list(rgb.shape)}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
        raise InputError(source, f"image must be uint8 [H, W, 3], got {got}")


def model_input(rgb: np.ndarray, short_side: int, patch: int, mean: Sequence[float], std: Sequence[float],
                device: torch.device | str) -> torch.Tensor:
    """Resize and normalise an image for a ViT with square ``patch``-pixel patches.

    The short side becomes ``short_side`` pixels and the aspect ratio is kept, then each side
    is rounded to the nearest multiple of ``patch`` (at least one patch), so the whole image is
    covered by a ``gh x gw`` patch grid. Bicubic with antialiasing, values clamped to [0, 1],
    then ``(x - mean) / std`` per channel. rgb: uint8 [H, W, 3]. Returns float32 [1, 3, gh*patch, gw*patch].
    """
    height, width = rgb.shape[:2]
    scale = short_side / min(height, width)
    out_h = max(1, round(height * scale / patch)) * patch
    out_w = max(1, round(width * scale / patch)) * patch
    x = torch.from_numpy(np.ascontiguousarray(rgb)).to(device).permute(2, 0, 1)[None].float() / 255.0  # [1, 3, H, W]
    if (out_h, out_w) != (height, width):
        x = F.interpolate(x, size=(out_h, out_w), mode="bicubic", align_corners=False, antialias=True).clamp_(0.0, 1.0)
    mean_t = torch.tensor(mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    return (x - mean_t) / std_t


def file_identity(path: str | Path) -> str:
    """``<file name>@<16 hex>``: a content hash over the size and the first and last 4 MiB.

    Cheap for multi-GB checkpoints and stable across machines and copies of the same file.
    """
    path = Path(path)
    size = path.stat().st_size
    chunk = 4 << 20
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as f:
        digest.update(f.read(chunk))
        if size > chunk:
            f.seek(max(chunk, size - chunk))
            digest.update(f.read(chunk))
    return f"{path.name}@{digest.hexdigest()[:16]}"


def hub_cached_file(repo_id: str, filenames: Sequence[str]) -> str | None:
    """The first of ``filenames`` already in the local Hugging Face cache for ``repo_id``, or None.

    Never touches the network.
    """
    from huggingface_hub import try_to_load_from_cache

    for filename in filenames:
        found = try_to_load_from_cache(repo_id, filename)
        if isinstance(found, str):
            return found
    return None


def hub_reachable() -> bool:
    """Whether the Hugging Face hub answers a TCP connection within ``HUB_CONNECT_TIMEOUT_S``.

    False at once when ``HF_HUB_OFFLINE`` is set. (huggingface_hub itself retries for ~25 s
    per file before giving up when there is no network, so we ask first.)
    """
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    endpoint = urlparse(constants.ENDPOINT)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname, port), timeout=HUB_CONNECT_TIMEOUT_S):
            return True
    except OSError:
        return False


def hub_download(repo_id: str, filenames: Sequence[str], model: str) -> str:
    """A local path to the first of ``filenames`` in hub repo ``repo_id``: from the cache, else downloaded.

    Raises :class:`InputError` naming ``model``, the repo and the cache folder when the file is
    not cached and the hub cannot be reached or has no such file.
    """
    from huggingface_hub import constants, hf_hub_download

    cached = hub_cached_file(repo_id, filenames)
    if cached is not None:
        return cached
    where = f"hub repo {repo_id} (cache {constants.HF_HUB_CACHE})"
    if not hub_reachable():
        raise InputError(model, f"weights are not in the local cache and the model hub is unreachable "
                                f"(looked in {where}); pass --weights FILE with a local checkpoint")
    errors = []
    for filename in filenames:
        try:
            return hf_hub_download(repo_id, filename)
        except (OSError, ValueError) as err:  # huggingface_hub's not-found and HTTP errors derive from these
            errors.append(f"{filename}: {str(err).splitlines()[0]}")
    raise InputError(model, f"could not download weights from {where}: {'; '.join(errors)}; pass --weights FILE")


def weights_path_or_none(weights: str | None) -> Path | None:
    """``weights`` as an existing file path, None when it is not a path (a tag or None).

    Raises :class:`InputError` when ``weights`` looks like a path (has a folder part or a
    checkpoint suffix) but no such file exists.
    """
    if weights is None:
        return None
    path = Path(os.path.expanduser(str(weights)))
    if path.is_file():
        return path
    if path.is_dir():
        raise InputError(path, "is a folder; pass the checkpoint file itself")
    looks_like_path = os.sep in str(weights) or path.suffix in {".pt", ".pth", ".bin", ".safetensors", ".npz", ".ckpt"}
    if looks_like_path:
        raise InputError(path, "weights file does not exist")
    return None
