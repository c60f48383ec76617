"""Every fallback m3 takes on its own is one warning under the ``m3`` logger that says what it
falls back to and why: the reference rasterizer for the C++ one, the fixture CLIP for real CLIP
(the demo), the CPU for CUDA (test_device.py)."""

import logging

import m3_memory.foundation as foundation
import m3_memory.render.cpu as cpu
from m3_memory.demo import choose_clip
from m3_memory.errors import InputError


def test_no_compiler_is_one_warning_with_the_reason_and_the_cost(caplog, monkeypatch, tmp_path):
    monkeypatch.setenv("M3_CACHE", str(tmp_path))  # no compositor built before
    monkeypatch.setenv("CXX", "no-such-compiler")
    cpu.library.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="m3"):
            assert cpu.library() is None
            assert cpu.library() is None  # cached: one warning per process
    finally:
        cpu.library.cache_clear()
    warnings = [r.getMessage() for r in caplog.records if r.name == "m3" and r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "the fast CPU rasterizer could not be built: no C++ compiler found (no-such-compiler" in warnings[0]
    assert cpu.FALLBACK_COST in warnings[0]


def test_demo_without_real_clip_warns_that_it_uses_the_fixture(caplog, monkeypatch):
    def load_model(name, **kwargs):
        if name == "clip":
            raise InputError("clip", "weights ViT-L-14-336 not found in the cache; connect to the hub once")
        return f"model {name}"

    monkeypatch.setattr(foundation, "load_model", load_model)
    with caplog.at_level(logging.WARNING, logger="m3"):
        assert choose_clip() == ("clip-fixture", "model clip-fixture")
    warnings = [r.getMessage() for r in caplog.records if r.name == "m3" and r.levelno == logging.WARNING]
    assert warnings == ["real CLIP unavailable (weights ViT-L-14-336 not found in the cache); the demo falls back to "
                        "the fixture CLIP trained on this scene only"]
