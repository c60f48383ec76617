"""The Grasp action without ROS: goal -> locate -> plan -> execute -> result.

The grasp node loads a memory (:meth:`GraspHandler.load`; again when its memory, model or weights
parameter changes: :meth:`GraspHandler.update`): its Gaussians are the scene the arm must not touch,
and text goals are found in it as ``m3 grasp`` finds them, rendered from the memory's source views
(:func:`m3_memory.query.api.find_in_memory`), or, for a memory without source views, among its
Gaussians (:func:`m3_memory.query.api.query_gaussians`). A pose goal names the object's centre; the
memory's points within ``object_radius`` of it are the object. The robot's base_link pose comes from
tf, the arm's start state from the backend (the Z1 SDK's lowstate, the simulated arm's last state)
or, for dry-run, from /joint_states when the node has heard it (else the rest pose, said so);
planning is :func:`m3_grasp.plan.plan_grasp` in the world frame, and a backend from
:func:`m3_grasp.backends.get_backend` carries the plan out (dry-run by default), writing into a
fresh folder under ``out_dir``.
Planning happens in the tf frame the memory records (REP-105 ``map`` for new memories) unless the
world_frame parameter names another; a pose goal is looked up at its stamp, base_link at the latest.
Cancelling is honoured between stages and, while the arm moves, decelerates it to rest along its
path. Every failure becomes a result with ``success = False`` and a one-line message.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from m3_grasp.state import ArmState
from m3_memory.errors import InputError, M3Error
from m3_memory.recording.tf import TfLookupError
from m3_memory.ros.build_handler import Feedback, ShouldStop, StageFeedback
from m3_memory.ros.convert import (
    Lookup,
    Make,
    StampedPose,
    joint_trajectory_msg,
    pose_stamped_msg,
    stamped_pose_of,
    vector3_msg,
)
from m3_memory.ros.params import param
from m3_memory.ros.query_handler import RELOAD, load_for_queries

NODE_BACKENDS = ("dry-run", "sim", "unitree", "ros2_control")


@dataclass
class GraspParams:
    """Parameters of the grasp node (``m3_grasp``): the Grasp action server."""

    memory: str = param("", "path of the *.m3 memory: the scene the arm avoids, and where text goals are found")
    model: str = param("clip", "foundation model whose text encoder finds text goals (one the memory was built with)")
    weights: str = param("", "model weights file or hub tag; '' = the model's default")
    min_score: float = param(-1.0, "lowest mean score of a found object; < 0 = the method's default")
    world_frame: str = param("", "tf frame the memory's coordinates are in (planning happens there); '' = the one the "
                                 "memory records")
    base_frame: str = param("base_link", "the B1 body frame, looked up in tf")
    backend: str = param("dry-run", "dry-run (record the commands), sim (kinematic simulation), unitree (the real Z1 "
                                    "through its SDK), ros2_control (FollowJointTrajectory: any arm under ros2_control)")
    real_hardware: bool = param(False, "allow the unitree and ros2_control backends to move an arm (Gazebo's too)",
                                read_only=True)
    speed_scale: float = param(0.3, "planned speeds and accelerations as a fraction of the limits (at most robot.yaml's "
                                    "velocity_fraction)")
    back_to_start: bool = param(False, "unitree: after each grasp, fold the arm back with the SDK's backToStart")
    trajectory_action: str = param("/arm_controller/follow_joint_trajectory", "ros2_control: the arm's "
                                   "FollowJointTrajectory action", read_only=True)
    gripper_action: str = param("", "ros2_control: the GripperCommand action; '' = the gripper is gripper_joint in the "
                                    "arm's trajectory", read_only=True)
    gripper_joint: str = param("z1_gripper_joint", "ros2_control: the gripper's joint name in the arm's trajectory")
    gripper_max_effort: float = param(10.0, "ros2_control: GripperCommand max_effort, in the controller's unit")
    trajectory_point_period: float = param(0.05, "ros2_control: most seconds between trajectory points")
    stop_latency: float = param(0.2, "ros2_control: seconds the arm keeps to its trajectory after the feedback a stop "
                                     "starts from; must exceed the feedback's age plus the transport time")
    action_timeout: float = param(5.0, "ros2_control: seconds to wait for the action servers and a goal's acceptance")
    joint_states_max_age: float = param(1.0, "dry-run plans from the latest /joint_states if it is at most this old, seconds")
    object_radius: float = param(0.05, "pose goals: memory points within this distance of the target are the object, metres")
    out_dir: str = param("m3_grasps", "each goal writes plan.json and the backend's report into a new folder here")
    tf_timeout: float = param(0.5, "seconds to wait for a tf lookup")
    urdf: str = param("", "robot description (B1 + Z1 URDF); '' = urdf/b1_z1.urdf found beside m3_grasp", read_only=True)
    robot_config: str = param("", "stance and safety margins (robot.yaml); '' = config/robot.yaml found beside m3_grasp",
                              read_only=True)

    def check(self) -> None:
        """InputError for a value no goal could use (the speed scale is checked against robot.yaml per goal)."""
        if self.backend not in NODE_BACKENDS:
            raise InputError("backend", f"unknown backend {self.backend!r} (choose {', '.join(NODE_BACKENDS)})")
        for name in ("speed_scale", "object_radius", "trajectory_point_period", "stop_latency", "action_timeout",
                     "joint_states_max_age"):
            if not getattr(self, name) > 0:
                raise InputError(name, f"must be > 0, got {getattr(self, name)}")
        if self.tf_timeout < 0:
            raise InputError("tf_timeout", f"must be >= 0, got {self.tf_timeout}")


def arm_state_from_joint_state(names, position, velocity) -> ArmState:
    """A sensor_msgs/JointState's fields (names, positions rad, velocities rad/s; velocity may
    be empty) -> ArmState. InputError when a Z1 arm joint is missing; the gripper reads 0 (closed)
    when absent."""
    from m3_grasp.kinematics import ARM_JOINTS, GRIPPER_JOINT

    index = {name: i for i, name in enumerate(names)}
    missing = [j for j in ARM_JOINTS if j not in index]
    if missing or len(position) != len(names) or (len(velocity) and len(velocity) != len(names)):
        raise InputError("/joint_states", f"needs positions of {', '.join(ARM_JOINTS)}"
                         + (f"; missing {', '.join(missing)}" if missing else "; name and position lengths differ"))
    q = [position[index[j]] for j in ARM_JOINTS]
    qd = [velocity[index[j]] for j in ARM_JOINTS] if len(velocity) else np.zeros(6)
    gripper = position[index[GRIPPER_JOINT]] if GRIPPER_JOINT in index else 0.0
    return ArmState(q, gripper, qd, "/joint_states")


@dataclass
class GraspGoal:
    """m3_msgs/action/Grasp goal, field by field; target None = not given."""

    text: str = ""
    target: StampedPose | None = None  # the object's centre in target.frame_id (position only)
    backend: str = ""

    @classmethod
    def from_msg(cls, msg) -> GraspGoal:
        """Read a Grasp goal message (rclpy or rosbags); InputError for a malformed target pose."""
        return cls(text=msg.text, target=stamped_pose_of(msg.target, "target"), backend=msg.backend)


@dataclass
class GraspResult:
    """m3_msgs/action/Grasp result, field by field."""

    success: bool
    message: str
    grasp_pose: StampedPose | None = None  # T_world_ee of the grasp
    width: float = 0.0
    opening: float = 0.0
    trajectory: tuple[list[str], np.ndarray, np.ndarray] | None = None  # joint names, positions [T, J] rad, times [T] s
    base_move: np.ndarray = field(default_factory=lambda: np.zeros(3))  # dx, dy (m), dyaw (rad) in the world frame
    report_dir: str = ""

    def fields(self, make: Make) -> dict:
        """Every field of the result message, built with ``make``."""
        pose = self.grasp_pose
        names, q, times = self.trajectory or ([], np.zeros((0, 0)), np.zeros(0))
        stamp = pose.stamp if pose else 0
        return {"success": bool(self.success), "message": self.message,
                "grasp_pose": pose_stamped_msg(make, pose.T if pose else None, pose.frame_id if pose else "", stamp),
                "width": float(self.width), "opening": float(self.opening),
                "trajectory": joint_trajectory_msg(make, names, q, times, "", stamp),
                "base_move": vector3_msg(make, self.base_move), "report_dir": self.report_dir}


class GraspHandler:
    """Carries out Grasp goals with one memory, tf given as a :data:`Lookup`."""

    def __init__(self, params: GraspParams, lookup: Lookup, joint_states: Callable[[], ArmState | None] = lambda: None,
                 controllers: tuple | None = None):
        """``joint_states`` gives the arm's state from /joint_states (None when none was heard);
        ``controllers`` = (FollowJointTrajectory client, GripperCommand client or None) for the
        ros2_control backend (m3_grasp.ros.trajectory_client), None where there is no ROS."""
        self.params, self.lookup, self.joint_states, self.controllers = params, lookup, joint_states, controllers
        self.memory = self.text_model = self.robot = self.kin = None
        self.sim_state: ArmState | None = None  # the simulated arm's state between goals
        self.unitree = None  # the unitree backend, once created
        self.scene = np.zeros((0, 3))  # [K, 3] world, metres
        self.model = params.model  # the memory's name for the model answering text goals
        self.load_error = "the memory has not been loaded"
        self.lock = threading.Lock()  # parameters and memory change together

    def load(self) -> str:
        """Load the arm's kinematics and the memory (scene points, text encoder); returns a one-line
        status. A failure is kept and reported by every goal (the node keeps running)."""
        from m3_grasp.kinematics import Z1Kinematics
        from m3_grasp.robot import RobotConfig

        p = self.params
        try:
            self.robot = RobotConfig.load(p.robot_config or None)
            self.kin = Z1Kinematics.from_urdf(p.urdf or None, position_margin=self.robot.position_margin)
        except InputError as err:
            self.load_error = f"robot description: {err}"
            return self.load_error
        try:
            self.memory, self.model, self.text_model, self.scene = _load_memory(p)
        except M3Error as err:
            self.load_error = str(err)
            return self.load_error
        self.load_error = ""
        return self.status()

    def status(self) -> str:
        """One line: the memory in use (scene points, model, frame), or why there is none."""
        if self.memory is None:
            return self.load_error
        return (f"loaded memory {self.params.memory} ({len(self.scene)} scene points, model {self.params.model}, "
                f"frame {self.world_frame()})")

    def world_frame(self) -> str:
        """The tf frame planning happens in: the world_frame parameter, else the memory's own."""
        return self.params.world_frame or (self.memory.scene_frame if self.memory is not None else "")

    def update(self, params: GraspParams) -> str:
        """Take changed parameters (between goals: the node holds a goal's parameters for its whole run);
        a new memory, model or weights loads the memory first, and when that fails the change is
        refused (InputError) and the old memory stays. Returns a one-line status."""
        params.check()
        if self.robot is not None:
            from m3_grasp.plan import check_speed_scale

            check_speed_scale(params.speed_scale, self.robot)
        if any(getattr(params, k) != getattr(self.params, k) for k in RELOAD):
            loaded = _load_memory(params)
            with self.lock:
                self.params = params
                self.memory, self.model, self.text_model, self.scene = loaded
                self.load_error = ""
        else:
            with self.lock:
                self.params = params
        return self.status()

    def execute_msg(self, msg, feedback: Feedback, should_stop: ShouldStop, now: Callable[[], float] = time.time) -> GraspResult:
        """A Grasp goal message -> result (see :meth:`execute`)."""
        try:
            goal = GraspGoal.from_msg(msg)
        except InputError as err:
            return GraspResult(False, str(err))
        return self.execute(goal, feedback, should_stop, now)

    def execute(self, goal: GraspGoal, feedback: Feedback, should_stop: ShouldStop,
                now: Callable[[], float] = time.time) -> GraspResult:
        """Locate, plan and execute one goal. Never raises."""
        try:
            return self._execute(goal, feedback, should_stop, now)
        except TfLookupError as err:
            return GraspResult(False, f"tf: {err}")
        except M3Error as err:
            return GraspResult(False, str(err))
        except Exception as err:  # noqa: BLE001 - the action answers, the node stays up
            return GraspResult(False, f"grasp failed: {err!r}")

    def _locate(self, goal: GraspGoal, p: GraspParams, world: str) -> tuple[np.ndarray, np.ndarray, str]:
        """(target [3], object points [M, 3], what was found) in the world frame."""
        if goal.text.strip():
            if self.memory is None:
                raise InputError("text goal", self.load_error)
            from m3_memory.query.api import QueryConfig, find_in_memory, query_gaussians

            config = QueryConfig(model=self.model, min_score=p.min_score if p.min_score >= 0 else None)
            if self.memory.cameras:  # as m3 grasp finds it: rendered from the memory's source views
                result = find_in_memory(self.memory, goal.text, config, self.text_model)
            else:  # a memory without source views: its Gaussians asked directly
                result = query_gaussians(self.memory, goal.text, config, self.text_model)
            if not result.found:
                raise InputError(goal.text, result.message)
            return result.point_world, result.points_world, result.message
        if goal.target is None:
            raise InputError("goal", "gives neither text nor a target pose (target.header.frame_id is empty)")
        if self.memory is None:
            raise InputError("pose goal", f"the object's points come from the memory: {self.load_error}")
        T_world_ref, _ = self.lookup(world, goal.target.frame_id, goal.target.stamp)  # where it was at its stamp
        target = (T_world_ref @ goal.target.T)[:3, 3]
        near = self.scene[np.linalg.norm(self.scene - target, axis=1) <= p.object_radius]
        return target, near, f"{len(near)} memory points within {p.object_radius} m of the target"

    def _execute(self, goal: GraspGoal, feedback: Feedback, should_stop: ShouldStop, now: Callable[[], float]) -> GraspResult:
        from m3_grasp.backends import get_backend
        from m3_grasp.kinematics import ARM_JOINTS, GRIPPER_JOINT
        from m3_grasp.plan import GraspConfig, check_speed_scale, plan_grasp

        with self.lock:
            p, world = self.params, self.world_frame()
        if self.kin is None:
            raise InputError("grasp node", self.load_error)
        backend = goal.backend or p.backend
        if backend not in NODE_BACKENDS:
            raise InputError("backend", f"unknown backend {backend!r} (choose {', '.join(NODE_BACKENDS)})")
        if backend in ("unitree", "ros2_control") and not p.real_hardware:
            raise InputError("backend", f"{backend} moves an arm; set the node's real_hardware parameter to true")
        if backend == "ros2_control" and self.controllers is None:
            raise InputError("backend", "ros2_control needs the grasp node's action clients (ROS 2)")
        check_speed_scale(p.speed_scale, self.robot)
        feedback(StageFeedback("locate", 0.0, f"finding {goal.text!r}" if goal.text.strip() else "looking up the target"))
        target, object_points, found = self._locate(goal, p, world)
        T_world_base, stamp = self.lookup(world, p.base_frame, 0)  # where the robot stands now
        feedback(StageFeedback("locate", 1.0, f"{found}; target at {np.round(target, 3).tolist()} m in {world}"))
        if should_stop():
            return GraspResult(False, "canceled before planning")

        options = {"real_hardware": True, "back_to_start": p.back_to_start} if backend == "unitree" else {}
        if backend == "sim":
            options = {"scene_points": self.scene, "object_points": object_points, "target": target, "animate": False,
                       "start": self.sim_state}
        if backend == "dry-run":
            options = {"start": self.joint_states()}
        if backend == "unitree":  # one SDK connection for the node's life
            self.unitree = self.unitree or get_backend(backend, kin=self.kin, robot=self.robot, **options)
            arm = self.unitree
        elif backend == "ros2_control":
            from m3_grasp.ros.trajectory_client import Ros2Control

            arm = Ros2Control(self.controllers[0], self.joint_states, gripper=self.controllers[1],
                              gripper_joint=p.gripper_joint, gripper_max_effort=p.gripper_max_effort,
                              point_period=p.trajectory_point_period, stop_latency=p.stop_latency,
                              server_timeout=p.action_timeout, kin=self.kin, robot=self.robot)
        else:
            arm = get_backend(backend, kin=self.kin, robot=self.robot, **options)
        start = arm.state()
        feedback(StageFeedback("plan", 0.0, f"planning the grasp from {start.source}"))
        plan = plan_grasp(target, object_points, self.scene, T_world_base, start, GraspConfig(speed_scale=p.speed_scale),
                          self.kin, self.robot)
        out_dir = Path(p.out_dir).expanduser()
        out_dir.mkdir(parents=True, exist_ok=True)
        out = Path(tempfile.mkdtemp(prefix=time.strftime("grasp-%Y%m%d-%H%M%S-", time.localtime(now())), dir=out_dir))
        (out / "plan.json").write_text(json.dumps(plan.to_dict(), indent=1))
        if not plan.found:
            move = plan.base_move if plan.base_move is not None else np.zeros(3)
            return GraspResult(False, f"no grasp: {plan.message}", base_move=np.asarray(move, dtype=np.float64),
                               report_dir=str(out.resolve()))
        feedback(StageFeedback("plan", 1.0, plan.lines()[0]))
        q = np.column_stack([plan.q_trajectory, plan.gripper])  # [T, 7]
        planned = GraspResult(False, "", StampedPose(plan.T_world_grasp, world, stamp), plan.width, plan.open_width,
                              ([*ARM_JOINTS, GRIPPER_JOINT], q, np.arange(len(q)) * plan.dt), np.zeros(3),
                              str(out.resolve()))
        if should_stop():
            planned.message = "canceled before execution (the plan is in report_dir)"
            return planned

        feedback(StageFeedback("execute", 0.0, f"{backend}: {plan.duration:.1f} s of commands"))
        report = arm.execute(plan, out, should_stop)
        if backend == "sim":
            self.sim_state = arm.state()
        feedback(StageFeedback("execute", 1.0, report.message))
        planned.success, planned.message = report.ok, f"{backend}: {report.message}"
        return planned


def _load_memory(p: GraspParams) -> tuple:
    """(memory, its model entry name, text encoder, scene points [K, 3]) of ``p.memory``; InputError saying why not."""
    from m3_grasp.run import memory_scene_points

    return load_for_queries(p.memory, p.model, p.weights, also=memory_scene_points)
