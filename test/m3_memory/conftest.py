"""Shared fixtures: one small synthetic scan, written once per test session."""

from __future__ import annotations

import pytest

from m3_memory.synth import SynthConfig, write_synthetic

SMALL = SynthConfig(width=160, height=120, n_frames=10)


@pytest.fixture(scope="session")
def synth(tmp_path_factory):
    """The synthetic tabletop scan as a folder, a librealsense .db3 and a ROS 2 bag."""
    return write_synthetic(tmp_path_factory.mktemp("synth"), SMALL, show_progress=False)
