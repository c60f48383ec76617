"""Fixtures of the ROS-free node logic: a tiny memory with a known "yellow bath duck" in it.
``store`` and ``make`` (m3_msgs as rosbags types) come from test/conftest.py."""

from __future__ import annotations

import numpy as np
import pytest
from memories import duck_on_table_memory
from ros_scene import DUCK_WORLD


@pytest.fixture(scope="session")
def duck_memory(tmp_path_factory):
    """A flat table (600 Gaussians) with a 3 cm blob (200 Gaussians) at DUCK_WORLD."""
    rng = np.random.default_rng(0)
    table = np.c_[rng.uniform(0.0, 0.6, 600), rng.uniform(-0.4, 0.2, 600), np.zeros(600)]
    duck = DUCK_WORLD + rng.normal(0.0, 0.01, (200, 3))
    return duck_on_table_memory(tmp_path_factory.mktemp("memory") / "duck.m3", table, duck, 0.012)
