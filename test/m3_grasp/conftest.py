"""Fixtures: the arm model, the synthetic tabletop as points, and a memory made of them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from surfaces import sample_surface

from m3_grasp.kinematics import Z1Kinematics
from m3_grasp.robot import RobotConfig
from m3_memory.memory.artifact import Gaussians, Memory, ModelEntry, save_memory
from m3_memory.memory.attention import MemoryBank
from m3_memory.robot_pose import RobotPose, T_from_xyz_yaw
from m3_memory.synth.scene import ROBOT_STANCE, tabletop_objects


@dataclass
class DuckScene:
    duck_center: np.ndarray  # [3] world, the duck's bounding-box centre (m3_memory.synth.scene)
    duck: np.ndarray  # [M, 3] points on the duck
    scene: np.ndarray  # [K, 3] points on everything (table, legs, floor near it, all objects)


@pytest.fixture(scope="session")
def kin() -> Z1Kinematics:
    return Z1Kinematics.from_urdf()


@pytest.fixture(scope="session")
def robot() -> RobotConfig:
    return RobotConfig.load()


@pytest.fixture(scope="session")
def duck_scene() -> DuckScene:
    rng = np.random.default_rng(0)
    objects, background = tabletop_objects(0)
    duck = next(o for o in objects if o.name == "yellow bath duck")
    table_and_legs = sample_surface(background[:5], 0.01, rng)
    floor = sample_surface(background[5:], 0.03, rng)
    floor = floor[np.abs(floor[:, :2]).max(1) < 1.5]
    things = [sample_surface(o.parts, 0.006, rng) for o in objects]
    return DuckScene(duck.center, sample_surface(duck.parts, 0.004, rng), np.concatenate([table_and_legs, floor, *things]))


@pytest.fixture(scope="session")
def scene_memory(tmp_path_factory, duck_scene):
    """A *.m3 memory whose Gaussians sit on the synthetic scene's surfaces (queries unused), with
    the B1 recorded where the synthetic scene puts it."""
    means = torch.tensor(duck_scene.scene, dtype=torch.float32)
    n = len(means)
    gaussians = Gaussians(means=means, quats=torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
                          log_scales=torch.full((n, 3), float(np.log(0.005))), opacity_logits=torch.full((n,), 4.0),
                          sh_dc=torch.zeros(n, 3), sh_rest=torch.zeros(n, 1, 3), queries=torch.zeros(n, 2))
    bank = MemoryBank("clip", torch.eye(2, 4), torch.eye(2, 4))
    stance = RobotPose(T_from_xyz_yaw(*ROBOT_STANCE), "the synthetic scene's stance")
    memory = Memory(gaussians, {"clip": bank}, [ModelEntry("clip", 4, (0, 2), 0.8, 0.05, False, "none")],
                    robot_pose=stance)
    return save_memory(tmp_path_factory.mktemp("memory") / "table.m3", memory)
