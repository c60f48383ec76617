"""Fuzz: whatever is asked, no command a backend emits violates a limit."""

from __future__ import annotations

import numpy as np
import pytest

from m3_grasp.backends import get_backend
from m3_grasp.plan import GraspConfig, plan_grasp
from m3_grasp.robot import T_world_base
from m3_grasp.safety import SafetyError, check_command, trunk_half_extents


def assert_within_limits(kin, robot, q, g, dt, T_world_base):
    """The limits, checked independently of m3_grasp.safety."""
    assert np.all(q >= kin.lower - 1e-9) and np.all(q <= kin.upper + 1e-9)
    assert np.all(g >= kin.gripper.lower - 1e-9) and np.all(g <= kin.gripper.upper + 1e-9)
    assert np.all(np.abs(np.diff(q, axis=0)) / dt <= kin.velocity * robot.velocity_fraction + 1e-9)
    assert np.all(np.abs(np.diff(g)) / dt <= kin.gripper.velocity * robot.velocity_fraction + 1e-9)
    half = trunk_half_extents(kin.urdf)
    for qt in q:
        p = kin.chain_points(qt)[3:]
        assert np.all((p @ T_world_base[:3, :3].T + T_world_base[:3, 3])[:, 2] >= robot.floor_clearance - 1e-9)
        assert np.all(np.linalg.norm(np.maximum(np.abs(p) - half, 0), axis=1) >= robot.body_clearance - 1e-9)


def test_random_commands_are_refused_or_within_limits(kin, robot):
    """1000 random command sequences (smooth moves between random configurations, some
    beyond the limits, random speeds and stances): each is refused or within every limit."""
    rng = np.random.default_rng(0)
    accepted = refused = 0
    for _ in range(1000):
        a, b = (rng.uniform(kin.lower - 0.2, kin.upper + 0.2) for _ in range(2))
        n = int(rng.integers(2, 30))
        q = np.linspace(a, b, n)
        g = np.linspace(0.0, rng.uniform(-1.8, 0.1), n)
        dt = float(rng.uniform(0.01, 1.0))
        T = T_world_base(0.0, 0.0, rng.uniform(-np.pi, np.pi), rng.uniform(0.0, 0.6))
        try:
            check_command(kin, q, g, dt, T, robot)
        except SafetyError as err:
            assert "\n" not in str(err)
            refused += 1
            continue
        assert_within_limits(kin, robot, q, g, dt, T)
        accepted += 1
    assert accepted > 50 and refused > 50


@pytest.mark.slow
def test_random_targets_emit_only_safe_commands(kin, robot, tmp_path):
    """1000 random targets (a 5 cm ball of points) around a standing B1, floor only: every
    plan found runs through the dry-run backend and what it emits is within the limits.
    About 1.5 min."""
    rng = np.random.default_rng(1)
    config = GraspConfig(max_candidates=8, max_base_move=0.0)
    ball = rng.normal(size=(60, 3))
    ball = 0.025 * ball / np.linalg.norm(ball, axis=1, keepdims=True)
    floor = np.c_[rng.uniform(-1.5, 1.5, (4000, 2)), np.zeros(4000)]
    dry_run = get_backend("dry-run", kin=kin, robot=robot)
    found = 0
    for _ in range(1000):
        base = T_world_base(0.0, 0.0, rng.uniform(-np.pi, np.pi), robot.base_height)
        target = (base @ np.append(rng.uniform([-0.2, -0.8, -0.45], [1.1, 0.8, 0.7]), 1.0))[:3]  # mostly in front
        plan = plan_grasp(target, target + ball, floor, base, config, kin, robot)
        if plan.found:
            found += 1
            q, g, dt = dry_run.commands(plan)
            dry_run.execute(plan, tmp_path)
            assert_within_limits(kin, robot, q, g, dt, base)
    assert found > 150  # 182 of the 1000 with this seed
