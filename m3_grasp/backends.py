"""Arm backends behind one small interface: ``backend.state()`` is the measured arm state a
plan must start from, ``backend.execute(plan, out_dir, should_stop)`` carries it out.

- ``dry-run`` (default): records the commands it would stream (trajectory.json) from a given
  start state, or from the rest pose, which it says is assumed.
- ``sim``: kinematic simulation with pinocchio: streams the commands to a simulated arm that
  keeps its last state between plans, checks every command with the URDF's collision model
  (self, B1 trunk, scene points), counts the object points between the jaws when they close,
  carries the object from there, and draws the arm moving (sim.png, sim.gif).
- ``unitree``: the Z1 through Unitree's SDK (``unitree_arm_interface``, imported lazily): the
  SDK's low-level sequence (m3_grasp.z1_sdk); real hardware only with ``real_hardware=True``.

Every backend streams through :func:`m3_grasp.execution.stream`: from the measured state,
the exact command sequence checked by :func:`m3_grasp.safety.check_command` first (the one
place limits are enforced), and a deceleration within limits on a stop request.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from m3_grasp.collision import ArmCollision, Hand
from m3_grasp.execution import ShouldStop, Streamed, stream
from m3_grasp.kinematics import ARM_JOINTS, GRIPPER_JOINT, Z1Kinematics
from m3_grasp.plan import SCENE_RESOLUTION, GraspPlan
from m3_grasp.robot import RobotConfig
from m3_grasp.safety import CommandCheck
from m3_grasp.state import ArmState
from m3_memory.conventions import invert_T
from m3_memory.errors import InputError, SafetyRefusal

BACKENDS = ("dry-run", "sim", "unitree")


@dataclass
class ExecutionReport:
    """What a backend did: commands sent (count, seconds), files written, measurements."""

    backend: str
    ok: bool
    message: str
    commands: int
    duration_s: float
    check: CommandCheck
    files: list[str] = field(default_factory=list)
    measurements: dict[str, float] = field(default_factory=dict)
    stopped: str = ""  # why the motion was stopped before the plan's end ("" = it ran to the end)

    def lines(self) -> list[str]:
        c = self.check
        out = [f"{self.backend}: {self.message}",
               f"  {self.commands} commands over {self.duration_s:.1f} s; safety: peak speed {c.peak_speed_fraction:.0%} "
               f"of the URDF limits, peak acceleration {c.peak_acceleration:.2f} rad/s^2, >= {c.min_floor_clearance:.3f} m "
               f"above the floor, >= {c.min_body_clearance:.3f} m from the trunk"]
        out += [f"  {k}: {v:.4f}" for k, v in self.measurements.items()]
        out += [f"  wrote {f}" for f in self.files]
        return out

    def to_dict(self) -> dict:
        return {"backend": self.backend, "ok": self.ok, "message": self.message, "commands": self.commands,
                "duration_s": self.duration_s, "stopped": self.stopped, "safety": self.check.__dict__,
                "files": self.files, "measurements": self.measurements}


class Backend:
    """Executes a found GraspPlan from the arm's measured state. Subclasses give ``name``,
    ``state`` (the measured state), ``_port`` (the arm to stream to) and ``_report``."""

    name = ""

    def __init__(self, kin: Z1Kinematics | None = None, robot: RobotConfig | None = None):
        self.robot = robot or RobotConfig.load()
        self.kin = kin or Z1Kinematics.from_urdf(position_margin=self.robot.position_margin)

    def state(self) -> ArmState:
        """The arm's measured state: what a plan for this backend must start from."""
        raise NotImplementedError

    def execute(self, plan: GraspPlan, out_dir: str | Path, should_stop: ShouldStop = lambda: False,
                log=lambda line: None) -> ExecutionReport:
        """Stream ``plan`` (see :func:`m3_grasp.execution.stream`) and report; SafetyError before
        anything moves when the arm's state or the commands are refused."""
        if not plan.found:
            raise InputError("plan", f"nothing to execute: {plan.message}")
        port = self._port()
        streamed = stream(port, plan, self.kin, self.robot, should_stop, log)
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        return self._report(plan, streamed, out)

    def _port(self):
        raise NotImplementedError

    def _report(self, plan: GraspPlan, streamed: Streamed, out: Path) -> ExecutionReport:
        raise NotImplementedError


class KinematicArm:
    """A simulated arm that is exactly where it was last commanded (an :class:`ArmPort`)."""

    def __init__(self, state: ArmState, control_dt: float, source: str):
        self.x, self.xd, self.control_dt, self.source = state.x, state.qd, control_dt, source

    def begin(self):
        pass

    def read(self) -> ArmState:
        return ArmState(self.x[:6], self.x[6], self.xd[:6], self.source)

    def send(self, x, xd, xdd):
        self.x, self.xd = np.array(x, dtype=np.float64), np.array(xd, dtype=np.float64)

    def hold(self, x):
        self.x, self.xd = np.array(x, dtype=np.float64), np.zeros(7)


def _write_commands(path: Path, streamed: Streamed, plan: GraspPlan) -> None:
    x = streamed.commands
    path.write_text(json.dumps({"joints": [*ARM_JOINTS, GRIPPER_JOINT], "dt_s": streamed.dt,
                                "q": x[:, :6].round(6).tolist(), "gripper": x[:, 6].round(6).tolist(),
                                "stopped": streamed.stopped, "plan": plan.to_dict()}))


def _stopped_message(streamed: Streamed, done: str) -> str:
    return done if streamed.completed else f"stopped ({streamed.stopped}); the arm decelerated along the path and holds"


class DryRun(Backend):
    """Records the commands it would stream (trajectory.json: joint names, dt, q, gripper, plan)
    from ``start`` (default: the rest pose, assumed) and reports; nothing moves."""

    name = "dry-run"
    CONTROL_DT = 0.02  # s, the period of the recorded commands

    def __init__(self, start: ArmState | None = None, **kwargs):
        super().__init__(**kwargs)
        self.start = start or ArmState.rest()

    def state(self) -> ArmState:
        return self.start

    def _port(self):
        return KinematicArm(self.start, self.CONTROL_DT, self.start.source)

    def _report(self, plan, streamed, out):
        path = out / "trajectory.json"
        _write_commands(path, streamed, plan)
        x = streamed.commands
        return ExecutionReport(self.name, streamed.completed, _stopped_message(streamed, "recorded, nothing moved"),
                               len(x), len(x) * streamed.dt, streamed.check, [str(path)], stopped=streamed.stopped)


class Sim(Backend):
    """Kinematic simulation against scene and object points (world, metres)."""

    name = "sim"

    CONTROL_DT = 0.02  # s

    def __init__(self, scene_points: np.ndarray, object_points: np.ndarray, target: np.ndarray | None = None,
                 animate: bool = True, start: ArmState | None = None, **kwargs):
        super().__init__(**kwargs)
        start = start or ArmState.rest()
        self.arm = KinematicArm(start, self.CONTROL_DT, f"the simulated arm (started at {start.source})")
        self.scene_world = np.asarray(scene_points, dtype=np.float64).reshape(-1, 3)
        self.object_world = np.asarray(object_points, dtype=np.float64).reshape(-1, 3)
        self.target = None if target is None else np.asarray(target, dtype=np.float64)
        self.animate = animate

    def state(self) -> ArmState:
        """The simulated arm's last state (it starts where ``start`` put it)."""
        return self.arm.read()

    def _port(self):
        return self.arm

    def _report(self, plan, streamed, out):
        """Collisions at every command (contacts present at the first command are the start's:
        they count once they have come free), the object points between the jaws when they
        close, and the grip point's distance to the target (m)."""
        from m3_grasp.draw import draw_sim

        q, g, dt = streamed.commands[:, :6], streamed.commands[:, 6], streamed.dt
        T_base_world = invert_T(plan.T_world_base)
        obj_base = self.object_world @ T_base_world[:3, :3].T + T_base_world[:3, 3]
        scene_base = self.scene_world @ T_base_world[:3, :3].T + T_base_world[:3, 3]
        if len(obj_base) and len(scene_base):  # the object's own points are not obstacles
            scene_base = scene_base[cKDTree(obj_base).query(scene_base, distance_upper_bound=0.01)[0] > 0.01]
        collision = ArmCollision(self.kin.urdf, SCENE_RESOLUTION)
        collision.set_clouds(scene=scene_base)
        hand = Hand(collision)
        widest = int(np.argmin(g))  # the jaws open fully, then close on the object
        closed = widest + int(np.argmax(g[widest:] >= g[-1] - 1e-9))
        tolerated = {str(c) for c in collision.contacts(q[0], g[0])}
        colliding, contacts = 0, {}
        for qt, gt in zip(q, g):
            found = {str(c) for c in collision.contacts(qt, gt)}
            tolerated &= found  # a start contact that came free counts from here on
            new = found - tolerated
            colliding += bool(new)
            contacts.update(dict.fromkeys(new))
        T_close = self.kin.fk(q[closed])
        held = int(hand.between((obj_base - T_close[:3, 3]) @ T_close[:3, :3], float(g[widest])).sum())
        T_world_close = plan.T_world_base @ T_close
        measurements = {"colliding_commands": float(colliding), "object_points_between_jaws": float(held)}
        if self.target is not None:
            grip = T_world_close[:3, :3] @ hand.grip_point(plan.width) + T_world_close[:3, 3]
            measurements["grasp_centre_to_target_m"] = float(np.linalg.norm(grip - self.target))
        ok = colliding == 0 and held > 0 and streamed.completed
        files = draw_sim(self.kin, plan.T_world_base, q, g, self.scene_world, self.object_world, closed, out, self.animate)
        message = ("grasped without collisions" if ok else
                   f"COLLISION ({', '.join(contacts)})" if contacts else "EMPTY grasp (no object points between the jaws)")
        return ExecutionReport(self.name, ok, _stopped_message(streamed, message), len(q), len(q) * dt, streamed.check,
                               [str(f) for f in files], measurements, streamed.stopped)


class Unitree(Backend):
    """The real Z1 through Unitree's SDK, following its low-level sequence (m3_grasp.z1_sdk)."""

    name = "unitree"

    def __init__(self, real_hardware: bool = False, back_to_start: bool = False, sdk=None, **kwargs):
        super().__init__(**kwargs)
        from m3_grasp.z1_sdk import import_sdk

        self.sdk = sdk or import_sdk()
        if not real_hardware:
            raise SafetyRefusal("unitree backend", "drives the real Z1 arm; pass --real-hardware to confirm")
        self.back_to_start = back_to_start
        self._arm = None

    def _port(self):
        from m3_grasp.z1_sdk import Z1LowCmd

        if self._arm is None:
            self._arm = Z1LowCmd(self.sdk, back_to_start=self.back_to_start)
        return self._arm

    def state(self) -> ArmState:
        """The arm's measured state: the SDK's lowstate (getQ, getQd, getGripperQ)."""
        return self._port().read()

    def _report(self, plan, streamed, out):
        _write_commands(out / "trajectory.json", streamed, plan)
        x = streamed.commands
        end = "back at the start pose (SDK backToStart)" if self.back_to_start else "the arm holds the last command"
        return ExecutionReport(self.name, streamed.completed, _stopped_message(streamed, f"trajectory streamed; {end}"),
                               len(x), len(x) * streamed.dt, streamed.check, [str(out / "trajectory.json")],
                               stopped=streamed.stopped)


def get_backend(name: str, **options) -> Backend:
    """A backend by name: "dry-run" (start=), "sim" (scene_points=, object_points=, target=,
    start=) or "unitree" (real_hardware=True, back_to_start=). Unknown names raise InputError."""
    kinds = {"dry-run": DryRun, "sim": Sim, "unitree": Unitree}
    if name not in kinds:
        raise InputError("backend", f"unknown backend '{name}' (choose {', '.join(BACKENDS)})")
    return kinds[name](**options)
