"""``m3 grasp MEMORY TEXT``: query -> target -> grasp plan -> backend (argparse only here;
the handler imports the heavy modules)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from m3_memory.device import add_device_option
from m3_memory.errors import InputError, SafetyRefusal, first_line
from m3_memory.outputs import MB, beside, check_output

GRASP_OUTPUT_BYTES = 64 * MB  # plan.json, trajectory.json, the sim's PNG and GIF


def _floats(text: str, n: int, what: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != n:
        raise InputError(what, f"expected {n} comma-separated numbers, got '{text}'")
    return values


def _read_points(path: str):
    """``--object-points``: a point cloud file (PLY through plyfile; PCD, XYZ and the rest through
    open3d) -> [N, 3] float64 points (world frame, metres); one-line InputError otherwise."""
    import numpy as np
    import open3d as o3d

    if not Path(path).is_file():
        raise InputError(path, "point cloud file not found" if not Path(path).is_dir() else "is a folder, not a point cloud")
    if Path(path).suffix.lower() == ".ply":  # plyfile says what is wrong; open3d's RPly prints it on stderr
        from plyfile import PlyData

        try:
            vertex = PlyData.read(path)["vertex"].data
            points = np.stack([vertex["x"], vertex["y"], vertex["z"]], axis=1).astype(np.float64)
        except Exception as err:  # noqa: BLE001 - plyfile raises many types for damaged files
            raise InputError(path, f"no points read: not a PLY point cloud ({first_line(err)})") from None
    else:
        with o3d.utility.VerbosityContextManager(o3d.utility.VerbosityLevel.Error):  # the reason is said below, once
            points = np.asarray(o3d.io.read_point_cloud(path).points)
    if len(points) == 0:
        raise InputError(path, "no points read (expected a PLY/PCD point cloud, world frame, metres)")
    return points


def cmd_grasp(args: argparse.Namespace) -> int:
    from m3_grasp.backends import BACKENDS
    from m3_grasp.execution import stop_on_sigint
    from m3_grasp.plan import GraspConfig, check_speed_scale
    from m3_grasp.robot import RobotConfig
    from m3_grasp.run import base_pose_of, memory_scene_points, run_grasp
    from m3_grasp.state import ArmState
    from m3_memory.device import use_device
    from m3_memory.memory.artifact import load_memory

    def log(line: str) -> None:  # status lines; with --json stdout holds only the JSON
        print(line, file=sys.stderr if args.json else sys.stdout)

    device = use_device(args.device, "grasp")
    if args.backend not in BACKENDS:
        raise InputError("--backend", f"unknown backend '{args.backend}' (choose {', '.join(BACKENDS)})")
    out = check_output(args.out or beside(args.memory, "grasp"), allow_existing=True,
                       need_bytes=GRASP_OUTPUT_BYTES)
    if args.urdf is not None and not Path(args.urdf).is_file():
        raise InputError(args.urdf, "URDF file not found" if not Path(args.urdf).is_dir() else "is a folder, not a URDF")
    base_pose = tuple(_floats(args.base_pose, 3, "--base-pose")) if args.base_pose else None
    start = ArmState.parse(args.start_joints) if args.start_joints else None
    if start is not None and args.backend == "unitree":
        raise InputError("--start-joints", "the unitree backend starts from the arm's measured state (the SDK's lowstate)")
    if start is None and args.backend == "dry-run":
        log("dry-run: no --start-joints given; the arm is assumed at its rest pose (all joints 0)")
    check_speed_scale(args.speed_scale, RobotConfig.load())
    if args.backend == "unitree" and not args.real_hardware:
        raise SafetyRefusal("unitree backend", "drives the real Z1 arm; pass --real-hardware to confirm")
    memory = load_memory(args.memory)
    base_pose_of(memory, base_pose, RobotConfig.load())  # no pose known: refused before the query
    scene = memory_scene_points(memory)
    if args.target is not None:
        target = _floats(args.target, 3, "--target")
        if args.object_points is None:
            raise InputError("--target", "needs --object-points (the object's points, PLY, world frame)")
        object_points = _read_points(args.object_points)
    else:
        try:
            from m3_memory.query.api import find_in_memory
        except ImportError as err:
            raise InputError("m3 grasp", f"the text query is not available ({err}); give --target and --object-points")
        from m3_memory.query.api import QueryConfig

        result = find_in_memory(memory, args.text, QueryConfig(device=str(device)))
        if not result.found:
            raise InputError(args.text, f"not found in {args.memory}: {result.message}")
        target, object_points = result.point_world, result.points_world
        log(f"'{args.text}': score {result.score:.3f}, {len(object_points)} points around "
              f"[{', '.join(f'{v:.3f}' for v in target)}] m")
    options = {"real_hardware": args.real_hardware, "back_to_start": args.back_to_start} if args.backend == "unitree" else {}
    if args.backend == "sim":
        options["animate"] = not args.no_gif
    if args.backend != "unitree" and start is not None:
        options["start"] = start
    with stop_on_sigint(log) as should_stop:
        plan, report = run_grasp(memory, target, object_points, scene, args.backend, out, base_pose,
                                 GraspConfig(speed_scale=args.speed_scale), urdf=args.urdf, should_stop=should_stop,
                                 log=log, **options)
    if args.json:
        print(json.dumps({"plan": plan.to_dict(), "execution": report.to_dict() if report else None}, indent=1))
    elif report is not None:
        print("\n".join(plan.lines() + report.lines()))
    if report is None:  # said once, as the error line (plan.json keeps the details)
        raise InputError("m3 grasp", f"no grasp: {plan.message}")
    return 0 if report.ok else 1


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``m3 grasp`` to the ``m3`` parser."""
    p = sub.add_parser("grasp", help="find an object in a memory, plan a Z1 grasp from the B1, run it on a backend")
    p.add_argument("memory", help="*.m3 memory (its Gaussians are the scene the arm must not touch)")
    p.add_argument("text", help='what to grasp, e.g. "yellow bath duck" (a label only with --target)')
    p.add_argument("--backend", default="dry-run", help="dry-run (default), sim or unitree (the real Z1, with --real-hardware)")
    p.add_argument("--target", help="x,y,z of the object in the memory's world frame (metres), instead of the query")
    p.add_argument("--object-points", help="the object's points (PLY, world frame) with --target")
    p.add_argument("--base-pose", help="x,y,yaw of the B1 in the world frame (m, m, rad); default: the robot pose the "
                                       "memory records (refused when it records none)")
    p.add_argument("--start-joints", help="dry-run, sim: the arm's state to plan from, z1_joint1..6[,gripper] in rad "
                                          "(default: the rest pose, assumed); unitree always reads the arm")
    p.add_argument("--speed-scale", type=float, default=0.3,
                   help="planned speeds and accelerations as a fraction of the limits (default 0.3, at most robot.yaml's "
                        "velocity_fraction)")
    p.add_argument("--back-to-start", action="store_true", help="unitree: after the grasp, fold the arm back with the "
                                                                "SDK's backToStart")
    p.add_argument("--urdf", help="robot description (default: the project's urdf/b1_z1.urdf)")
    p.add_argument("--out", help="output folder (default: <memory>_grasp beside the memory)")
    p.add_argument("--json", action="store_true", help="print the plan and execution report as JSON")
    p.add_argument("--no-gif", action="store_true", help="sim: write the PNG only")
    add_device_option(p)
    p.add_argument("--real-hardware", action="store_true", help="unitree: really move the arm")
    p.set_defaults(func=cmd_grasp)
