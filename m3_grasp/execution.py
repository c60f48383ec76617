"""Streaming a plan to an arm from its measured state, and stopping it within limits.

:func:`stream` is the one execution loop every streaming backend uses (the Z1 SDK, the
kinematic simulation, the dry-run recorder). It reads the arm's state, refuses to start when
the arm is outside its limits, moving, or farther than ``start_tolerance`` from the plan's
start; otherwise the first command is the measured state itself and a short ramp (timed like
the plan) joins it to the plan's start. The whole command sequence passes the safety check
before the first command is sent. While streaming, a stop request (cancel, Ctrl-C) or a
measured state that leaves the limits or lags the command by more than ``tracking_tolerance``
ends the motion with a deceleration along the planned path (:meth:`Trajectory.stop_from`),
itself checked, after which the arm holds where it came to rest. Units: radians, seconds.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from m3_grasp.kinematics import Z1Kinematics
from m3_grasp.plan import GraspPlan
from m3_grasp.robot import RobotConfig
from m3_grasp.safety import JOINTS, CommandCheck, SafetyError, check_command, check_start, first_outside, safety_limits
from m3_grasp.state import ArmState
from m3_grasp.timing import Segment, Trajectory

STOP_MARGIN = 0.95  # a stop decelerates within this fraction of the safety limits

ShouldStop = Callable[[], bool]


class ArmPort(Protocol):
    """An arm that takes one joint command per control period."""

    control_dt: float  # s

    def begin(self) -> None:
        """Called once before the first :meth:`read` of an execution."""

    def read(self) -> ArmState:
        """The measured state now."""

    def send(self, x: np.ndarray, xd: np.ndarray, xdd: np.ndarray) -> None:
        """Command positions x [7], velocities xd [7] and accelerations xdd [7] (arm + gripper)
        for one control period; returns when the next command is due."""

    def hold(self, x: np.ndarray) -> None:
        """Keep the arm at x [7] (at rest) after the last command."""


@dataclass
class Streamed:
    """What :func:`stream` sent: commands [T, 7] one per control period, the state measured
    before each [T, 7], why it stopped early ("" when the plan ran to its end) and the safety
    check of the planned command sequence."""

    commands: np.ndarray
    measured: np.ndarray
    stopped: str
    check: CommandCheck
    dt: float

    @property
    def completed(self) -> bool:
        return not self.stopped


def execution_trajectory(plan: GraspPlan, state: ArmState) -> Trajectory:
    """The plan's trajectory, preceded by a ramp from the measured state [7] to its start when they differ."""
    segments = list(plan.trajectory.segments)
    if np.abs(state.x - plan.trajectory.start).max() > 1e-9:
        segments.insert(0, Segment(np.array([state.x, plan.trajectory.start]), plan.limits))
    return Trajectory(segments)


def _tracking_problem(state: ArmState, command: np.ndarray, kin: Z1Kinematics, robot: RobotConfig) -> str:
    x = state.x
    if not np.all(np.isfinite(x)):
        return "the measured state is not finite"
    j = first_outside(x, kin)
    if j is not None:
        return f"measured {JOINTS[j]} = {x[j]:+.3f} rad left its limits"
    lag = np.abs(x[:6] - command[:6])
    j = int(np.argmax(lag))
    if lag[j] > robot.tracking_tolerance:
        return f"measured {JOINTS[j]} lags the command by {lag[j]:.3f} rad (tolerance {robot.tracking_tolerance} rad)"
    return ""


def stream(port: ArmPort, plan: GraspPlan, kin: Z1Kinematics, robot: RobotConfig,
           should_stop: ShouldStop = lambda: False, log: Callable[[str], None] = lambda line: None) -> Streamed:
    """Execute ``plan`` on ``port`` from the arm's measured state (see the module doc). Raises
    SafetyError, before any command is sent, when the state cannot start the plan or the
    commands would leave a limit."""
    if plan.trajectory is None or plan.limits is None:
        raise SafetyError("the plan has no timed trajectory")
    dt = port.control_dt
    port.begin()
    state = port.read()
    check_start(state, kin, robot, plan.trajectory.start)
    full = execution_trajectory(plan, state)
    t = full.times(dt)
    x, xd, xdd = full(t), full(t, 1), full(t, 2)  # [T, 7]
    check = check_command(kin, x[:, :6], x[:, 6], dt, plan.T_world_base, robot)
    step = safety_limits(kin, robot).velocity * dt
    if np.any(np.abs(x[0] - state.x) > step + 1e-12):
        raise SafetyError("the first command is more than one control period from the measured state")
    sent, measured, stopped, k = [], [], "", 0
    for k in range(len(t)):
        if k > 0:
            state = port.read()
            stopped = _tracking_problem(state, x[k - 1], kin, robot)
        if not stopped and should_stop():
            stopped = "stop requested"
        if stopped:
            break
        measured.append(state.x)
        port.send(x[k], xd[k], xdd[k])
        sent.append(x[k])
    if stopped and sent:
        log(f"stopping the arm: {stopped}")
        before = np.array(sent[-2:])
        limits = safety_limits(kin, robot).scaled(STOP_MARGIN)
        tail = full.stop_from(t[k - 1], dt, limits, before)
        joined = np.vstack([before, tail])  # [B + K, 7]
        check_command(kin, joined[:, :6], joined[:, 6], dt, plan.T_world_base, robot)
        v = np.diff(np.vstack([before[-1:], tail]), axis=0) / dt  # [K, 7]
        a = np.diff(np.vstack([v[:1], v]), axis=0) / dt
        for xs, vs, as_ in zip(tail, v, a):
            measured.append(port.read().x)
            port.send(xs, vs, as_)
            sent.append(xs)
    if sent:
        port.hold(sent[-1])
    return Streamed(np.array(sent).reshape(-1, 7), np.array(measured).reshape(-1, 7), stopped, check, dt)


@contextlib.contextmanager
def stop_on_sigint(log: Callable[[str], None] = print) -> Iterator[ShouldStop]:
    """While inside, Ctrl-C asks the arm to stop (a deceleration, never an abrupt end): yields
    the ``should_stop`` to pass to :func:`stream`. Outside the main thread it only yields."""
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield requested.is_set
        return

    def on_sigint(signum, frame):
        if not requested.is_set():
            log("Ctrl-C: decelerating the arm to rest (further Ctrl-C are ignored until it holds)")
        requested.set()

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield requested.is_set
    finally:
        signal.signal(signal.SIGINT, previous)
