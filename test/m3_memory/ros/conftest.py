"""Fixtures of the ROS-free node logic: m3_msgs as rosbags types, a message factory, and a tiny
memory with a known "yellow bath duck" in it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ros_scene import DUCK_WORLD

from m3_memory.foundation import load_model
from m3_memory.memory.artifact import Gaussians, Memory, ModelEntry, save_memory
from m3_memory.memory.attention import MemoryBank
from m3_memory.ros.interfaces import m3_typestore, message_factory


@pytest.fixture(scope="session")
def store():
    """rosbags typestore with Humble's messages and m3_msgs."""
    return m3_typestore()


@pytest.fixture(scope="session")
def make(store):
    """rosbags message factory (unset fields at zero values, like rclpy constructors)."""
    return message_factory(store)


@pytest.fixture(scope="session")
def duck_memory(tmp_path_factory):
    """A *.m3 memory of a flat table (600 Gaussians) with a 3 cm blob (200 Gaussians) at DUCK_WORLD
    whose queries decode to the fixture CLIP's text embedding of "yellow bath duck" (the table's
    to "wooden table"): the query path finds the duck exactly there."""
    model = load_model("clip-fixture")
    emb = model.encode_text(["yellow bath duck", "wooden table"]).float()  # [2, d]
    W = torch.zeros(2, emb.shape[1])
    W[0], W[1] = emb[0], emb[1]  # query e_k attends to component k
    rng = np.random.default_rng(0)
    table = np.c_[rng.uniform(0.0, 0.6, 600), rng.uniform(-0.4, 0.2, 600), np.zeros(600)]
    duck = DUCK_WORLD + rng.normal(0.0, 0.01, (200, 3))
    means = torch.tensor(np.r_[table, duck], dtype=torch.float32)
    n = len(means)
    queries = torch.zeros(n, 2)
    queries[:600, 1], queries[600:, 0] = 1.0, 1.0
    gaussians = Gaussians(means=means, quats=torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
                          log_scales=torch.full((n, 3), float(np.log(0.012))), opacity_logits=torch.full((n,), 4.0),
                          sh_dc=torch.zeros(n, 3), sh_rest=torch.zeros(n, 3, 3), queries=queries)
    memory = Memory(gaussians, {"clip": MemoryBank("clip", emb, W)},
                    [ModelEntry("clip", emb.shape[1], (0, 2), 0.9, 0.05, False, model.checkpoint)])
    return save_memory(tmp_path_factory.mktemp("memory") / "duck.m3", memory)
