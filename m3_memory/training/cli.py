"""``m3 build``: recording -> memory (argparse only; the handler imports the heavy modules)."""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from m3_memory.device import add_device_option
from m3_memory.errors import EXIT_INTERRUPTED, EXIT_TERMINATED, InputError
from m3_memory.training.options import add_train_options

if TYPE_CHECKING:
    from m3_memory.robot_pose import RobotPose

log = logging.getLogger("m3")
PACE_ITERATIONS = 10  # the authors' schedule on the CPU: the expected duration is measured over these iterations


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``m3 build`` to the ``m3`` parser."""
    p = sub.add_parser("build", help="build a memory (*.m3) from a recording: features, PSC, Gaussians, training")
    p.add_argument("recording", help="RealSense .bag/.db3, ROS 2 bag, or posed image folder")
    p.add_argument("--format", default="auto", help="recording format (default: auto-detect)")
    p.add_argument("--max-dt", type=float, default=None,
                   help="RealSense/ROS 2 bags: largest colour-depth time difference kept, seconds")
    p.add_argument("--poses", default=None, choices=["auto", "tf", "odometry", "none"],
                   help="RealSense recordings and ROS 2 bags: where camera poses come from (default: auto)")
    p.add_argument("--model", default="clip", help="foundation model(s), comma-separated: clip, siglip, dinov2, "
                   "precomputed, clip-fixture (default: clip)")
    p.add_argument("--weights", help="weights file or hub tag for the (single) model")
    p.add_argument("--out", required=True, help="output memory directory, e.g. scene.m3")
    p.add_argument("--fast", action="store_true", help="the fast preset (same as --preset fast)")
    p.add_argument("--iterations", type=int, help="training iterations (same as --train.iterations)")
    p.add_argument("--learn-projection", action="store_true", help="optimise W_m (the paper's text) instead of "
                   "keeping it fixed (the authors' code)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output memory")
    p.add_argument("--resume", action="store_true", help="continue from <out>.ckpt left by a stopped build")
    p.add_argument("--robot-pose", metavar="X,Y,Z,YAW", help="where the robot's base_link stands in the recording's "
                   "world frame (metres, yaw radians about z; --robot-pose=-1,... when x is negative); default: the "
                   "recording's own (tf world->base_link), if any")
    p.add_argument("--nproc", type=int, metavar="N", help="train data-parallel in N processes on this machine "
                   "(runs torchrun --nproc-per-node N for you; one per GPU on CUDA; for several machines run torchrun "
                   "--nnodes yourself)")
    add_device_option(p)
    add_train_options(p)
    p.set_defaults(func=cmd_build)


def parse_robot_pose(text: str) -> RobotPose:
    """``--robot-pose x,y,z,yaw`` (metres, radians) -> :class:`~m3_memory.robot_pose.RobotPose`;
    one-line :class:`InputError` naming --robot-pose otherwise."""
    from m3_memory.robot_pose import RobotPose

    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise InputError("--robot-pose", f"expected four finite numbers x,y,z,yaw (metres, radians), got {text!r}")
    return RobotPose.from_xyz_yaw(*values, source=f"m3 build --robot-pose {text}")


def without_nproc(argv: list[str]) -> list[str]:
    """An ``m3`` command line without its ``--nproc N`` (or ``--nproc=N``)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def _quiet_other_ranks() -> None:
    """Ranks other than 0 of a launch show only errors on stderr (their log files get the rest)."""
    for handler in logging.getLogger("m3").handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.ERROR)


def cmd_build(args: argparse.Namespace) -> int:
    from m3_memory.distributed import launched
    from m3_memory.training import distributed

    rank = int(os.environ.get("RANK", "0"))
    if args.nproc is not None:
        if args.nproc < 1:
            raise InputError("--nproc", f"needs at least one process, got {args.nproc}")
        if launched():
            if args.nproc != int(os.environ["WORLD_SIZE"]):
                raise InputError("--nproc", f"{args.nproc} inside a launch of {os.environ['WORLD_SIZE']} processes; "
                                 "leave --nproc out under torchrun")
        elif args.nproc > 1:
            return distributed.launch(without_nproc(args.argv), args.nproc, Path(args.out))
    if launched() and rank != 0:
        _quiet_other_ranks()
    return _build(args, rank)


def _build(args: argparse.Namespace, rank: int) -> int:
    from m3_memory.device import resolve_device
    from m3_memory.training.build import BuildStopped, build_memory
    from m3_memory.training.options import train_config

    robot_pose = parse_robot_pose(args.robot_pose) if args.robot_pose is not None else None
    device = resolve_device(args.device)
    if args.fast:
        args.preset = "fast"
    cfg = train_config(args, device)
    if args.iterations is not None:
        cfg = cfg.with_(iterations=args.iterations)
    if args.learn_projection:
        cfg = cfg.with_(learn_projection=True)
    authors_on_cpu = args.preset == "authors" and device.type == "cpu"
    if authors_on_cpu:
        print(f"m3: the authors' schedule on the CPU: {cfg.iterations} iterations at {cfg.max_side or 'full'} px take "
              f"hours; the expected duration follows after {PACE_ITERATIONS} iterations (--preset fast: minutes)",
              file=sys.stderr)
    options = {k: v for k, v in (("max_dt", args.max_dt), ("poses", args.poses)) if v is not None}
    stages: list[str] = []
    pace: list[float] = []  # clock at each training iteration, until the expected duration is told

    def progress(stage: str, fraction: float, message: str) -> None:  # each stage's first message goes to the log
        if not stages or stages[-1] != stage:
            stages.append(stage)
            log.info("build: %s", message)
        if authors_on_cpu and stage == "train" and len(pace) <= PACE_ITERATIONS:
            pace.append(time.perf_counter())
            if len(pace) == PACE_ITERATIONS + 1:
                rest = (pace[-1] - pace[0]) / PACE_ITERATIONS * cfg.iterations * (1 - fraction)
                print(f"m3: expected training time {rest / 3600:.1f} h ({(pace[-1] - pace[0]) / PACE_ITERATIONS:.2f} s "
                      "per iteration)", file=sys.stderr)

    try:
        report = build_memory(args.recording, args.out, model=args.model, weights=args.weights, overwrite=args.overwrite,
                              resume=args.resume, config=cfg, fmt=args.format, robot_pose=robot_pose, progress=progress,
                              device=device, **options)
    except BuildStopped as stop:
        if rank == 0:
            print(f"m3: {stop}", file=sys.stderr)
        return EXIT_TERMINATED if stop.signum == signal.SIGTERM else EXIT_INTERRUPTED
    if rank != 0:
        return 0
    print("\n".join(report.lines()))
    print(f"pictures: {report.out / 'report'}")
    return 0
