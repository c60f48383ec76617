"""Fixtures of the grasp node's logic: a tabletop memory (the synthetic scene's table with a
duck-sized blob that decodes to "yellow bath duck") and the robot's tf. ``store`` and ``make``
(m3_msgs as rosbags types) come from test/conftest.py."""

from __future__ import annotations

import numpy as np
import pytest
from grasp_scene import DUCK, scene_lookup
from memories import duck_on_table_memory


@pytest.fixture(scope="session")
def tabletop_memory(tmp_path_factory):
    """Table top 1.0 x 0.8 m at z = 0.75 (1 cm grid) and a 10 x 6 x 6 cm ellipsoid shell at DUCK."""
    x, y = np.meshgrid(np.arange(-0.5, 0.5, 0.01), np.arange(-0.4, 0.4, 0.01))
    table = np.c_[x.ravel(), y.ravel(), np.full(x.size, 0.75)]
    u = np.random.default_rng(0).normal(size=(400, 3))
    duck = DUCK + u / np.linalg.norm(u, axis=1, keepdims=True) * [0.05, 0.03, 0.03]
    return duck_on_table_memory(tmp_path_factory.mktemp("memory") / "tabletop.m3", table, duck, 0.005)


@pytest.fixture
def lookup():
    """tf with the B1 where run.py's default stance puts it (see grasp_scene.scene_lookup)."""
    return scene_lookup()
