"""The unitree backend against a stand-in SDK with the .pyi's surface and an arm that lags its
commands: measured start, the SDK's sequence, refusal before any command, stop within limits."""

from __future__ import annotations

import sys

import fake_z1_sdk
import numpy as np
import pytest
from fake_z1_sdk import ArmInterface
from limits import assert_commands_within_limits

from m3_grasp.backends import get_backend
from m3_grasp.plan import GraspConfig, plan_grasp
from m3_grasp.robot import T_world_base
from m3_grasp.safety import SafetyError
from m3_memory.errors import SafetyRefusal
from m3_memory.synth.scene import ROBOT_STANCE

STANCE = (ROBOT_STANCE[0], ROBOT_STANCE[1], ROBOT_STANCE[3])


@pytest.fixture
def sdk(monkeypatch):
    monkeypatch.setitem(sys.modules, "unitree_arm_interface", fake_z1_sdk)
    monkeypatch.setattr(ArmInterface, "instances", [])
    monkeypatch.setattr(ArmInterface, "start_q", np.zeros(6))
    monkeypatch.setattr(ArmInterface, "start_gripper", 0.0)
    monkeypatch.setattr("m3_grasp.z1_sdk.time.sleep", lambda s: None)
    return fake_z1_sdk


def unitree(kin, robot, start_q, back_to_start=False):
    ArmInterface.start_q = np.asarray(start_q, dtype=np.float64)
    return get_backend("unitree", kin=kin, robot=robot, real_hardware=True, back_to_start=back_to_start)


def duck_plan(backend, duck_scene, kin, robot):
    base = T_world_base(*STANCE, robot.base_height)
    plan = plan_grasp(duck_scene.duck_center, duck_scene.duck, duck_scene.scene, base, backend.state(), GraspConfig(),
                      kin, robot)
    assert plan.found, plan.message
    return plan


START = np.array([0.2, 0.6, -0.5, 0.1, 0.0, 0.3])  # not the rest pose


def test_needs_the_flag(sdk, kin):
    with pytest.raises(SafetyRefusal, match="pass --real-hardware"):
        get_backend("unitree", kin=kin)


def test_follows_the_sdk_sequence_from_the_measured_state(sdk, duck_scene, kin, robot, tmp_path):
    backend = unitree(kin, robot, START, back_to_start=True)
    assert backend.state().source == "the Z1 SDK's lowstate"
    plan = duck_plan(backend, duck_scene, kin, robot)
    np.testing.assert_allclose(plan.trajectory.start[:6], START)
    report = backend.execute(plan, tmp_path)
    arm = ArmInterface.instances[-1]
    assert report.ok, report.lines()
    calls = [c for c in arm.calls if c != "sendRecv"]
    lowcmd = ["setFsmLowcmd", "setFsm(PASSIVE)", "setFsm(LOWCMD)"]
    # LOWCMD, the SDK's thread holds the arm while m3 plans, m3 streams, then holds and folds
    assert calls == [*lowcmd, "loopOn", "loopOff", "loopOn", "backToStart"]
    first_stream = arm.calls.index("sendRecv")
    assert arm.calls[first_stream - 1] == "loopOff"  # the SDK's thread never competes with the stream
    sent = np.array(arm.sent)
    assert len(sent) == report.commands
    v = np.append(kin.velocity, kin.gripper.velocity) * robot.velocity_fraction
    assert np.all(np.abs(sent[0] - np.append(START, 0.0)) <= v * fake_z1_sdk.DT)  # first command: the measured state
    np.testing.assert_allclose(sent[-1], plan.trajectory.end, atol=1e-6)
    assert_commands_within_limits(kin, robot, sent, fake_z1_sdk.DT)


def test_refuses_before_any_command(sdk, duck_scene, kin, robot, tmp_path):
    backend = unitree(kin, robot, START)
    plan = duck_plan(backend, duck_scene, kin, robot)
    arm = ArmInterface.instances[-1]
    arm.lowstate.q[1] += 0.2  # the arm was moved after planning
    with pytest.raises(SafetyError, match="z1_joint2 = .* from the plan's start"):
        backend.execute(plan, tmp_path)
    arm.lowstate.q[1] -= 0.2
    arm.lowstate.dq[2] = 0.3  # still moving
    with pytest.raises(SafetyError, match="the arm is moving"):
        backend.execute(plan, tmp_path)
    assert arm.sent == []


def test_start_outside_the_limits_is_refused(sdk, duck_scene, kin, robot):
    backend = unitree(kin, robot, [0.0, -0.3, 0.0, 0.0, 0.0, 0.0])  # joint2's lower limit is 0
    with pytest.raises(SafetyError, match="measured z1_joint2 = -0.300 rad .* outside its limits"):
        duck_plan(backend, duck_scene, kin, robot)


def test_cancel_at_random_times_decelerates_within_limits(sdk, duck_scene, kin, robot, tmp_path):
    """30 stops at random times (bench/grasp_safety.py makes 200): every command within position, speed and acceleration
    limits, the motion ends at rest on the planned path, the lagging arm stays in its limits."""
    backend = unitree(kin, robot, START)
    plan = duck_plan(backend, duck_scene, kin, robot)
    n = int(plan.duration / fake_z1_sdk.DT)
    rng = np.random.default_rng(0)
    for stop_at in rng.integers(1, n, 30):
        arm = ArmInterface.instances[-1]
        arm.lowstate.q[:] = np.append(START, ArmInterface.start_gripper)
        arm.lowstate.dq[:] = 0.0
        arm.sent.clear()
        arm.measured.clear()
        report = backend.execute(plan, tmp_path, should_stop=lambda: len(arm.sent) >= stop_at)
        sent = np.array(arm.sent)
        assert not report.ok and report.stopped == "stop requested"
        assert_commands_within_limits(kin, robot, sent, fake_z1_sdk.DT)
        np.testing.assert_allclose(sent[-1], sent[-2], atol=1e-12)  # at rest
        measured = np.array(arm.measured)
        assert np.all(measured[:, :6] >= kin.lower - 1e-6) and np.all(measured[:, :6] <= kin.upper + 1e-6)
        assert np.abs(np.diff(measured, axis=0)).max() / fake_z1_sdk.DT <= np.pi * robot.velocity_fraction


def test_a_stalled_joint_stops_the_arm(sdk, duck_scene, kin, robot, tmp_path):
    backend = unitree(kin, robot, START)
    plan = duck_plan(backend, duck_scene, kin, robot)
    arm = ArmInterface.instances[-1]
    arm.stall = np.array([False, True, False, False, False, False])  # joint2 stops following
    report = backend.execute(plan, tmp_path)
    assert not report.ok and "z1_joint2 lags the command" in report.stopped
    sent = np.array(arm.sent)
    assert_commands_within_limits(kin, robot, sent, fake_z1_sdk.DT)
    assert len(sent) < plan.duration / fake_z1_sdk.DT
