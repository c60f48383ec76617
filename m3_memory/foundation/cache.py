"""Feature maps cached on disk, per recording and model, so each view is encoded once.

Layout: ``<cache_root>/<model name>/<key>/<frame index>.safetensors`` (tensor "features",
[h, w, d], float16 by default; the index of the frame in the recording, counting every frame
it yields) plus ``meta.json`` saying what the key stands for, and ``psc/`` (the principal
scene components reduced from these maps, :mod:`m3_memory.memory.components`). The key
is a sha256 over the recording (resolved path, mtime, size), the model name, its checkpoint
identity and its image size: change any of them and the maps are computed afresh.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from m3_memory import distributed
from m3_memory.errors import InputError
from m3_memory.foundation.base import FoundationModel
from m3_memory.outputs import write_atomic
from m3_memory.recording.frame import Frame


def default_cache_root() -> Path:
    """``$M3_CACHE`` when set, else ``~/.cache/m3/features``."""
    return Path(os.environ.get("M3_CACHE") or Path.home() / ".cache" / "m3" / "features").expanduser()


def recording_identity(recording_id: str | Path) -> str:
    """The recording part of a cache key: resolved path, mtime (ns) and size when it exists on disk,
    else ``recording_id`` itself (e.g. the name of a generated scene)."""
    path = Path(recording_id).expanduser()
    if path.exists():
        stat = path.stat()
        return f"{path.resolve()}|{stat.st_mtime_ns}|{stat.st_size}"
    return str(recording_id)


def cache_key(model: FoundationModel, recording_id: str | Path) -> str:
    """sha256 hex of (recording identity, model name, checkpoint, image size)."""
    parts = [recording_identity(recording_id), model.name, model.checkpoint, str(model.image_size)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def cache_folder(model: FoundationModel, recording_id: str | Path, cache_root: str | Path | None = None) -> Path:
    """``<cache_root>/<model name>/<key>``: where the maps of ``recording_id`` by ``model`` live
    (and the principal scene components reduced from them, see :mod:`m3_memory.memory.components`)."""
    return Path(cache_root or default_cache_root()).expanduser() / model.name / cache_key(model, recording_id)


def cached_features(model: FoundationModel, frames: Iterable[Frame], recording_id: str | Path,
                    cache_root: str | Path | None = None, dtype: torch.dtype = torch.float16,
                    indices: Iterable[int] | None = None) -> Iterator[torch.Tensor]:
    """Yield each frame's feature map [h, w, d] (float32, CPU), encoding only frames not cached yet.

    frames: frames of the recording; indices: each one's index in the recording (counting every
    frame it yields), the name it is cached under (``<index>.safetensors``) and the index a model
    reading features from disk looks up; None: 0, 1, 2, ... (``frames`` is the whole recording).
    recording_id: the recording's path (or a stable name). dtype: storage precision; a freshly
    computed map is rounded through it too, so a first and a cached pass yield identical values.
    Files are written to a temporary name and renamed, so an interrupted run (or another process
    writing the same map) leaves no partial file. Models with ``cacheable = False`` (features
    already on disk) are passed through.
    """
    pairs = zip(itertools.count() if indices is None else indices, frames)
    if not model.cacheable:
        for index, frame in pairs:
            yield model.encode_frame(frame, index)
        return
    folder = cache_folder(model, recording_id, cache_root)
    folder.mkdir(parents=True, exist_ok=True)
    meta = folder / "meta.json"
    if not meta.exists():
        write_atomic(meta, lambda tmp: tmp.write_text(json.dumps({
            "recording": recording_identity(recording_id), "model": model.name, "checkpoint": model.checkpoint,
            "image_size": model.image_size, "feature_dim": model.feature_dim}, indent=1)))
    for index, frame in pairs:
        path = folder / f"{index}.safetensors"
        if path.exists():
            yield _load(path)
            continue
        features = model.encode_frame(frame, index).to(dtype).contiguous()  # [h, w, d]
        write_atomic(path, lambda tmp: save_file({"features": features}, str(tmp)))
        yield features.float()


def shared_features(model: FoundationModel, frames: Sequence[Frame], indices: Sequence[int], recording_id: str | Path,
                    cache_root: str | Path | None = None, wrap: Callable[[Iterator, int], Iterable] | None = None
                    ) -> list[torch.Tensor]:
    """The feature maps [h, w, d] of all ``frames`` (recording indices ``indices``) on every rank.

    Under ``torch.distributed`` with a cacheable model, rank r encodes frames r, r + N, r + 2N, ...
    (N ranks) into the cache, the ranks wait for each other, and each then reads all maps from the
    cache, which is meant to be shared on disk; a map a rank does not find (a cache folder that
    is not shared between nodes) it computes itself. Alone, this is :func:`cached_features`.
    wrap(iterator, total): e.g. a progress bar around the maps this rank computes.
    """
    wrap = wrap or (lambda it, total: it)
    group = distributed.current()
    if not group.active or not model.cacheable:
        return list(wrap(cached_features(model, frames, recording_id, cache_root, indices=indices), len(frames)))
    mine = range(group.rank, len(frames), group.world)
    for _ in wrap(cached_features(model, [frames[i] for i in mine], recording_id, cache_root,
                                  indices=[indices[i] for i in mine]), len(mine)):
        pass
    group.barrier("feature extraction")
    return list(cached_features(model, frames, recording_id, cache_root, indices=indices))


def _load(path: Path) -> torch.Tensor:
    """The "features" tensor of a cache file as float32 [h, w, d]."""
    try:
        return load_file(str(path))["features"].float()
    except (SafetensorError, KeyError, OSError) as err:
        raise InputError(path, f"unreadable feature cache file ({err}); delete it to recompute") from err
