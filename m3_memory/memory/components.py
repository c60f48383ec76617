"""One recording's principal scene components, the same for ``m3 features`` and ``m3 build``.

The components of a recording and a model are Algorithm 1 over the feature maps of its
training views: the frames a build uses (:func:`usable_frames`) less the held-out ones
(:func:`split_views`). :func:`scene_components` is the one place that reduces them. It keeps
the result beside the feature maps in the cache,
``<cache folder>/psc/<key>.safetensors`` (tensors "psc" ``[t, d]`` and "kept" ``[t]``), the key
a sha256 over the training frames' recording indices, the threshold and the rule; the cache
folder already names the recording and the model (:func:`m3_memory.foundation.cache.cache_folder`).
So ``m3 features`` writes what ``m3 build`` of the same recording, model and split reads.

Under ``torch.distributed`` the reduction runs on rank 0 and its kept indices are broadcast:
every rank ends with the identical bank.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from m3_memory import distributed
from m3_memory.errors import InputError
from m3_memory.foundation.base import FoundationModel
from m3_memory.foundation.cache import cache_folder
from m3_memory.memory.psc import DEFAULT_THRESHOLDS, principal_scene_components
from m3_memory.memory.trace import ComponentSources, sources_of_rows
from m3_memory.outputs import write_atomic
from m3_memory.progress import progress
from m3_memory.recording.base import Recording
from m3_memory.recording.frame import Frame
from m3_memory.recording.plausibility import PlausibilityTally

log = logging.getLogger("m3")

BANK_VERSION = 1  # part of the key: bump when what a stored bank means changes


def default_threshold(model: FoundationModel) -> float:
    """The PSC threshold for ``model``: its own when it states one, else the authors' per name."""
    return model.psc_threshold if model.psc_threshold is not None else DEFAULT_THRESHOLDS.get(model.name, 0.8)


def usable_frames(recording: Recording, source: str | Path, show_progress: bool = True) -> tuple[list[Frame], list[int]]:
    """The frames of ``recording`` a memory is built from (those without an unusable problem,
    see :mod:`m3_memory.recording.plausibility`) and each one's index in the recording. Logs one
    warning per kind of problem; a recording with no usable frame is an :class:`InputError`
    naming ``source``. Reading shows progress (:mod:`m3_memory.progress`) unless not ``show_progress``."""
    frames, indices, tally = [], [], PlausibilityTally()
    reading = progress(recording, f"read {recording.path.name}", unit="frame", show=show_progress, leave=False)
    for i, frame in enumerate(reading):
        if not any(problem.unusable for problem in tally.add(frame)):
            frames.append(frame)
            indices.append(i)
    if tally.frames and not frames:
        raise InputError(source, f"has no usable frames: {'; '.join(tally.lines())} (see m3 inspect)")
    if not frames:
        raise InputError(source, "has no usable frames (see m3 inspect)")
    for line in tally.lines():
        log.warning("%s: %s", source, line)
    return frames, indices


@dataclass
class SceneComponents:
    """One model's principal scene components of one recording's training views.

    psc: the kept feature vectors [t, d] (float32). kept: their rows [t] in the concatenation of
    the training views' flattened maps, in view order. frames: the recording index of each
    training view. map_shapes: each training view's map (h, w). threshold, rule: Algorithm 1's.
    reused: read from the cache rather than reduced now.
    """

    psc: torch.Tensor
    kept: torch.Tensor
    frames: list[int]
    map_shapes: list[tuple[int, int]]
    threshold: float
    rule: str
    reused: bool = False

    @property
    def features(self) -> int:
        """How many feature vectors were reduced."""
        return sum(h * w for h, w in self.map_shapes)

    def sources(self, views: Sequence[int]) -> ComponentSources:
        """Where each component came from, with ``views`` the memory-view index of each training view."""
        return sources_of_rows(self.kept, self.map_shapes, views, self.frames)


def bank_path(model: FoundationModel, recording_id: str | Path, frames: Sequence[int], threshold: float, rule: str,
              cache_root: str | Path | None = None) -> Path:
    """Where :func:`scene_components` keeps the bank of these training ``frames`` (recording indices)."""
    key = json.dumps({"version": BANK_VERSION, "frames": list(frames), "threshold": float(threshold), "rule": rule})
    return cache_folder(model, recording_id, cache_root) / "psc" / f"{hashlib.sha256(key.encode()).hexdigest()}.safetensors"


def scene_components(model: FoundationModel, maps: Sequence[torch.Tensor], frames: Sequence[int], threshold: float,
                     rule: str, recording_id: str | Path, cache_root: str | Path | None = None,
                     use_cache: bool = True) -> SceneComponents:
    """Reduce the training views' feature maps ``maps`` ([h, w, d] each; recording indices
    ``frames``) to principal scene components, or read them from the cache when this recording,
    model, split, threshold and rule were reduced before. A freshly reduced bank is stored
    (``use_cache=False``: neither read nor stored, e.g. a preview on other frames).

    Under ``torch.distributed`` rank 0 reads or reduces and stores; the others receive its kept
    rows, so ``maps`` must be the same on every rank (they are read from the shared cache).
    """
    if len(maps) != len(frames) or not maps:
        raise InputError(recording_id, f"{len(maps)} feature maps for {len(frames)} training views")
    shapes = [(int(m.shape[0]), int(m.shape[1])) for m in maps]
    flat = torch.cat([m.reshape(-1, m.shape[-1]) for m in maps])  # [sum h*w, d]
    path = bank_path(model, recording_id, frames, threshold, rule, cache_root)
    kept, reused = None, False
    group = distributed.current()
    if group.main:
        if use_cache and path.is_file():
            kept = _read_kept(path, flat)
            reused = kept is not None
        if kept is None:
            psc, kept = principal_scene_components(flat, threshold, rule)
            if use_cache:
                path.parent.mkdir(parents=True, exist_ok=True)
                write_atomic(path, lambda tmp: save_file({"psc": psc.contiguous(), "kept": kept}, str(tmp), metadata={
                    "model": model.name, "checkpoint": model.checkpoint, "threshold": str(threshold), "rule": rule,
                    "frames": json.dumps(list(frames))}))
    kept = group.broadcast_long(kept, "the principal scene components' broadcast")
    return SceneComponents(flat[kept], kept, list(frames), shapes, float(threshold), rule, reused)


def _read_kept(path: Path, flat: torch.Tensor) -> torch.Tensor | None:
    """The kept rows of a stored bank, or None (logged) when it cannot be read or does not fit
    ``flat`` (maps recomputed since): the bank is then reduced afresh."""
    try:
        stored = load_file(str(path))
        kept, psc = stored["kept"].long(), stored["psc"]
    except (SafetensorError, KeyError, OSError) as err:
        log.warning("%s: unreadable stored principal scene components (%s); reducing again", path, err)
        return None
    if kept.ndim != 1 or (kept.numel() and int(kept.max()) >= flat.shape[0]) or not torch.equal(flat[kept], psc):
        log.warning("%s: stored principal scene components do not match the cached feature maps; reducing again", path)
        return None
    return kept
