"""The ``m3`` command: ``m3 synth``, ``m3 inspect``, ``m3 features``, ``m3 demo`` (and ``build``,
``query``, ``eval``, ``grasp``, ``view``, registered by their packages).

Every failure ends with one line on stderr, ``m3: error: <input>: <what is wrong>``, and an
exit code of the taxonomy in :mod:`m3_memory.errors` (2 bad input, 3 build failed, 4 safety
refusal, 5 missing dependency, 70 internal error, 130 Ctrl-C, 143 SIGTERM); ``--debug`` shows
the traceback. Warnings of the libraries (numpy, PIL, torch, ...) go to the log
(``--log FILE``; on stderr with ``--debug``), never ahead of the error line.

Messages go through the ``m3`` logger. On stderr: warnings (``m3: warning: ...``) and, off a
terminal, a progress line at least every 30 s of long work (:mod:`m3_memory.progress`);
``--verbose`` adds each stage, ``--quiet`` keeps only warnings and errors. The options of the
``m3`` command itself may also follow the subcommand (``m3 build ... --debug``).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import traceback
from pathlib import Path

from m3_memory.device import add_device_option
from m3_memory.errors import (
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    InputError,
    Terminated,
    describe,
    first_line,
    os_problem,
)
from m3_memory.outputs import beside, check_output
from m3_memory.training.config import TrainConfig

log = logging.getLogger("m3")

EXIT_CODES_HELP = ("exit codes: 0 done, 1 nothing found (query) or grasp not completed, 2 bad input, 3 build failed, "
                   "4 safety refusal, 5 missing dependency, 70 internal error, 130 interrupted (Ctrl-C), 143 terminated "
                   "(SIGTERM)")


def _add_recording_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", default="auto", help="recording format (default: auto-detect)")
    p.add_argument("--max-dt", type=float, default=None,
                   help="RealSense/ROS 2 bags: largest colour-depth time difference kept, seconds")
    p.add_argument("--poses", default=None, choices=["auto", "tf", "odometry", "none"],
                   help="RealSense recordings and ROS 2 bags: where camera poses come from (default: auto)")


def _open(args: argparse.Namespace):
    from m3_memory.recording import open_recording

    options = {}
    if args.max_dt is not None:
        options["max_dt"] = args.max_dt
    if args.poses is not None:
        options["poses"] = args.poses
    return open_recording(args.recording, fmt=args.format, **options)


def cmd_synth(args: argparse.Namespace) -> int:
    from m3_memory.synth import SynthConfig, write_synthetic
    from m3_memory.synth.scene import MAX_TABLES

    frames = args.frames if args.frames is not None else 300 if args.preset == "room" else 48
    if frames < 2 or args.width < 16 or args.height < 16:
        raise InputError("m3 synth", "needs --frames >= 2 and --width/--height >= 16")
    if not 1 <= args.tables <= MAX_TABLES:
        raise InputError("--tables", f"must be 1 to {MAX_TABLES}, got {args.tables}")
    check_output(args.out, allow_existing=True, need_bytes=(64 << 20) * max(1, frames // 48))
    cfg = SynthConfig(width=args.width, height=args.height, n_frames=frames, seed=args.seed, preset=args.preset,
                      tables=args.tables)
    out = write_synthetic(args.out, cfg, realsense=not args.no_realsense, rosbag2=not args.no_rosbag2)
    where = f" of {cfg.tables} tables" if cfg.preset == "room" else ""
    print(f"synthetic {cfg.preset} scene{where}, {cfg.n_frames} frames {cfg.width}x{cfg.height}:")
    for label, path in (("posed folder", out.folder), ("librealsense .db3", out.realsense),
                        ("ROS 2 bag", out.rosbag2)):
        if path is not None:
            print(f"  {label:18s} {path}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from m3_memory.recording.inspect import inspect_recording

    sheet = Path(args.sheet) if args.sheet else beside(args.recording, "sheet", ".png")
    check_output(sheet, folder=False, allow_existing=True, need_bytes=8 << 20)
    rec = _open(args)
    summary = inspect_recording(rec, sheet=sheet)
    for warning in summary.warnings:
        log.warning("%s: %s", args.recording, warning)
    if args.json:
        print(json.dumps(summary.to_dict(), indent=1))
    else:
        print("\n".join(summary.lines()))
        print(f"  contact sheet: {sheet}" if summary.frames else "  no frames: no contact sheet written")
    return 0


def cmd_features(args: argparse.Namespace) -> int:
    from m3_memory.device import use_device
    from m3_memory.distributed import join
    from m3_memory.foundation import known_models, load_model
    from m3_memory.memory.extract import extract_components

    if args.model not in known_models():
        raise InputError(args.model, f"unknown foundation model; known: {', '.join(known_models())}")
    device = use_device(args.device, "features")
    out = check_output(args.out or beside(args.recording, "features"), allow_existing=True, need_bytes=64 << 20)
    rec = _open(args)
    kwargs = {k: v for k, v in (("arch", args.arch), ("image_size", args.image_size)) if v is not None}
    if args.model == "precomputed":
        kwargs = {"name": args.name or "precomputed"}
    group = join(device)  # under torchrun: the ranks share the frames, rank 0 reduces and writes
    try:
        model = load_model(args.model, weights=args.weights, device=str(group.device), **kwargs)
        summary = extract_components(rec, model, out, threshold=args.threshold, rule=args.rule, stride=args.stride,
                                     test_every=args.test_every)
    finally:
        group.close()
    if not group.main:
        return 0
    print("\n".join(summary.lines()))
    print(f"  wrote {out / f'psc_{model.name}.safetensors'}, {out / f'features_{model.name}.png'}")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from m3_memory.doctor import print_environment

    return print_environment()


def cmd_demo(args: argparse.Namespace) -> int:
    from m3_memory.demo import run_demo

    check_output(args.out, allow_existing=True, need_bytes=512 << 20)
    from m3_memory.device import use_device

    return run_demo(Path(args.out), frames=args.frames, iterations=args.iterations, device=str(use_device(args.device, "demo")))


def _add_global_options(p: argparse.ArgumentParser, default: object = None) -> None:
    """The ``m3`` command's own options; on a subcommand (``default=SUPPRESS``) they do not
    overwrite what was given before it."""
    flag = {} if default is None else {"default": default}
    p.add_argument("--debug", action="store_true", help="show tracebacks and library warnings", **flag)
    p.add_argument("--log", metavar="FILE", help="append the log (stages, warnings of m3 and its libraries) to FILE",
                   **({"default": None} if default is None else flag))
    level = p.add_mutually_exclusive_group()
    level.add_argument("-v", "--verbose", action="store_true", help="also say each stage of the work", **flag)
    level.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors (no progress lines)", **flag)


def build_parser() -> argparse.ArgumentParser:
    from m3_memory import __version__

    parser = argparse.ArgumentParser(prog="m3", description="M3 spatial memory for robots", epilog=EXIT_CODES_HELP)
    parser.add_argument("--version", action="version", version=f"m3 {__version__}")
    _add_global_options(parser)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="render a synthetic scene, tabletop or room (folder, .db3, ROS 2 bag)")
    p.add_argument("out", help="output folder")
    p.add_argument("--preset", choices=["tabletop", "room"], default="tabletop",
                   help="one table, or a room of --tables tables along one long camera path")
    p.add_argument("--tables", type=int, default=4, help="room: how many tables (default: %(default)s)")
    p.add_argument("--frames", type=int, help="frames of the scan (default: 48 tabletop, 300 room)")
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--height", type=int, default=240)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-realsense", action="store_true", help="skip the librealsense .db3")
    p.add_argument("--no-rosbag2", action="store_true", help="skip the ROS 2 bag")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("inspect", help="summarise a recording and write a contact-sheet PNG")
    p.add_argument("recording")
    _add_recording_options(p)
    p.add_argument("--sheet", help="contact-sheet PNG path (default: <recording>_sheet.png beside the recording)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("features", help="extract a model's feature maps, reduce them to principal scene components")
    p.add_argument("recording")
    _add_recording_options(p)
    p.add_argument("--model", required=True, help="clip, siglip, dinov2, precomputed, or clip-fixture (the test model)")
    p.add_argument("--weights", help="weights file or hub tag (precomputed: the folder of [h, w, d] maps)")
    p.add_argument("--arch", help="architecture name (open_clip / timm), default: the paper's")
    p.add_argument("--image-size", type=int, help="short side in pixels fed to the model (default: its own)")
    p.add_argument("--name", help="precomputed: the model's name (e.g. seem)")
    p.add_argument("--threshold", type=float, help="PSC similarity threshold (default: the authors' per model)")
    p.add_argument("--rule", default="strict", choices=["strict", "cover"])
    p.add_argument("--stride", type=int, default=1, help="a preview on every k-th frame (not used by m3 build)")
    p.add_argument("--test-every", type=int, default=TrainConfig.test_every,
                   help="hold out every k-th view, as m3 build --train.test-every does (default: %(default)s)")
    p.add_argument("--out", help="output folder (default: <recording>_features beside the recording)")
    add_device_option(p)
    p.set_defaults(func=cmd_features)

    p = sub.add_parser("doctor", help="print what m3 finds here: compiler, OpenMP, CUDA/gsplat, ROS, RealSense, "
                       "model weights, caches")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("demo", help="the whole job on the embedded synthetic tabletop scene")
    p.add_argument("--out", default="m3_demo", help="output folder (default: ./m3_demo)")
    p.add_argument("--frames", type=int, default=48)
    p.add_argument("--iterations", type=int, help="training iterations (default: the fast preset's 600)")
    add_device_option(p)
    p.set_defaults(func=cmd_demo)

    # Subcommands of later stages register themselves (argparse only; heavy imports inside their handlers).
    from m3_grasp.cli import register as register_grasp
    from m3_memory.query.cli import register as register_query
    from m3_memory.training.cli import register as register_build
    from m3_memory.view.cli import register as register_view

    register_build(sub)
    register_query(sub)
    register_grasp(sub)
    register_view(sub)
    for command in sub.choices.values():
        command.epilog = command.epilog or EXIT_CODES_HELP
        _add_global_options(command, default=argparse.SUPPRESS)
    return parser


def _terminate(signum, frame) -> None:
    raise Terminated


class _StderrFormatter(logging.Formatter):
    """``m3: warning: ...`` (the level in lower case, as the error line's ``m3: error:``);
    progress and stage lines plainly as ``m3: ...``."""

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno < logging.WARNING:
            return f"m3: {record.getMessage()}"
        return super().format(logging.makeLogRecord({**record.__dict__, "levelname": record.levelname.lower()}))


def _default_filter(record: logging.LogRecord) -> bool:
    """Without --verbose: warnings, errors and progress lines."""
    return record.levelno >= logging.WARNING or record.name == "m3.progress"


class _Logging:
    """The ``m3`` logger on stderr (see the module's docstring for what each level shows) and
    library warnings captured into the log (``--log FILE``; stderr only with ``--debug``) for
    one run of :func:`main`."""

    def __init__(self, debug: bool, log_file: str | None, verbose: bool = False, quiet: bool = False):
        self.handlers: list[tuple[logging.Logger, logging.Handler]] = []
        try:  # first: a log file that cannot be opened changes nothing
            file = logging.FileHandler(log_file) if log_file else None
        except OSError as err:
            raise InputError(log_file, f"log file cannot be written ({os_problem(err)})") from None
        stderr = logging.StreamHandler(sys.stderr)
        stderr.setFormatter(_StderrFormatter("m3: %(levelname)s: %(message)s"))
        if not (debug or verbose or quiet):
            stderr.addFilter(_default_filter)
        self._add(logging.getLogger("m3"), stderr, logging.DEBUG if debug or verbose else
                  logging.WARNING if quiet else logging.INFO)
        if debug:
            self._add(logging.getLogger("py.warnings"), stderr, logging.WARNING)
        if file is not None:
            file.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
            for name in ("m3", "py.warnings"):
                self._add(logging.getLogger(name), file, logging.DEBUG)
        self.saved = [(logging.getLogger(name), logging.getLogger(name).propagate, logging.getLogger(name).level)
                      for name in ("m3", "py.warnings")]
        for logger, _, _ in self.saved:  # only the handlers above: not a root handler some library configured
            logger.propagate = False
        logging.getLogger("m3").setLevel(logging.DEBUG)
        logging.captureWarnings(True)

    def _add(self, logger: logging.Logger, handler: logging.Handler, level: int) -> None:
        handler.setLevel(level)
        logger.addHandler(handler)
        self.handlers.append((logger, handler))

    def close(self) -> None:
        logging.captureWarnings(False)
        for logger, propagate, level in self.saved:
            logger.propagate, logger.level = propagate, level
        for logger, handler in self.handlers:
            logger.removeHandler(handler)
            handler.close()


def main(argv: list[str] | None = None) -> int:
    """Run the ``m3`` command; returns the exit code (see :mod:`m3_memory.errors`)."""
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as given (m3 build --nproc relaunches it)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    logs = None
    try:
        logs = _Logging(args.debug, args.log, args.verbose, args.quiet)
        return args.func(args)
    except KeyboardInterrupt:
        print("m3: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated:
        print("m3: terminated (SIGTERM)", file=sys.stderr)
        return EXIT_TERMINATED
    except Exception as err:  # noqa: BLE001 - every failure ends as one line and a code
        if args.debug:
            traceback.print_exc()
        known = describe(err)
        if known is None:
            print(f"m3: internal error: {type(err).__name__}: {first_line(err)} (run with --debug for the traceback)",
                  file=sys.stderr)
            return EXIT_INTERNAL
        print(f"m3: error: {known[0]}", file=sys.stderr)
        return known[1]
    finally:
        if logs is not None:
            logs.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
