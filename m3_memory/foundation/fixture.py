"""The project's fixture CLIP: a tiny open_clip model trained on the synthetic tabletop.

Real CLIP weights cannot be downloaded where m3 is tested, so the project ships a tiny
open_clip-format model (``fixture_data/m3-fixture-clip.json``, weights in
``fixture_data/m3_fixture_clip.safetensors``) whose dense image features (the same
MaskCLIP value path as real CLIP) and text features share one space. It was trained by
:mod:`m3_memory.foundation.fixture_train` on views of the synthetic scene and the names
of its objects, so a text query such as "yellow bath duck" finds the duck there. It knows
nothing else; it is a test fixture, not a model.

It loads through exactly the code path of real CLIP (``open_clip.create_model(arch,
pretrained=FILE)``) and reports itself as model ``clip`` with checkpoint
``m3-fixture-clip:...``.
"""

from __future__ import annotations

from pathlib import Path

from m3_memory.errors import InputError
from m3_memory.foundation.base import register

DATA = Path(__file__).resolve().parent / "fixture_data"
ARCH = "m3-fixture-clip"
WEIGHTS = DATA / "m3_fixture_clip.safetensors"
PSC_THRESHOLD = 0.95  # at the CLIP default 0.8 its features collapse to ~6 components; 0.95 keeps ~50
CLASSES = ("yellow bath duck", "red apple", "blue mug", "green block", "purple bowl", "wooden table", "grey floor",
           "sky")


def register_fixture_arch() -> None:
    """Make the fixture architecture known to open_clip (idempotent)."""
    import open_clip

    if ARCH not in open_clip.list_models():
        open_clip.add_model_config(DATA / f"{ARCH}.json")


@register("clip-fixture")
def load_fixture_clip(weights: str | Path | None = None, device: str = "cpu", **kwargs):
    """The fixture CLIP as a :class:`~m3_memory.foundation.clip.ClipModel` (name ``clip``);
    ``load_model("clip-fixture")``. kwargs: ClipModel options such as ``image_size``."""
    from m3_memory.foundation.clip import ClipModel

    register_fixture_arch()
    if weights:
        path = Path(weights)
        if not path.is_file():
            raise InputError(path, "weights file does not exist" if not path.is_dir() else "is a folder, not a weights file")
    else:
        path = WEIGHTS
        if not path.is_file():
            raise InputError(path, "the fixture CLIP's own weights are missing from the installation; "
                             "rebuild them with python -m m3_memory.foundation.fixture_train")
    model = ClipModel(weights=str(path), device=device, arch=ARCH, **kwargs)
    model.psc_threshold = PSC_THRESHOLD
    model.canonical_negatives = tuple(CLASSES[5:])  # "object", "things", ... mean nothing to it: its background classes
    return model
