"""Fixtures of the grasp node's logic: m3_msgs as rosbags types, a message factory, and a tabletop
memory (the synthetic scene's table with a duck-sized blob that decodes to "yellow bath duck")."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from grasp_scene import DUCK, scene_lookup

from m3_memory.foundation import load_model
from m3_memory.memory.artifact import Gaussians, Memory, ModelEntry, save_memory
from m3_memory.memory.attention import MemoryBank
from m3_memory.ros.interfaces import m3_typestore, message_factory


@pytest.fixture(scope="session")
def store():
    return m3_typestore()


@pytest.fixture(scope="session")
def make(store):
    return message_factory(store)


@pytest.fixture(scope="session")
def tabletop_memory(tmp_path_factory):
    """Table top 1.0 x 0.8 m at z = 0.75 (1 cm grid) and a 10 x 6 x 6 cm ellipsoid shell at DUCK whose
    queries decode to the fixture CLIP's "yellow bath duck" (the table's to "wooden table")."""
    model = load_model("clip-fixture")
    emb = model.encode_text(["yellow bath duck", "wooden table"]).float()  # [2, d]
    x, y = np.meshgrid(np.arange(-0.5, 0.5, 0.01), np.arange(-0.4, 0.4, 0.01))
    table = np.c_[x.ravel(), y.ravel(), np.full(x.size, 0.75)]
    u = np.random.default_rng(0).normal(size=(400, 3))
    duck = DUCK + u / np.linalg.norm(u, axis=1, keepdims=True) * [0.05, 0.03, 0.03]
    means = torch.tensor(np.r_[table, duck], dtype=torch.float32)
    n, k = len(means), len(table)
    queries = torch.zeros(n, 2)
    queries[:k, 1], queries[k:, 0] = 1.0, 1.0
    gaussians = Gaussians(means=means, quats=torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
                          log_scales=torch.full((n, 3), float(np.log(0.005))), opacity_logits=torch.full((n,), 4.0),
                          sh_dc=torch.zeros(n, 3), sh_rest=torch.zeros(n, 3, 3), queries=queries)
    memory = Memory(gaussians, {"clip": MemoryBank("clip", emb, emb.clone())},
                    [ModelEntry("clip", emb.shape[1], (0, 2), 0.9, 0.05, False, model.checkpoint)])
    return save_memory(tmp_path_factory.mktemp("memory") / "tabletop.m3", memory)


@pytest.fixture
def lookup():
    """tf with the B1 where run.py's default stance puts it (see grasp_scene.scene_lookup)."""
    return scene_lookup()
