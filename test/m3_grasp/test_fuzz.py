"""Fuzz: whatever is asked, no command a backend emits violates a limit."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import fake_z1_sdk
import numpy as np
import pytest
from limits import limit_violations

from m3_grasp.robot import T_world_base
from m3_grasp.safety import SafetyError, check_command

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))


def test_random_commands_are_refused_or_within_limits(kin, robot):
    """1000 random command sequences (smooth moves between random configurations, some
    beyond the limits, random speeds and stances): each is refused or within every limit."""
    rng = np.random.default_rng(0)
    accepted = refused = 0
    for _ in range(1000):
        a, b = (rng.uniform(kin.lower - 0.2, kin.upper + 0.2) for _ in range(2))
        n = int(rng.integers(3, 30))
        s = 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, n))  # [n] rest to rest
        q = a + s[:, None] * (b - a)
        g = s * rng.uniform(-1.8, 0.1)
        dt = float(rng.uniform(0.05, 2.0))
        T = T_world_base(0.0, 0.0, rng.uniform(-np.pi, np.pi), rng.uniform(0.0, 0.6))
        try:
            check_command(kin, q, g, dt, T, robot)
        except SafetyError as err:
            assert "\n" not in str(err)
            refused += 1
            continue
        assert not limit_violations(kin, robot, np.column_stack([q, g]), dt, T)
        accepted += 1
    assert accepted > 50 and refused > 50


@pytest.mark.slow
def test_random_starts_and_targets_stream_only_safe_commands(monkeypatch, tmp_path):
    """The safety bench (bench/grasp_safety.py) on 40 random measured starts x reachable
    targets and 10 random stops: zero violations, every first command at the measured state.
    About two minutes."""
    import grasp_safety

    monkeypatch.setitem(sys.modules, "unitree_arm_interface", fake_z1_sdk)
    for name in ("start_q", "start_gripper", "instances"):  # the bench places the stand-in arm: undo it afterwards
        monkeypatch.setattr(fake_z1_sdk.ArmInterface, name, getattr(fake_z1_sdk.ArmInterface, name))
    out = tmp_path / "grasp_safety.json"
    monkeypatch.setattr(sys, "argv", ["grasp_safety.py", "--trials", "40", "--stops", "10", "--seed", "1",
                                      "--out", str(out)])
    grasp_safety.main()
    result = json.loads(out.read_text())
    assert result["executed"] >= 10, result
    assert result["violations"] == result["first_command_off"] == result["stop_violations"] == 0, result
    assert result["stops"] == 10 and result["stops_not_at_rest"] == 0
