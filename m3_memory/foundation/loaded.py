"""Foundation models and text tokenizers loaded once per process: the query path, ``m3 eval``
and the ROS nodes ask for them per request, and building one costs seconds."""

from __future__ import annotations

from functools import lru_cache

from m3_memory.errors import InputError
from m3_memory.foundation.base import FoundationModel, load_model
from m3_memory.foundation.fixture import ARCH as FIXTURE_ARCH


@lru_cache(maxsize=4)
def loaded_model(name: str, weights: str | None, arch: str | None, device: str = "cpu") -> FoundationModel:
    """``load_model(name, weights, device, arch)``, once per argument set."""
    return load_model(name, weights=weights, device=device, **({"arch": arch} if arch else {}))


def model_for_checkpoint(name: str, checkpoint: str, weights: str | None = None, device: str = "cpu") -> FoundationModel:
    """The model a memory recorded as ``checkpoint`` (``arch:tag`` or ``arch:file@hash``): a hub
    tag loads as recorded, a weights file must be passed as ``weights`` (one-line InputError
    otherwise), the fixture CLIP is recognised by its architecture. Cached per process."""
    arch, _, ident = checkpoint.partition(":")
    if arch == FIXTURE_ARCH:
        return loaded_model("clip-fixture", weights, None, device)
    if "@" in ident and weights is None:
        raise InputError(name, f"the memory was built with the weights file {ident.split('@')[0]}; pass it with --weights FILE")
    return loaded_model(name, weights if weights is not None else (ident or None), arch or None, device)


@lru_cache(maxsize=4)
def tokenizer(arch: str):
    """open_clip's tokenizer for ``arch`` (building the BPE tables takes ~80 ms), once per process."""
    import open_clip

    return open_clip.get_tokenizer(arch)
