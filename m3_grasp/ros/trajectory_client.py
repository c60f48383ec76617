"""The ``ros2_control`` arm backend without ROS: a plan sent as ``control_msgs/FollowJointTrajectory``
goals (and ``GripperCommand`` goals for the gripper, where the robot has a gripper action), the
way MoveIt drives arms under ros2_control: Unitree's ROS 2 packages, Gazebo, any
JointTrajectoryController (JTC).

:class:`Ros2Control` refuses to start unless /joint_states puts the arm at rest near the plan's
start (:func:`m3_grasp.safety.check_start`). The execution trajectory (a ramp from the measured
state, then the plan) is cut into pieces: runs of segments that move the arm, each one
FollowJointTrajectory goal with a point every ``point_period`` s (positions, velocities and
accelerations sampled from the timed trajectory, so JTC interpolates them with quintic splines;
the segments' ends, where the motion rests, are points too),
and, given a gripper client, the segments where only the gripper moves, each one GripperCommand
goal between them (the ramp's small gripper correction, within ``start_tolerance``, is then left
to the first gripper goal). Without a gripper client the gripper joint travels inside the
JointTrajectory (Unitree's controller takes it as a joint). Before any goal is sent, the
execution trajectory passes :func:`m3_grasp.safety.check_command`, and the motion the controller
will command (:func:`spline` of the points) stays within ``DEVIATION`` of it and within the
speed and acceleration limits. (Where the trajectory rests on a joint limit, as the Z1's rest
pose does, the spline may round the corner by micro-radians: the controller's interpolation,
not a planned command.)

Stopping (a cancelled Grasp goal, Ctrl-C) never cancels the controller's goal: JTC answers a
cancel by holding its current position at once (Humble; Jazzy too unless its optional
``decelerate_on_cancel`` is set), a jump in velocity. Instead a new goal preempts the running one.
The latest feedback says where the controller was on the trajectory
(``desired.time_from_start``) at its ``header.stamp``; the new goal carries that stamp, so the
controller joins it where it has got to on receipt: it continues along the same trajectory for
``stop_latency`` seconds after the feedback, then decelerates to rest along the planned path
(:meth:`m3_grasp.timing.Trajectory.stop_from`, within STOP_MARGIN of the safety limits). The
assumption: the goal reaches the controller less than ``stop_latency`` after the feedback was
sampled (feedback age, at most one action_monitor_rate period, 50 ms by default, plus this
computation and transport). Later, the controller joins inside the deceleration, slightly behind
where it is: a small step back along the path. Units: radians, seconds; stamps in integer
nanoseconds of the controller's clock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from m3_grasp.backends import Backend, ExecutionReport, _write_commands
from m3_grasp.execution import STOP_MARGIN, ShouldStop, Streamed, execution_trajectory
from m3_grasp.kinematics import ARM_JOINTS, GRIPPER_JOINT
from m3_grasp.plan import GraspPlan
from m3_grasp.safety import CommandCheck, SafetyError, check_command, check_start, safety_limits
from m3_grasp.state import ArmState
from m3_grasp.timing import Trajectory, within_limits
from m3_memory.errors import InputError
from m3_memory.ros.convert import NS_PER_S, Make, header_msg, stamp_ns

CHECK_DT = 0.01  # s, period at which the controller's motion is checked, and of a stop's points
DEVIATION = 1e-3  # rad, farthest the controller's spline through the points may stray from the trajectory
STOP_DT = 0.002  # s, period at which a stop is computed and checked (its velocities and accelerations: differences)
POLL = 0.02  # s, how often a running goal is asked whether to stop
ERRORS = {-1: "invalid goal", -2: "invalid joints (the goal's joint names are not the controller's)",
          -3: "old header timestamp (the trajectory ended before the controller received it)",
          -4: "path tolerance violated", -5: "goal tolerance violated"}  # FollowJointTrajectory.Result.error_code


@dataclass
class JointGoal:
    """A FollowJointTrajectory goal: positions, velocities, accelerations [K, J] (rad, rad/s,
    rad/s^2) of ``joint_names`` [J] reached ``times`` [K] seconds (increasing) after the start,
    ``start_ns`` on the controller's clock (0 = when the controller receives it)."""

    joint_names: list[str]
    times: np.ndarray
    positions: np.ndarray
    velocities: np.ndarray
    accelerations: np.ndarray
    start_ns: int = 0


@dataclass
class ControllerState:
    """A FollowJointTrajectory feedback: at ``stamp_ns`` (controller clock) the controller was
    ``time`` seconds into the goal's trajectory, commanding ``desired`` [J] with the joints at
    ``actual`` [J] (rad, in the goal's joint order)."""

    stamp_ns: int
    time: float
    desired: np.ndarray
    actual: np.ndarray


@dataclass
class Outcome:
    """How a FollowJointTrajectory goal ended: status "succeeded", "aborted" or "canceled", and
    the result's error_code (0 = SUCCESSFUL) and error_string."""

    status: str
    error_code: int = 0
    error_string: str = ""


@dataclass
class GripperOutcome:
    """How a GripperCommand goal ended: status "succeeded", "aborted", "canceled", "rejected" or
    "timed out", and the result's position (rad), stalled and reached_goal."""

    status: str
    position: float = 0.0
    stalled: bool = False
    reached_goal: bool = False


class RunningGoal(Protocol):
    """A FollowJointTrajectory goal the controller accepted."""

    def feedback(self) -> ControllerState | None:
        """The latest feedback, None before the first."""

    def result(self, timeout: float) -> Outcome | None:
        """The outcome, waiting up to ``timeout`` s; None while the goal runs."""

    def cancel(self) -> None:
        """Ask the controller to cancel the goal (JTC then holds where it is)."""


class TrajectoryClient(Protocol):
    """A FollowJointTrajectory action client (``name``: the action, for messages)."""

    name: str

    def ready(self, timeout: float) -> bool:
        """Whether the action server is available, waiting up to ``timeout`` s."""

    def send(self, goal: JointGoal, timeout: float) -> RunningGoal | None:
        """Send a goal (preempting the running one); None when rejected. InputError when the
        server does not answer within ``timeout`` s."""


class GripperClient(Protocol):
    """A GripperCommand action client (``name``: the action, for messages)."""

    name: str

    def ready(self, timeout: float) -> bool:
        """Whether the action server is available, waiting up to ``timeout`` s."""

    def command(self, position: float, max_effort: float, timeout: float) -> GripperOutcome:
        """Move the gripper joint to ``position`` (rad) with at most ``max_effort``; returns when
        the goal ends or after ``timeout`` s (then "timed out")."""


def trajectory_msg(make: Make, goal: JointGoal):
    """trajectory_msgs/JointTrajectory of a goal (header.stamp = start_ns, no frame)."""
    points = []
    for t, x, v, a in zip(goal.times, goal.positions, goal.velocities, goal.accelerations):
        ns = round(float(t) * NS_PER_S)
        points.append(make("trajectory_msgs/msg/JointTrajectoryPoint", positions=x.copy(), velocities=v.copy(),
                           accelerations=a.copy(), effort=np.zeros(0),
                           time_from_start=make("builtin_interfaces/msg/Duration", sec=ns // NS_PER_S,
                                                nanosec=ns % NS_PER_S)))
    return make("trajectory_msgs/msg/JointTrajectory", header=header_msg(make, "", goal.start_ns),
                joint_names=list(goal.joint_names), points=points)


def controller_state(feedback, joint_names: list[str]) -> ControllerState:
    """A FollowJointTrajectory feedback message (rclpy or rosbags fields) -> ControllerState in
    the order of ``joint_names`` (the controller reports its own order)."""
    index = [list(feedback.joint_names).index(name) for name in joint_names]
    t = feedback.desired.time_from_start
    return ControllerState(stamp_ns(feedback.header.stamp), t.sec + t.nanosec / NS_PER_S,
                           np.asarray(feedback.desired.positions, dtype=np.float64)[index],
                           np.asarray(feedback.actual.positions, dtype=np.float64)[index])


def spline(times: np.ndarray, x: np.ndarray, v: np.ndarray, a: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Positions [T, J] at times t [T] of the quintic spline through knots at ``times`` [K] with
    positions x, velocities v and accelerations a [K, J]: how JTC interpolates points that carry
    all three. Held at the ends outside the knots."""
    t = np.clip(np.asarray(t, dtype=np.float64), times[0], times[-1])
    k = np.clip(np.searchsorted(times, t, side="right") - 1, 0, len(times) - 2)
    h, s = (times[k + 1] - times[k])[:, None], (t - times[k])[:, None]
    p0, v0, a0, p1, v1, a1 = x[k], v[k], a[k], x[k + 1], v[k + 1], a[k + 1]
    c3 = (20 * (p1 - p0) - (8 * v1 + 12 * v0) * h - (3 * a0 - a1) * h**2) / (2 * h**3)
    c4 = (30 * (p0 - p1) + (14 * v1 + 16 * v0) * h + (3 * a0 - 2 * a1) * h**2) / (2 * h**4)
    c5 = (12 * (p1 - p0) - 6 * (v1 + v0) * h + (a1 - a0) * h**2) / (2 * h**5)
    return p0 + s * (v0 + s * (a0 / 2 + s * (c3 + s * (c4 + s * c5))))


def outcome_message(name: str, outcome: Outcome) -> str:
    """One line saying why a FollowJointTrajectory goal did not succeed ("" when it did)."""
    if outcome.status == "succeeded" and outcome.error_code == 0:
        return ""
    detail = f" ({outcome.error_string})" if outcome.error_string else ""
    if outcome.error_code in ERRORS:
        return f"{name}: {ERRORS[outcome.error_code]}{detail}"
    if outcome.error_code:
        return f"{name}: error code {outcome.error_code}{detail}"
    return f"{name}: the goal was {outcome.status}{detail} (by another client or the controller's deactivation)"


def _moves_arm(segment) -> bool:
    x = segment(np.linspace(0.0, segment.duration, 20))  # [20, 7]
    return bool(np.abs(x[:, :6] - x[0, :6]).max() > 1e-9)


def _samples(piece: Trajectory, until: float | None = None) -> np.ndarray:
    """Positions [T, 7] every CHECK_DT s from the piece's start to ``until`` (excluded) or to its end (included)."""
    return piece(np.arange(0.0, until, CHECK_DT) if until is not None else piece.times(CHECK_DT))


class Ros2Control(Backend):
    """Executes plans through a FollowJointTrajectory client ``arm`` (and a GripperCommand client
    ``gripper``, or the gripper as the joint ``gripper_joint`` of the arm's trajectory), starting
    from the state ``joint_state`` gives (/joint_states; None when none was heard). See the
    module doc."""

    name = "ros2_control"

    def __init__(self, arm: TrajectoryClient, joint_state: Callable[[], ArmState | None],
                 gripper: GripperClient | None = None, gripper_joint: str = GRIPPER_JOINT,
                 gripper_max_effort: float = 10.0, point_period: float = 0.05, stop_latency: float = 0.2,
                 server_timeout: float = 5.0, result_timeout: float = 5.0, **kwargs):
        """``gripper_joint``: the gripper's name in the arm's trajectory when there is no gripper
        client; ``gripper_max_effort``: GripperCommand's max_effort (the controller's unit);
        ``point_period``: most seconds between trajectory points; ``stop_latency``: seconds the
        arm keeps to its trajectory after the feedback a stop starts from, longer than the stop
        goal takes to reach the controller (see the module doc); ``server_timeout``:
        seconds to wait for the action servers and a goal's acceptance; ``result_timeout``:
        seconds a goal may run past its planned end."""
        super().__init__(**kwargs)
        if gripper is None and not gripper_joint:
            raise InputError("ros2_control", "no way to command the gripper: give a GripperCommand action or the "
                             "gripper's joint name in the arm's trajectory")
        self.arm, self.joint_state, self.gripper = arm, joint_state, gripper
        self.joint_names = [*ARM_JOINTS] if gripper is not None else [*ARM_JOINTS, gripper_joint]
        self.gripper_max_effort, self.point_period, self.stop_latency = gripper_max_effort, point_period, stop_latency
        self.server_timeout, self.result_timeout = server_timeout, result_timeout

    def state(self) -> ArmState:
        """The latest /joint_states; InputError when none was heard."""
        state = self.joint_state()
        if state is None:
            raise InputError("ros2_control", "no /joint_states heard: is the joint_state_broadcaster running?")
        return state

    def pieces(self, full: Trajectory) -> list[Trajectory]:
        """Runs of ``full``'s segments, one goal each: every segment that moves only the gripper
        alone when a gripper client exists (a GripperCommand goal), the arm's motion between them
        (a FollowJointTrajectory goal). Segments that move nothing are left out."""
        runs: list[list] = []
        for segment in full.segments:
            if segment.duration == 0:
                continue
            if self._gripper_only([segment]) or not runs or self._gripper_only(runs[-1]):
                runs.append([segment])
            else:
                runs[-1].append(segment)
        return [Trajectory(run) for run in runs]

    def _gripper_only(self, segments: list) -> bool:
        return self.gripper is not None and not _moves_arm(segments[0])

    def goal(self, piece: Trajectory) -> JointGoal:
        """The FollowJointTrajectory goal of an arm piece: points evenly spaced at most point_period s
        apart along each segment, from the first one after the start (where the arm is); each
        segment's end (where the motion rests, its acceleration changing sign) is a point at rest,
        so that the controller's spline does not round the corner past it."""
        times, rest = [], []
        for start, segment in zip(piece.starts, piece.segments):
            n = max(1, int(np.ceil(segment.duration / self.point_period - 1e-9)))
            times.append(start + np.linspace(0.0, segment.duration, n + 1)[1:])
            rest.append(np.arange(n) == n - 1)
        t, rest = np.concatenate(times), np.concatenate(rest)  # [K] s, [K] bool
        j = len(self.joint_names)
        x, v, a = piece(t)[:, :j], piece(t, 1)[:, :j], piece(t, 2)[:, :j]
        v[rest], a[rest] = 0.0, 0.0  # exactly: JTC rejects a last point that is not at rest
        return JointGoal(self.joint_names, t, x, v, a)

    def execute(self, plan: GraspPlan, out_dir: str | Path, should_stop: ShouldStop = lambda: False,
                log=lambda line: None) -> ExecutionReport:
        """Run ``plan`` on the controllers and report; SafetyError or InputError before anything moves
        when the state, the commands or the action servers are refused."""
        if not plan.found:
            raise InputError("plan", f"nothing to execute: {plan.message}")
        if plan.trajectory is None or plan.limits is None:
            raise SafetyError("the plan has no timed trajectory")
        state = self.state()
        check_start(state, self.kin, self.robot, plan.trajectory.start)
        pieces = self.pieces(execution_trajectory(plan, state))
        check = self._check(pieces, plan.T_world_base)
        for client in (self.arm, self.gripper):
            if client is not None and not client.ready(self.server_timeout):
                raise InputError(client.name, f"action server not available within {self.server_timeout} s")
        sent, stopped, problem, count = [], "", "", 0
        for piece in pieces:
            if should_stop():
                stopped = "stop requested"
                break
            if self._gripper_only(piece.segments):
                count += 1
                problem, motion = self._grip(piece), _samples(piece)
            else:
                goal = self.goal(piece)
                count += len(goal.times)
                problem, stopped, motion = self._run(piece, goal, plan.T_world_base, should_stop, log)
            sent.append(motion)
            if problem or stopped:
                break
        commands = np.vstack(sent or [state.x[None]])  # [T, 7] every CHECK_DT s
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        path = out / "trajectory.json"
        _write_commands(path, Streamed(commands, np.zeros((0, 7)), stopped or problem, check, CHECK_DT), plan)
        if problem:
            message = problem
        elif stopped:
            message = f"stopped ({stopped}); the arm decelerated along the path and holds where it came to rest"
        else:
            message = f"executed on {self.arm.name}"
        return ExecutionReport(self.name, not (problem or stopped), message, count, len(commands) * CHECK_DT, check,
                               [str(path)], stopped=stopped)

    def _check(self, pieces: list[Trajectory], T_world_base: np.ndarray) -> CommandCheck:
        """check_command of the execution trajectory every CHECK_DT s, as every backend; then the
        motion the controllers will command, the splines through the arm goals' points (the gripper
        as planned where a gripper action moves it), must keep within DEVIATION of it and within
        the speed and acceleration limits."""
        planned, commanded = [], []
        for piece in pieces:
            t = piece.times(CHECK_DT)
            x = piece(t)  # [T, 7]
            y = x.copy()
            if not self._gripper_only(piece.segments):
                goal = self.goal(piece)
                j, rest = len(goal.joint_names), np.zeros((1, len(goal.joint_names)))
                y[:, :j] = spline(np.r_[0.0, goal.times], np.vstack([x[:1, :j], goal.positions]),
                                  np.vstack([rest, goal.velocities]), np.vstack([rest, goal.accelerations]), t)
            planned.append(x)
            commanded.append(y)
        planned, commanded = np.vstack(planned), np.vstack(commanded)
        check = check_command(self.kin, planned[:, :6], planned[:, 6], CHECK_DT, T_world_base, self.robot)
        deviation = float(np.abs(commanded - planned).max())
        if deviation > DEVIATION or not within_limits(commanded, CHECK_DT, safety_limits(self.kin, self.robot)):
            raise SafetyError(f"the controller's spline through points {self.point_period} s apart leaves the trajectory "
                              f"(by up to {deviation:.4f} rad) or its speed and acceleration limits: lower point_period")
        return check

    def _grip(self, piece: Trajectory) -> str:
        """Send the gripper to the piece's end; "" when it got there or closed on something."""
        target = float(piece.end[6])
        outcome = self.gripper.command(target, self.gripper_max_effort, piece.duration + self.result_timeout)
        closing = target > piece.start[6]  # the Z1 gripper joint: 0 closed, negative open
        if outcome.reached_goal or (closing and outcome.stalled and outcome.status in ("succeeded", "aborted")):
            return ""
        return (f"{self.gripper.name}: the gripper goal was {outcome.status} at {outcome.position:+.3f} rad "
                f"(target {target:+.3f} rad{', stalled' if outcome.stalled else ''})")

    def _rejected(self) -> str:
        return (f"{self.arm.name}: goal rejected (are its joints {', '.join(self.joint_names)}? is the controller "
                "active? see the controller's log)")

    def _run(self, piece: Trajectory, goal: JointGoal, T_world_base: np.ndarray, should_stop: ShouldStop,
             log) -> tuple[str, str, np.ndarray]:
        """Run one arm goal to its end or, on a stop request, preempt it with a deceleration.
        Returns (problem, why it stopped, the commanded motion [T, 7] every CHECK_DT s)."""
        running = self.arm.send(goal, self.server_timeout)
        if running is None:
            return self._rejected(), "", np.zeros((0, 7))
        waited = 0.0
        while (outcome := running.result(POLL)) is None:
            waited += POLL
            if should_stop():
                log("stopping the arm: stop requested")
                problem, motion = self._stop(piece, running, T_world_base)
                return problem, "stop requested", motion
            if waited > piece.duration + self.result_timeout:
                return f"{self.arm.name}: no result {waited:.1f} s after the goal was sent", "", _samples(piece)
        return outcome_message(self.arm.name, outcome), "", _samples(piece)

    def _stop(self, piece: Trajectory, running: RunningGoal, T_world_base: np.ndarray) -> tuple[str, np.ndarray]:
        """Preempt ``running`` with the rest of ``piece`` from the controller's latest feedback, cut
        ``stop_latency`` s later by the deceleration along it (see the module doc), and wait for
        the stop to end. Returns (problem, the commanded motion [T, 7] every CHECK_DT s)."""
        waited, feedback = 0.0, running.feedback()
        while feedback is None:  # just sent: JTC's first feedback comes within one action_monitor_rate period
            if (outcome := running.result(POLL)) is not None:
                return outcome_message(self.arm.name, outcome), _samples(piece)
            waited += POLL
            if waited > self.result_timeout:
                running.cancel()
                return (f"{self.arm.name}: no feedback within {self.result_timeout} s to stop along the path; "
                        "cancelled the goal (the controller holds where it is)"), np.zeros((0, 7))
            feedback = running.feedback()
        lead = np.arange(round(self.stop_latency / STOP_DT) + 1) * STOP_DT  # [n + 1] s after the feedback
        t0 = feedback.time + lead[-1]  # s on the piece, where the deceleration begins
        if t0 >= piece.duration:  # the goal comes to rest at its end before a stop could begin
            outcome = running.result(piece.duration - feedback.time + self.result_timeout)
            return (outcome_message(self.arm.name, outcome) if outcome else f"{self.arm.name}: no result"), _samples(piece)
        limits = safety_limits(self.kin, self.robot).scaled(STOP_MARGIN)
        x = np.vstack([piece(feedback.time + lead), piece.stop_from(t0, STOP_DT, limits)])  # [T, 7] every STOP_DT s
        check_command(self.kin, x[:, :6], x[:, 6], STOP_DT, T_world_base, self.robot)
        v = np.gradient(x, STOP_DT, axis=0)  # [T, 7]
        a = np.gradient(v, STOP_DT, axis=0)
        v[-1], a[-1] = 0.0, 0.0
        keep = np.r_[np.arange(0, len(x) - 1, round(CHECK_DT / STOP_DT)), len(x) - 1]  # a point every CHECK_DT s, and the last
        j = len(self.joint_names)
        stop = JointGoal(self.joint_names, keep * STOP_DT, x[keep, :j], v[keep, :j], a[keep, :j], feedback.stamp_ns)
        stopping = self.arm.send(stop, self.server_timeout)
        if stopping is None:
            return self._rejected() + " (the stop; the arm continues to the end of its trajectory)", _samples(piece)
        motion = np.vstack([_samples(piece, feedback.time), x[keep]])
        outcome = stopping.result(len(x) * STOP_DT + self.result_timeout)
        return (outcome_message(self.arm.name, outcome) if outcome else f"{self.arm.name}: no result of the stop"), motion
