"""Fixtures for every test: where the real captured data is (skipping when absent), one small
synthetic scan and a memory built from it (both once per session)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from memories import TINY_BUILD

from m3_memory.synth import SynthConfig, write_synthetic

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"

# Off a terminal long work logs a progress line every 30 s; on a loaded machine a short test build
# can pass 30 s, and the line would land ahead of the one-line errors the tests read. The tests of
# progress set their own interval.
os.environ.setdefault("M3_PROGRESS_EVERY_S", "86400")


@pytest.fixture(scope="session")
def realdata() -> Path:
    """``../shared/realdata`` beside the repository; skips the test when it is absent."""
    if not REALDATA.is_dir():
        pytest.skip(f"real data not found at {REALDATA}")
    return REALDATA

SMALL = SynthConfig(width=160, height=120, n_frames=10)


@pytest.fixture(scope="session")
def synth(tmp_path_factory):
    """The synthetic tabletop scan as a folder, a librealsense .db3 and a ROS 2 bag."""
    return write_synthetic(tmp_path_factory.mktemp("synth"), SMALL, show_progress=False)




@pytest.fixture(scope="session")
def built_memory(synth, tmp_path_factory):
    """A memory built from the small synthetic scan with the fixture CLIP (40 iterations), recording
    the B1's stance at the table as its robot pose: (path of the *.m3, BuildReport)."""
    from m3_memory.training.build import build_memory
    from m3_memory.training.config import TrainConfig

    out = tmp_path_factory.mktemp("built") / "scene.m3"
    report = build_memory(synth.folder, out, model="clip-fixture", config=TrainConfig.fast(**TINY_BUILD),
                          cache_root=tmp_path_factory.mktemp("cache"), show_progress=False)
    return out, report


@pytest.fixture
def tiny_build():
    """Training options of the small test builds (a dict for TrainConfig.fast)."""
    return dict(TINY_BUILD)


@pytest.fixture(scope="session")
def store():
    """rosbags typestore with Humble's messages and m3_msgs."""
    from m3_memory.ros.interfaces import m3_typestore

    return m3_typestore()


@pytest.fixture(scope="session")
def make(store):
    """rosbags message factory (unset fields at zero values, like rclpy constructors)."""
    from m3_memory.ros.interfaces import message_factory

    return message_factory(store)



@pytest.fixture(autouse=True)
def fresh_process_warnings():
    """Each test sees the once-per-process warnings as a new process would (``--device auto``
    falling back to the CPU), whatever ran before it."""
    from m3_memory.device import _fallback

    _fallback.update(pending=False, warned=False)
    yield
    _fallback.update(pending=False, warned=False)
