"""Models are loaded once per process; a memory's recorded checkpoint picks the model; the
canonical negatives belong to the text model."""

import ast
from pathlib import Path

import pytest

import m3_memory.query.api as api
from m3_memory.errors import InputError
from m3_memory.foundation.base import FoundationModel
from m3_memory.foundation.fixture import ARCH, CLASSES
from m3_memory.foundation.loaded import model_for_checkpoint, tokenizer


def test_fixture_from_its_checkpoint_once_with_its_own_negatives():
    model = model_for_checkpoint("clip", f"{ARCH}:m3_fixture_clip.safetensors@0")
    assert model is model_for_checkpoint("clip", f"{ARCH}:anything")  # cached per process
    assert model.canonical_negatives == CLASSES[5:] != FoundationModel.canonical_negatives
    assert tokenizer(ARCH) is tokenizer(ARCH)


def test_a_weights_file_must_be_given():
    with pytest.raises(InputError, match="built with the weights file my.pt"):
        model_for_checkpoint("clip", "ViT-B-32:my.pt@abcdef")


def test_the_query_api_does_not_know_the_fixture():
    imported = [n.module for n in ast.walk(ast.parse(Path(api.__file__).read_text())) if isinstance(n, ast.ImportFrom)]
    assert not [m for m in imported if m and "fixture" in m]
