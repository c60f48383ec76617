"""The streaming loop: the first command is the measured state, a ramp joins it to the plan,
Ctrl-C asks for a stop instead of raising."""

from __future__ import annotations

import os
import signal

import numpy as np
from limits import assert_commands_within_limits

from m3_grasp.backends import KinematicArm
from m3_grasp.execution import stop_on_sigint, stream
from m3_grasp.plan import GraspPlan
from m3_grasp.robot import T_world_base
from m3_grasp.safety import safety_limits
from m3_grasp.state import ArmState
from m3_grasp.timing import Segment, Trajectory

START = np.array([0.1, 0.8, -0.7, 0.2, 0.0, 0.3, -0.2])  # arm joints and gripper, rad
GOAL = np.array([0.5, 1.2, -1.0, 0.4, 0.2, -0.1, -0.6])


def a_plan(kin, robot) -> GraspPlan:
    limits = safety_limits(kin, robot).scaled(0.6)
    trajectory = Trajectory([Segment(np.array([START, GOAL]), limits)])
    return GraspPlan(True, "ok", T_world_base(0.0, 0.0, 0.0, robot.base_height), start=ArmState(START[:6], START[6]),
                     trajectory=trajectory, limits=limits)


def test_a_slightly_moved_arm_is_ramped_from_where_it_is(kin, robot):
    measured = START + np.array([0.01, -0.02, 0.0, 0.015, 0.0, 0.0, 0.01])  # within start_tolerance
    arm = KinematicArm(ArmState(measured[:6], measured[6]), 0.002, "test")
    sent, send = [], arm.send
    arm.send = lambda x, xd, xdd: (sent.append(np.array(x)), send(x, xd, xdd))
    streamed = stream(arm, a_plan(kin, robot), kin, robot)
    x = np.array(sent)
    assert streamed.completed and len(x) == len(streamed.commands)
    np.testing.assert_allclose(x[0], measured, atol=1e-12)  # the first command is the measured state
    np.testing.assert_allclose(x[-1], GOAL, atol=1e-9)
    assert_commands_within_limits(kin, robot, x, 0.002)


def test_ctrl_c_asks_for_a_stop(kin, robot):
    arm = KinematicArm(ArmState(START[:6], START[6]), 0.002, "test")
    previous = signal.getsignal(signal.SIGINT)
    lines = []
    with stop_on_sigint(lines.append) as should_stop:
        sent, send_to_arm = [], arm.send

        def send(x, xd, xdd):
            send_to_arm(x, xd, xdd)
            sent.append(np.array(x))
            if len(sent) == 100:
                os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C in the middle of the motion
                os.kill(os.getpid(), signal.SIGINT)  # and again: still only a stop

        arm.send = send
        streamed = stream(arm, a_plan(kin, robot), kin, robot, should_stop)
    assert signal.getsignal(signal.SIGINT) is previous
    assert streamed.stopped == "stop requested" and len(lines) == 1 and "decelerating" in lines[0]
    x = np.array(sent)
    assert_commands_within_limits(kin, robot, x, 0.002)
    np.testing.assert_allclose(x[-1], x[-2], atol=1e-12)
    assert np.linalg.norm(x[-1] - GOAL) > 0.1  # it stopped short of the goal
