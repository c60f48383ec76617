"""Grasp execution safety fuzz: random measured start states x random reachable targets,
streamed through the unitree backend to a stand-in Z1 SDK whose arm lags its commands.

For each trial: a start state uniform inside the joint limits (and a random gripper opening)
is placed on the stand-in arm; a reachable target (the tool centre of a random configuration
whose tool points within 45 degrees of straight down, in front of the arm base, 10 cm or more
above the floor; a 5 cm ball of points around it) is drawn for a standing B1 with a floor as
the scene; the plan starts from the SDK's measured state; the backend streams
it at the SDK's 2 ms period. Every command sent is checked independently of m3_grasp.safety
(test/m3_grasp/limits.py: joint positions, speeds within velocity_fraction of the URDF's,
accelerations within robot.yaml's, floor and trunk clearance), and the first command is checked
to be within one control period (at the speed limit) of the measured start. Then, on plans
found, stops at random times: every command, the deceleration included, within the limits,
and the last two commands equal (at rest).

    python bench/grasp_safety.py               # 1000 starts, 200 stops: bench/results/grasp_safety.json
    python bench/grasp_safety.py --trials 50   # quicker
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "test" / "m3_grasp"))

import fake_z1_sdk  # noqa: E402
from limits import limit_violations  # noqa: E402

from m3_grasp.backends import get_backend  # noqa: E402
from m3_grasp.kinematics import Z1Kinematics  # noqa: E402
from m3_grasp.plan import GraspConfig, plan_grasp  # noqa: E402
from m3_grasp.robot import RobotConfig, T_world_base  # noqa: E402
from m3_grasp.safety import SafetyError  # noqa: E402
from m3_grasp.timing import TimingError  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def reachable_target(kin: Z1Kinematics, T_world_base: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A point [3] (world, metres) some grasp-like tool pose of the arm reaches: the tool centre
    at a random configuration inside the limits, tool axis within 45 degrees of straight down,
    in front of the arm base, at least 0.1 m above the floor."""
    while True:
        T = kin.fk(rng.uniform(kin.lower + kin.margin, kin.upper - kin.margin))
        if T[2, 0] <= -np.cos(np.deg2rad(45)) and T[0, 3] > kin.T_base_armbase[0, 3]:
            p = (T_world_base @ T)[:3, 3]
            if p[2] > 0.1:
                return p


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000, help="random start x target pairs")
    parser.add_argument("--stops", type=int, default=200, help="random stop times, over the plans found")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULTS / "grasp_safety.json"))
    args = parser.parse_args()

    sys.modules["unitree_arm_interface"] = fake_z1_sdk
    robot = RobotConfig.load()
    kin = Z1Kinematics.from_urdf(position_margin=robot.position_margin)
    rng = np.random.default_rng(args.seed)
    config = GraspConfig(max_candidates=8, max_base_move=0.0)
    ball = rng.normal(size=(60, 3))
    ball = 0.025 * ball / np.linalg.norm(ball, axis=1, keepdims=True)
    floor = np.c_[rng.uniform(-1.5, 1.5, (4000, 2)), np.zeros(4000)]
    dt = fake_z1_sdk.DT
    step = np.append(kin.velocity, kin.gripper.velocity) * robot.velocity_fraction * dt
    counts = {"trials": 0, "plans_found": 0, "start_refused": 0, "timing_failed": 0, "no_plan": 0, "executed": 0, "commands": 0,
              "first_command_off": 0, "violations": 0, "stops": 0, "stop_violations": 0, "stops_not_at_rest": 0}
    kinds: dict[str, int] = {}
    found_plans = []
    t0 = time.perf_counter()
    out_dir = Path(tempfile.mkdtemp(prefix="m3_grasp_safety_"))  # the backends' trajectory.json, not kept
    for _ in tqdm(range(args.trials), desc="starts x targets", mininterval=10):
        counts["trials"] += 1
        fake_z1_sdk.ArmInterface.start_q = rng.uniform(kin.lower, kin.upper)
        fake_z1_sdk.ArmInterface.start_gripper = float(rng.uniform(kin.gripper.lower, kin.gripper.upper))
        backend = get_backend("unitree", kin=kin, robot=robot, real_hardware=True)
        backend._port().sleep = lambda s: None
        base = T_world_base(0.0, 0.0, rng.uniform(-np.pi, np.pi), robot.base_height)
        target = reachable_target(kin, base, rng)
        measured = backend.state()
        try:
            plan = plan_grasp(target, target + ball, floor, base, measured, config, kin, robot)
        except SafetyError:
            counts["start_refused"] += 1
            continue
        except TimingError:
            counts["timing_failed"] += 1
            continue
        if not plan.found:
            counts["no_plan"] += 1
            continue
        counts["plans_found"] += 1
        backend.execute(plan, out_dir)
        sent = np.array(fake_z1_sdk.ArmInterface.instances[-1].sent)
        counts["executed"] += 1
        counts["commands"] += len(sent)
        counts["first_command_off"] += int(np.any(np.abs(sent[0] - measured.x) > step + 1e-12))
        problems = limit_violations(kin, robot, sent, dt, base)
        counts["violations"] += int(bool(problems))
        for p in problems:
            kinds[p] = kinds.get(p, 0) + 1
        if len(found_plans) < args.stops:
            found_plans.append((plan, measured, base))
        fake_z1_sdk.ArmInterface.instances.clear()
    for i in tqdm(range(args.stops), desc="random stops", mininterval=10):
        plan, measured, base = found_plans[i % len(found_plans)]
        fake_z1_sdk.ArmInterface.start_q = measured.q
        fake_z1_sdk.ArmInterface.start_gripper = measured.gripper
        backend = get_backend("unitree", kin=kin, robot=robot, real_hardware=True)
        backend._port().sleep = lambda s: None
        arm = fake_z1_sdk.ArmInterface.instances[-1]
        stop_at = int(rng.integers(1, int(plan.duration / dt)))
        backend.execute(plan, out_dir, should_stop=lambda: len(arm.sent) >= stop_at)
        sent = np.array(arm.sent)
        counts["stops"] += 1
        problems = limit_violations(kin, robot, sent, dt, base)
        counts["stop_violations"] += int(bool(problems))
        counts["stops_not_at_rest"] += int(np.abs(sent[-1] - sent[-2]).max() > 1e-12)
        fake_z1_sdk.ArmInterface.instances.clear()
    result = {"bench": "grasp_safety", "machine": platform.processor() or platform.machine(), "seed": args.seed,
              "control_dt_s": dt, "fake_arm_lag_s": fake_z1_sdk.LAG_S, "speed_scale": config.speed_scale,
              "limits": {"velocity_fraction": robot.velocity_fraction, "acceleration_rad_s2": robot.acceleration,
                         "start_tolerance_rad": robot.start_tolerance, "tracking_tolerance_rad": robot.tracking_tolerance},
              **counts, "violation_kinds": kinds, "seconds": round(time.perf_counter() - t0, 1)}
    shutil.rmtree(out_dir, ignore_errors=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
