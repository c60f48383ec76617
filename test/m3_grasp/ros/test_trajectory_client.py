"""The ros2_control backend without ROS: a grasp-shaped plan sent to a simulated
JointTrajectoryController (and gripper action), stopped at random times, refused when it must be."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from limits import assert_commands_within_limits

from m3_grasp.execution import execution_trajectory
from m3_grasp.kinematics import ARM_JOINTS, GRIPPER_JOINT
from m3_grasp.plan import GraspPlan
from m3_grasp.robot import T_world_base
from m3_grasp.ros.trajectory_client import (
    ERRORS,
    POLL,
    ControllerState,
    GripperOutcome,
    JointGoal,
    Outcome,
    Ros2Control,
    controller_state,
    outcome_message,
    spline,
    trajectory_msg,
)
from m3_grasp.safety import SafetyError, safety_limits
from m3_grasp.state import ArmState
from m3_grasp.timing import Limits, Segment, Trajectory
from m3_memory.errors import InputError
from m3_memory.synth.scene import ROBOT_STANCE

STANCE = (ROBOT_STANCE[0], ROBOT_STANCE[1], ROBOT_STANCE[3])  # x, y, yaw of the B1 at the synthetic table
ACTION = "/arm_controller/follow_joint_trajectory"


class FakeGoal:
    """A goal the fake controller accepted (a RunningGoal)."""

    def __init__(self, controller: FakeController, goal: JointGoal):
        self.controller, self.goal = controller, goal
        self.start: float | None = None if goal.start_ns == 0 else goal.start_ns / 1e9  # s, trajectory start
        self.knots = None  # (times [K + 1], x, v, a): the state before the goal, then its points
        self.state: ControllerState | None = None
        self.outcome: Outcome | None = None

    def feedback(self):
        return self.state

    def result(self, timeout):
        if self.outcome is None:
            self.controller.advance(timeout)
        return self.outcome

    def cancel(self):
        self.outcome = Outcome("canceled")
        self.controller.v, self.controller.a = np.zeros_like(self.controller.v), np.zeros_like(self.controller.a)


class FakeController:
    """A JointTrajectoryController in simulated time, commanding (and perfectly tracking) its desired
    state every ``tick`` s the way JTC does with points carrying positions, velocities and
    accelerations: on a goal's first update it takes its last commanded state (and time) as the
    point before the goal, bridges from it to the first point with a quintic (unless the first
    point's time has passed) and follows the quintic spline of the points from the goal's stamp
    (or from that first update when the stamp is 0); a new goal
    preempts the running one (canceled, as in Humble). Feedback every ``feedback_period`` s (JTC's
    action_monitor_rate). A goal reaches the controller ``delay`` s after it is sent; the clock
    runs only while the client waits."""

    name = ACTION

    def __init__(self, start: np.ndarray, tick: float = 0.004, feedback_period: float = 0.05, delay: float = 0.0,
                 finish: Outcome = Outcome("succeeded")):
        self.x, self.v, self.a = np.array(start, dtype=np.float64), np.zeros(len(start)), np.zeros(len(start))
        self.tick, self.feedback_period, self.delay, self.finish = tick, feedback_period, delay, finish
        self.now, self.last_feedback = 0.0, -np.inf
        self.available, self.reject = True, False
        self.goals: list[FakeGoal] = []
        self.executed = [self.x.copy()]  # desired positions [J], one per tick
        self.events: list[str] = []

    def ready(self, timeout):
        return self.available

    def send(self, goal, timeout):
        self.advance(self.delay)
        if self.reject:
            return None
        if self.goals and self.goals[-1].outcome is None:
            self.goals[-1].outcome = Outcome("canceled", 0, "Current goal cancelled due to new incoming action.")
        self.goals.append(FakeGoal(self, goal))
        self.events.append("arm")
        return self.goals[-1]

    def advance(self, seconds: float) -> None:
        for _ in range(round(seconds / self.tick)):
            self.now += self.tick
            self.update()
            self.executed.append(self.x.copy())

    def update(self) -> None:
        g = self.goals[-1] if self.goals else None
        if g is None or g.outcome is not None:
            return  # holding
        if g.knots is None:
            g.start = self.now if g.start is None else g.start
            g.knots = (g.start + g.goal.times, g.goal.positions, g.goal.velocities, g.goal.accelerations)
            if self.now < g.knots[0][0]:  # bridged from the last command; a late goal starts inside its points
                g.knots = tuple(np.vstack([before, knots]) if knots.ndim == 2 else np.r_[before, knots]
                                for before, knots in zip((self.now - self.tick, self.x, self.v, self.a), g.knots))
        times = g.knots[0]
        if self.now >= times[-1]:
            self.x, self.v, self.a = g.knots[1][-1].copy(), g.knots[2][-1].copy(), g.knots[3][-1].copy()
            g.outcome = self.finish
            return
        e = 1e-5
        p0, p1, p2 = spline(*g.knots, np.array([self.now, self.now + e, self.now + 2 * e]))
        self.x, self.v, self.a = p0, (4 * p1 - 3 * p0 - p2) / (2 * e), (p0 - 2 * p1 + p2) / e**2
        if self.now - self.last_feedback >= self.feedback_period - 1e-9:
            self.last_feedback = self.now
            g.state = ControllerState(round(self.now * 1e9), self.now - g.start, self.x.copy(), self.x.copy())


class FakeGripper:
    """A GripperCommand server that gets there, or stalls 0.1 rad short on the object (``stall``:
    "never", "closing" or "always"), recording each goal."""

    name = "/gripper_controller/gripper_cmd"

    def __init__(self, events: list[str], stall: str = "never"):
        self.events, self.stall, self.goals, self.position = events, stall, [], 0.0

    def ready(self, timeout):
        return True

    def command(self, position, max_effort, timeout):
        self.goals.append((position, max_effort))
        self.events.append("gripper")
        closing, self.position = position > self.position, position
        if self.stall == "always" or (self.stall == "closing" and closing):
            return GripperOutcome("aborted", position - 0.1, True, False)
        return GripperOutcome("succeeded", position, False, True)


PRE, GRASP, LIFT = [0.3, 1.2, -1.3, 0.1, 0.0, 0.2], [0.3, 1.5, -1.3, -0.2, 0.0, 0.2], [0.3, 1.3, -1.4, 0.1, 0.0, 0.2]  # rad
OPEN, CLOSED = -0.9, -0.3  # gripper joint, rad


@pytest.fixture(scope="module")
def grasp_plan(kin, robot):
    """A plan shaped like plan_grasp's (m3_grasp.plan): from the rest pose to a pre-grasp pose, open
    the gripper, approach, close, lift, over the synthetic table and timed at 30 % of the limits.
    Made here rather than planned, so that these tests exercise the backend alone."""
    safe = safety_limits(kin, robot)
    limits = Limits(safe.velocity / robot.velocity_fraction * 0.3, safe.acceleration * 0.3)

    def path(a, b, g_a, g_b, n=2):  # [n, 7] from (a, g_a) to (b, g_b)
        return np.linspace(np.append(a, g_a), np.append(b, g_b), n)

    rest = np.zeros(6)
    trajectory = Trajectory([Segment(path(rest, PRE, 0.0, 0.0, 4), limits), Segment(path(PRE, PRE, 0.0, OPEN), limits),
                             Segment(path(PRE, GRASP, OPEN, OPEN, 5), limits), Segment(path(GRASP, GRASP, OPEN, CLOSED), limits),
                             Segment(path(GRASP, LIFT, CLOSED, CLOSED, 5), limits)])
    return GraspPlan(True, "made for the test", T_world_base(*STANCE, robot.base_height), start=ArmState.rest(),
                     trajectory=trajectory, limits=limits)


def assert_executed_within_limits(kin, robot, executed: np.ndarray, dt: float, T_world_base=None) -> None:
    """What the controller commanded, [T, J] every dt s: within the limits, except that its spline
    may round a rest on a joint limit (the rest pose's) by micro-radians."""
    j = executed.shape[1]
    lower, upper = np.append(kin.lower, kin.gripper.lower)[:j], np.append(kin.upper, kin.gripper.upper)[:j]
    assert np.all(executed >= lower - 1e-5) and np.all(executed <= upper + 1e-5)
    x = np.clip(executed, lower, upper)
    assert_commands_within_limits(kin, robot, x if j == 7 else np.c_[x, np.zeros(len(x))], dt, T_world_base)


def measured(controller: FakeController) -> ArmState:
    x = controller.x
    return ArmState(x[:6], x[6] if len(x) == 7 else 0.0, controller.v[:6], "/joint_states")


def backend(controller, kin, robot, **options) -> Ros2Control:
    return Ros2Control(controller, lambda: measured(controller), kin=kin, robot=robot, **options)


def test_points_start_at_the_measured_state_within_limits(grasp_plan, kin, robot, tmp_path):
    start = ArmState(grasp_plan.trajectory.start[:6] + [0.03, 0.03, -0.03, 0.03, -0.03, 0.03], 0.0, source="/joint_states")
    controller = FakeController(start.x)
    arm = Ros2Control(controller, lambda: start, kin=kin, robot=robot)
    report = arm.execute(grasp_plan, tmp_path)
    assert report.ok, report.lines()
    assert len(controller.goals) == 1 and controller.goals[0].outcome.status == "succeeded"
    goal = controller.goals[0].goal
    assert goal.joint_names == [*ARM_JOINTS, GRIPPER_JOINT] and goal.start_ns == 0
    gaps = np.diff(np.r_[0.0, goal.times])  # [K] s, at most a point period, evenly along each segment
    assert np.all(gaps <= 0.05 + 1e-9) and np.all(gaps > 0.02)
    speed = np.abs(np.diff(np.vstack([start.x, goal.positions]), axis=0)) / gaps[:, None]  # the first from where the arm is
    assert np.all(speed <= grasp_plan.limits.velocity + 1e-6)
    assert np.all(np.abs(goal.velocities) <= grasp_plan.limits.velocity + 1e-6)
    assert np.all(np.abs(goal.accelerations) <= grasp_plan.limits.acceleration + 1e-6)
    assert np.all(goal.velocities[-1] == 0) and np.all(goal.accelerations[-1] == 0)
    np.testing.assert_allclose(goal.positions[-1], grasp_plan.trajectory.end, atol=1e-9)
    assert_executed_within_limits(kin, robot, np.array(controller.executed), controller.tick, grasp_plan.T_world_base)
    saved = json.loads((tmp_path / "trajectory.json").read_text())
    assert saved["joints"][-1] == GRIPPER_JOINT and saved["stopped"] == ""
    np.testing.assert_allclose(saved["q"][0], start.q, atol=1e-6)
    np.testing.assert_allclose(saved["q"][-1], grasp_plan.trajectory.end[:6], atol=1e-6)


def test_refusals_before_anything_is_sent(grasp_plan, kin, robot, tmp_path):
    controller = FakeController(grasp_plan.trajectory.start)
    far = ArmState(grasp_plan.trajectory.start[:6] + np.r_[0.0, 0.2, 0, 0, 0, 0], 0.0, source="/joint_states")
    with pytest.raises(SafetyError, match=r"z1_joint2 = \+0.200 rad \(/joint_states\) is 0.200 rad from the plan's start"):
        Ros2Control(controller, lambda: far, kin=kin, robot=robot).execute(grasp_plan, tmp_path)
    with pytest.raises(InputError, match="no /joint_states heard"):
        Ros2Control(controller, lambda: None, kin=kin, robot=robot).execute(grasp_plan, tmp_path)
    controller.available = False
    with pytest.raises(InputError, match=f"{ACTION}: action server not available within 5.0 s"):
        backend(controller, kin, robot).execute(grasp_plan, tmp_path)
    with pytest.raises(InputError, match="no way to command the gripper"):
        Ros2Control(controller, lambda: None, gripper_joint="", kin=kin, robot=robot)
    assert not controller.goals and not (tmp_path / "trajectory.json").exists()


def test_stop_at_random_times_decelerates_along_the_path(grasp_plan, kin, robot, tmp_path):
    rng = np.random.default_rng(0)
    start = grasp_plan.trajectory.start + [0, 0.01, -0.01, 0, 0, 0, 0]
    full = execution_trajectory(grasp_plan, ArmState(start[:6], start[6]))
    on_path = full(np.linspace(0.0, full.duration, 5000))  # [5000, 7]
    for _ in range(20):
        stop_at = rng.uniform(0.0, full.duration)
        controller = FakeController(start, delay=rng.uniform(0.0, 0.08))  # the goal's transport and computation, < stop_latency
        report = backend(controller, kin, robot).execute(grasp_plan, tmp_path, should_stop=lambda: controller.now >= stop_at)
        assert not report.ok and report.stopped == "stop requested", report.lines()
        assert "decelerated along the path" in report.message
        executed = np.array(controller.executed)  # [T, 7] what the controller commanded, every tick
        assert_executed_within_limits(kin, robot, executed, controller.tick, grasp_plan.T_world_base)
        assert np.all(controller.v == 0) and np.abs(executed[-1] - executed[-10]).max() == 0  # at rest, holding
        first, *preempting = controller.goals
        assert len(preempting) <= 1 and first.goal.start_ns == 0
        if preempting:  # stopped while moving: a new goal preempted the first, never a cancel
            stop = preempting[0]
            assert first.outcome.status == "canceled" and stop.outcome.status == "succeeded"
            stamp = stop.goal.start_ns / 1e9  # the latest feedback's when the request was seen (polled every POLL s)
            assert stop_at - controller.feedback_period - POLL <= stamp <= stop_at + POLL
            np.testing.assert_allclose(stop.goal.positions[0], executed[round(stamp / controller.tick)], atol=1e-3)
            gaps = np.linalg.norm(stop.goal.positions[:, None] - on_path[None], axis=2).min(1)
            assert gaps.max() < 2e-3  # along the planned path


def test_controller_errors_become_messages(grasp_plan, kin, robot, tmp_path):
    controller = FakeController(grasp_plan.trajectory.start, finish=Outcome("aborted", -4, "z1_joint2 off by 0.2 rad"))
    report = backend(controller, kin, robot).execute(grasp_plan, tmp_path)
    assert not report.ok and report.message == f"{ACTION}: path tolerance violated (z1_joint2 off by 0.2 rad)"
    for code, text in ERRORS.items():
        assert outcome_message("arm", Outcome("aborted", code)) == f"arm: {text}"
    assert outcome_message("arm", Outcome("succeeded")) == ""
    assert "the goal was canceled" in outcome_message("arm", Outcome("canceled"))
    controller = FakeController(grasp_plan.trajectory.start)
    controller.reject = True
    report = backend(controller, kin, robot).execute(grasp_plan, tmp_path)
    assert not report.ok and report.message.startswith(f"{ACTION}: goal rejected (are its joints z1_joint1")


@pytest.mark.parametrize("stall", ["never", "closing"])
def test_gripper_goals_between_arm_goals(grasp_plan, kin, robot, tmp_path, stall):
    controller = FakeController(grasp_plan.trajectory.start[:6])
    gripper = FakeGripper(controller.events, stall)
    arm = Ros2Control(controller, lambda: ArmState(controller.x, 0.0, source="/joint_states"), gripper=gripper,
                      gripper_max_effort=7.0, kin=kin, robot=robot)
    report = arm.execute(grasp_plan, tmp_path)
    assert report.ok, report.lines()  # a stall while closing is the grasp
    assert controller.events == ["arm", "gripper", "arm", "gripper", "arm"]
    assert all(g.goal.joint_names == list(ARM_JOINTS) for g in controller.goals)
    np.testing.assert_allclose(controller.goals[0].goal.positions[-1], PRE, atol=1e-9)
    np.testing.assert_allclose(controller.goals[1].goal.positions[-1], GRASP, atol=1e-9)
    assert gripper.goals == [(pytest.approx(OPEN), 7.0), (pytest.approx(CLOSED), 7.0)]
    assert_executed_within_limits(kin, robot, np.array(controller.executed), controller.tick)


def test_a_stalled_opening_fails(grasp_plan, kin, robot, tmp_path):
    controller = FakeController(grasp_plan.trajectory.start[:6])
    gripper = FakeGripper(controller.events, stall="always")
    arm = Ros2Control(controller, lambda: ArmState(controller.x, 0.0, source="/joint_states"), gripper=gripper,
                      kin=kin, robot=robot)
    report = arm.execute(grasp_plan, tmp_path)
    assert not report.ok and report.message.startswith(f"{gripper.name}: the gripper goal was aborted")
    assert controller.events == ["arm", "gripper"]


def test_spline_meets_its_knots():
    rng = np.random.default_rng(1)
    times = np.array([0.0, 1.0, 1.5])
    x, v, a = rng.normal(size=(3, 3, 2))  # [K, J] each
    for k in (0, 1):  # each segment is a quintic with the knots' positions, velocities and accelerations at its ends
        s = np.linspace(0.0, times[k + 1] - times[k], 8)
        p = spline(times, x, v, a, times[k] + s)  # [8, J]
        for j in range(2):
            quintic = np.polynomial.Polynomial.fit(s, p[:, j], 5, window=[s[0], s[-1]], domain=[s[0], s[-1]])
            for end, knot in ((s[0], k), (s[-1], k + 1)):
                values = quintic(end), quintic.deriv(1)(end), quintic.deriv(2)(end)
                np.testing.assert_allclose(values, [x[knot, j], v[knot, j], a[knot, j]], atol=1e-8)


def test_messages(make):
    goal = JointGoal(["a", "b"], np.array([0.05, 1.5]), np.ones((2, 2)), np.zeros((2, 2)), np.zeros((2, 2)), 3_250_000_000)
    msg = trajectory_msg(make, goal)
    assert msg.joint_names == ["a", "b"] and (msg.header.stamp.sec, msg.header.stamp.nanosec) == (3, 250_000_000)
    assert (msg.points[1].time_from_start.sec, msg.points[1].time_from_start.nanosec) == (1, 500_000_000)
    np.testing.assert_array_equal(msg.points[0].velocities, [0, 0])
    point = lambda q, t: make("trajectory_msgs/msg/JointTrajectoryPoint", positions=np.array(q),  # noqa: E731
                              time_from_start=make("builtin_interfaces/msg/Duration", sec=t[0], nanosec=t[1]))
    feedback = SimpleNamespace(header=make("std_msgs/msg/Header", stamp=make("builtin_interfaces/msg/Time", sec=2, nanosec=5)),
                               joint_names=["b", "a"], desired=point([2.0, 1.0], (0, 400_000_000)),
                               actual=point([2.1, 1.1], (0, 0)))
    state = controller_state(feedback, ["a", "b"])
    assert state.stamp_ns == 2_000_000_005 and state.time == pytest.approx(0.4)
    np.testing.assert_array_equal(state.desired, [1.0, 2.0])
    np.testing.assert_array_equal(state.actual, [1.1, 2.1])
