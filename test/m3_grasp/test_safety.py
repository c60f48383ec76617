"""The one safety check: positions, speeds and workspace; refusals are one line."""

from __future__ import annotations

import numpy as np
import pytest

from m3_grasp.robot import T_world_base
from m3_grasp.safety import SafetyError, check_command

READY = np.array([0.0, 1.5, -1.0, -0.5, 0.0, 0.0])  # Unitree's "forward" posture


def move(q_from, q_to, n=50):
    return np.linspace(q_from, q_to, n), np.zeros(n)


@pytest.fixture(scope="module")
def standing(robot):
    return T_world_base(0.0, 0.0, 0.0, robot.base_height)


def refused(kin, robot, q, g, dt, T, needle):
    with pytest.raises(SafetyError, match=needle) as err:
        check_command(kin, q, g, dt, T, robot)
    assert "\n" not in str(err.value) and str(err.value).startswith("safety: ")
    return str(err.value)


def test_accepts_a_slow_move(kin, robot, standing):
    q, g = move(np.zeros(6), READY)
    check = check_command(kin, q, g, 0.1, standing, robot)
    assert check.samples == 50 and 0 < check.peak_speed_fraction <= robot.velocity_fraction
    assert check.min_floor_clearance > 0.5 and check.min_body_clearance > robot.body_clearance


def test_refuses_a_joint_beyond_its_limit(kin, robot, standing):
    q, g = move(np.zeros(6), [0.0, 1.5, 0.2, 0.0, 0.0, 0.0])
    message = refused(kin, robot, q, g, 0.1, standing, "command 1: z1_joint3 = 0.004")
    assert "outside its limits" in message


def test_refuses_the_gripper_beyond_its_limit(kin, robot, standing):
    q, g = move(np.zeros(6), READY)
    g[-1] = -2.0
    refused(kin, robot, q, g, 0.1, standing, "z1_gripper_joint")


def test_refuses_too_fast(kin, robot, standing):
    q, g = move(np.zeros(6), READY, n=5)
    refused(kin, robot, q, g, 0.02, standing, "rad/s, limit 1.57 rad/s")


def test_refuses_the_floor(kin, robot):
    q, g = move(np.zeros(6), [0.0, np.pi / 2, 0.0, 0.0, 0.0, 0.0])  # tool straight down, 1 mm above base_link
    crouched = T_world_base(0.0, 0.0, 0.0, 0.03)
    refused(kin, robot, q, g, 0.1, crouched, "above the floor")


def test_refuses_the_trunk(kin, robot, standing):
    q, g = move(np.zeros(6), [-0.8, 1.3, -0.1, 0.2, -0.6, -1.4])  # reaching down beside the trunk's front
    refused(kin, robot, q, g, 0.1, standing, "from the B1 trunk")


def test_refuses_nan_and_bad_shapes(kin, robot, standing):
    q, g = move(np.zeros(6), READY)
    q[3, 2] = np.nan
    refused(kin, robot, q, g, 0.1, standing, "NaN")
    refused(kin, robot, np.zeros((4, 5)), np.zeros(4), 0.1, standing, "must be q")
