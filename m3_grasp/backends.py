"""Arm backends behind one small interface: ``get_backend(name, **opts).execute(plan, out_dir)``.

- ``dry-run`` (default): records the commands (trajectory.json) and summarises them.
- ``sim``: kinematic simulation with pinocchio: replays the commands, measures the arm's and
  gripper's clearance to the scene points, carries the object once the jaws close, and
  draws the arm moving (sim.png, sim.gif).
- ``unitree``: streams the commands to the Z1 through Unitree's SDK (``unitree_arm_interface``,
  CPython 3.8 only, imported lazily); real hardware only with ``real_hardware=True``.

Every backend goes through :meth:`Backend.execute`, which passes the exact command sequence
the backend will emit through :func:`m3_grasp.safety.check_command` first: the one place
limits are enforced.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from m3_grasp.collision import Obstacles, finger_region, gripper_boxes, in_box
from m3_grasp.kinematics import ARM_JOINTS, Z1Kinematics
from m3_grasp.plan import GraspPlan
from m3_grasp.robot import RobotConfig
from m3_grasp.safety import CommandCheck, check_command
from m3_memory.conventions import invert_T
from m3_memory.errors import InputError

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

    def lines(self) -> list[str]:
        c = self.check
        out = [f"{self.backend}: {self.message}",
               f"  {self.commands} commands over {self.duration_s:.1f} s; safety: peak speed {c.peak_speed_fraction:.0%} "
               f"of the URDF limits, >= {c.min_floor_clearance:.3f} m above the floor, >= {c.min_body_clearance:.3f} m "
               "from the trunk"]
        out += [f"  {k}: {v:.4f}" for k, v in self.measurements.items()]
        out += [f"  wrote {f}" for f in self.files]
        return out

    def to_dict(self) -> dict:
        return {"backend": self.backend, "ok": self.ok, "message": self.message, "commands": self.commands,
                "duration_s": self.duration_s, "safety": self.check.__dict__, "files": self.files,
                "measurements": self.measurements}


class Backend:
    """Executes a found GraspPlan. Subclasses give ``name`` and ``_run``; they may resample
    the commands in ``commands`` (what they return is exactly what gets checked and sent)."""

    name = ""

    def __init__(self, kin: Z1Kinematics | None = None, robot: RobotConfig | None = None):
        self.robot = robot or RobotConfig.load()
        self.kin = kin or Z1Kinematics.from_urdf(position_margin=self.robot.position_margin)

    def commands(self, plan: GraspPlan) -> tuple[np.ndarray, np.ndarray, float]:
        """(q [T, 6] rad, gripper [T] rad, dt s) this backend will emit."""
        return plan.q_trajectory, plan.gripper, plan.dt

    def execute(self, plan: GraspPlan, out_dir: str | Path) -> ExecutionReport:
        if not plan.found:
            raise InputError("plan", f"nothing to execute: {plan.message}")
        q, g, dt = self.commands(plan)
        check = check_command(self.kin, q, g, dt, plan.T_world_base, self.robot)
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        return self._run(plan, q, g, dt, out, check)

    def _run(self, plan: GraspPlan, q: np.ndarray, g: np.ndarray, dt: float, out: Path,
             check: CommandCheck) -> ExecutionReport:
        raise NotImplementedError


class DryRun(Backend):
    """Records the commands to trajectory.json (joint names, dt, q, gripper, plan) and reports."""

    name = "dry-run"

    def _run(self, plan, q, g, dt, out, check):
        path = out / "trajectory.json"
        path.write_text(json.dumps({"joints": list(ARM_JOINTS), "dt_s": dt, "q": q.round(6).tolist(),
                                    "gripper": g.round(6).tolist(), "plan": plan.to_dict()}))
        return ExecutionReport(self.name, True, "recorded, nothing moved", len(q), len(q) * dt, check, [str(path)])


class Sim(Backend):
    """Kinematic simulation against scene and object points (world, metres)."""

    name = "sim"

    def __init__(self, scene_points: np.ndarray, object_points: np.ndarray, target: np.ndarray | None = None,
                 animate: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.scene_world = np.asarray(scene_points, dtype=np.float64).reshape(-1, 3)
        self.object_world = np.asarray(object_points, dtype=np.float64).reshape(-1, 3)
        self.target = None if target is None else np.asarray(target, dtype=np.float64)
        self.animate = animate

    def _run(self, plan, q, g, dt, out, check):
        from m3_grasp.draw import draw_sim

        T_base_world = invert_T(plan.T_world_base)
        obj_base = self.object_world @ T_base_world[:3, :3].T + T_base_world[:3, 3]
        scene_base = self.scene_world @ T_base_world[:3, :3].T + T_base_world[:3, 3]
        if len(obj_base) and len(scene_base):  # the object's own points are not obstacles
            scene_base = scene_base[cKDTree(obj_base).query(scene_base, distance_upper_bound=0.01)[0] > 0.01]
        scene = Obstacles(scene_base)
        widest = int(np.argmin(g))  # the jaws open fully, then close on the object
        closed = widest + int(np.argmax(g[widest:] >= g[-1] - 1e-9))
        arm_min, hits, held, T_close = np.inf, 0, 0, None
        for t, (qt, gt) in enumerate(zip(q, g)):
            T = self.kin.fk(qt)
            arm_min = min(arm_min, scene.arm_clearance(self.kin, qt))
            hits += scene.points_in_boxes(T, gripper_boxes(float(self.kin.gripper.width(gt)), self.kin.gripper.jaw_reach))
            if t == closed:
                T_close = T
                local = (obj_base - T[:3, 3]) @ T[:3, :3]
                held = int(in_box(local, finger_region(float(self.kin.gripper.width(g[widest])))).sum())
        T_world_close = plan.T_world_base @ T_close
        measurements = {"arm_min_clearance_m": arm_min, "gripper_scene_contacts": float(hits),
                        "object_points_between_jaws": float(held)}
        if self.target is not None:
            measurements["grasp_centre_to_target_m"] = float(np.linalg.norm(T_world_close[:3, 3] - self.target))
        ok = arm_min >= 0 and hits == 0 and held > 0
        files = draw_sim(self.kin, plan.T_world_base, q, g, self.scene_world, self.object_world, closed, out, self.animate)
        message = "grasped without collisions" if ok else "COLLISION or empty grasp (see measurements)"
        return ExecutionReport(self.name, ok, message, len(q), len(q) * dt, check, [str(f) for f in files], measurements)


class Unitree(Backend):
    """Streams joint commands to the Z1 at 500 Hz through the SDK's low-level interface."""

    name = "unitree"
    CONTROL_DT = 0.002  # s, the Z1 SDK's low-level command period

    def __init__(self, real_hardware: bool = False, **kwargs):
        super().__init__(**kwargs)
        try:
            import unitree_arm_interface
        except ImportError as err:
            raise InputError("unitree backend", f"the Z1 SDK module unitree_arm_interface is not importable ({err}); "
                             "it is built by unitreerobotics/z1_sdk for CPython 3.8: put its lib/ on PYTHONPATH") from err
        if not real_hardware:
            raise InputError("unitree backend", "drives the real Z1 arm; pass --real-hardware to confirm")
        self.sdk = unitree_arm_interface

    def commands(self, plan):
        n = int(round(plan.dt / self.CONTROL_DT))
        t = np.arange((len(plan.q_trajectory) - 1) * n + 1) / n  # in plan samples
        grid = np.arange(len(plan.q_trajectory))
        q = np.column_stack([np.interp(t, grid, plan.q_trajectory[:, j]) for j in range(6)])
        return q, np.interp(t, grid, plan.gripper), self.CONTROL_DT

    def _run(self, plan, q, g, dt, out, check):
        arm = self.sdk.ArmInterface(hasGripper=True)
        arm.setFsmLowcmd()
        qd = np.vstack([np.diff(q, axis=0) / dt, np.zeros((1, 6))])
        for qt, qdt, gt in zip(q, qd, g):
            arm.q, arm.qd, arm.tau, arm.gripperQ = qt, qdt, np.zeros(6), gt
            arm.sendRecv()
            time.sleep(dt)
        return ExecutionReport(self.name, True, "trajectory streamed; the arm holds the last command", len(q),
                               len(q) * dt, check)


def get_backend(name: str, **options) -> Backend:
    """A backend by name: "dry-run", "sim" (scene_points=, object_points=, target=) or
    "unitree" (real_hardware=True). Unknown names raise InputError."""
    kinds = {"dry-run": DryRun, "sim": Sim, "unitree": Unitree}
    if name not in kinds:
        raise InputError("backend", f"unknown backend '{name}' (choose {', '.join(BACKENDS)})")
    return kinds[name](**options)
