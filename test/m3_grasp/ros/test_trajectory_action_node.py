"""The ros2_control backend over ROS 2: the rclpy action clients and :class:`Ros2Control` against a
minimal in-process FollowJointTrajectory server. Run where ROS 2 and control_msgs are sourced
(colcon test); skipped elsewhere."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from m3_grasp.plan import GraspPlan
from m3_grasp.robot import T_world_base
from m3_grasp.safety import safety_limits
from m3_grasp.state import ArmState
from m3_grasp.timing import Segment, Trajectory

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("control_msgs")

from control_msgs.action import FollowJointTrajectory  # noqa: E402
from rclpy.action import ActionServer, CancelResponse  # noqa: E402
from rclpy.callback_groups import ReentrantCallbackGroup  # noqa: E402
from rclpy.duration import Duration  # noqa: E402
from rclpy.executors import MultiThreadedExecutor  # noqa: E402

ACTION = "/arm_controller/follow_joint_trajectory"


class MinimalController:
    """A FollowJointTrajectory server: accepts every goal, publishes feedback every 50 ms (desired
    = the points linearly interpolated, actual = desired), succeeds after the last point's time; a
    new goal aborts the running one."""

    def __init__(self, node):
        self.node, self.goals, self.active = node, [], None
        self.server = ActionServer(node, FollowJointTrajectory, ACTION, execute_callback=self.execute,
                                   cancel_callback=lambda handle: CancelResponse.ACCEPT,
                                   callback_group=ReentrantCallbackGroup())

    def execute(self, handle):
        trajectory = handle.request.trajectory
        self.goals.append(trajectory)
        self.active = handle
        times = np.array([p.time_from_start.sec + p.time_from_start.nanosec * 1e-9 for p in trajectory.points])
        q = np.array([p.positions for p in trajectory.points])  # [K, J]
        start = time.monotonic()
        while (t := time.monotonic() - start) < times[-1]:
            if self.active is not handle:
                handle.abort()
                return FollowJointTrajectory.Result(error_string="preempted")
            feedback = FollowJointTrajectory.Feedback()
            feedback.header.stamp = self.node.get_clock().now().to_msg()
            feedback.joint_names = list(trajectory.joint_names)
            feedback.desired.positions = [float(np.interp(t, times, q[:, j])) for j in range(q.shape[1])]
            feedback.desired.time_from_start = Duration(seconds=t).to_msg()
            feedback.actual = feedback.desired
            handle.publish_feedback(feedback)
            time.sleep(0.05)
        handle.succeed()
        return FollowJointTrajectory.Result(error_code=FollowJointTrajectory.Result.SUCCESSFUL)


@pytest.fixture
def ros():
    """(client node, minimal controller), spun by a multi-threaded executor in the background."""
    rclpy.init()
    executor = MultiThreadedExecutor()
    try:
        client, server = rclpy.create_node("m3_trajectory_client"), rclpy.create_node("fake_arm_controller")
        controller = MinimalController(server)
        for node in (client, server):
            executor.add_node(node)
        threading.Thread(target=executor.spin, daemon=True).start()
        yield client, controller
    finally:
        executor.shutdown()
        rclpy.try_shutdown()


def small_plan(kin, robot) -> GraspPlan:
    """Three joints move from the rest pose (3 s at 30 % of the limits), then the gripper opens."""
    limits = safety_limits(kin, robot).scaled(0.3)
    start = ArmState.rest()
    x1 = start.x + [0.4, 0.6, -0.6, 0, 0, 0, 0]
    x2 = x1 + np.array([0.0] * 6 + [-0.5])  # the gripper opens
    trajectory = Trajectory([Segment(np.array([start.x, x1]), limits), Segment(np.array([x1, x2]), limits)])
    return GraspPlan(True, "small", T_world_base(0.0, 0.0, 0.0, robot.base_height), start=start, trajectory=trajectory,
                     limits=limits)


def test_executes_and_stops_through_the_action(ros, kin, robot, tmp_path):
    from m3_grasp.ros.action_clients import TrajectoryActionClient
    from m3_grasp.ros.trajectory_client import Ros2Control

    node, controller = ros
    plan = small_plan(kin, robot)
    arm = Ros2Control(TrajectoryActionClient(node, ACTION), lambda: ArmState.rest(), kin=kin, robot=robot)
    report = arm.execute(plan, tmp_path)
    assert report.ok, report.lines()
    assert len(controller.goals) == 1 and controller.goals[0].joint_names[-1] == "z1_gripper_joint"
    points = controller.goals[0].points
    assert len(points[0].velocities) == 7 and list(points[-1].velocities) == [0.0] * 7

    requested = time.monotonic() + 1.0
    report = arm.execute(plan, tmp_path, should_stop=lambda: time.monotonic() > requested)
    assert report.stopped == "stop requested" and not report.ok, report.lines()
    stop = controller.goals[-1]
    assert len(controller.goals) == 3 and (stop.header.stamp.sec, stop.header.stamp.nanosec) != (0, 0)
    assert list(stop.points[-1].velocities) == [0.0] * 7


def test_no_server(ros, kin, robot, tmp_path):
    from m3_grasp.ros.action_clients import TrajectoryActionClient
    from m3_grasp.ros.trajectory_client import Ros2Control
    from m3_memory.errors import InputError

    arm = Ros2Control(TrajectoryActionClient(ros[0], "/nobody/follow_joint_trajectory"), lambda: ArmState.rest(),
                      server_timeout=0.5, kin=kin, robot=robot)
    with pytest.raises(InputError, match="/nobody/follow_joint_trajectory: action server not available within 0.5 s"):
        arm.execute(small_plan(kin, robot), tmp_path)
