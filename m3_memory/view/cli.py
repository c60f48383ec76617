"""``m3 view``: the memory in a browser (argparse only; the handler imports the heavy modules)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from m3_memory.errors import InputError, MissingDependency
from m3_memory.outputs import MB, beside, check_output

SCREENSHOT_WIDTH = 480  # --screenshot renders each half at least this wide (pixels)
INSTALL = "pip install viser yourdfpy (or pip install 'm3_memory[view]')"


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``m3 view`` to the ``m3`` parser."""
    p = sub.add_parser("view", help="the memory in a browser: splats, source cameras, text queries, renders, the "
                       "attention trace, a grasp preview")
    p.add_argument("memory", help="the *.m3 memory")
    p.add_argument("--port", type=int, default=8080, help="port to serve on (default: 8080; the next free one if taken)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only; "
                   "0.0.0.0 serves the network)")
    p.add_argument("--robot", action="store_true", help="show the B1 + Z1 at the memory's robot pose and a 'plan grasp' "
                   "button (planning only, nothing moves)")
    p.add_argument("--query", metavar="TEXT", help="ask this first (with --screenshot: the query shown)")
    p.add_argument("--screenshot", metavar="OUT.png", help="render one frame headless and exit (no browser, no server): "
                   "colour | relevancy with the target and its box from --view, the trace sheet below")
    p.add_argument("--view", type=int, default=0, help="--screenshot: the memory's source camera N (default: 0)")
    p.add_argument("--out", help="folder the 'save' button writes to (default: <memory>_view beside the memory)")
    p.add_argument("--model", default="clip", help="which of the memory's models answers (default: clip)")
    p.add_argument("--weights", help="the text model's weights file, when the memory was built from one")
    p.set_defaults(func=cmd_view)


def _require(module: str) -> None:
    try:
        __import__(module)
    except ImportError:
        raise MissingDependency(module, f"is not installed; m3 view needs it: {INSTALL}") from None


def cmd_view(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise InputError("--port", f"must be 0..65535, got {args.port}")
    if args.screenshot:
        shot = check_output(args.screenshot, folder=False, allow_existing=True, need_bytes=16 * MB)
        if shot.suffix.lower() != ".png":
            raise InputError(args.screenshot, "screenshot must be a .png file")
    else:
        _require("viser")
        if args.robot:
            _require("yourdfpy")
        args.out = str(check_output(args.out or beside(args.memory, "view"), allow_existing=True, need_bytes=16 * MB))
    from m3_memory.memory.artifact import load_memory
    from m3_memory.query.api import QueryConfig
    from m3_memory.view.session import ViewSession

    memory = load_memory(args.memory)
    session = ViewSession(memory, QueryConfig(model=args.model), args.weights)
    if args.screenshot:
        return _screenshot(session, args, Path(args.screenshot))
    from m3_memory.view.app import Viewer

    viewer = Viewer(session, args.host, args.port, args.out, robot=args.robot)
    if args.query:
        viewer.query.value = args.query
        viewer.ask(args.query)
    print(f"m3 view: {viewer.url} (Ctrl-C to stop; 'save' writes into {args.out})", flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        viewer.server.stop()


def _screenshot(session, args: argparse.Namespace, path: Path) -> int:
    """``--screenshot``: the panel "render from here" shows, at source camera ``--view`` (upscaled to
    ``SCREENSHOT_WIDTH``), with the trace sheet under it; exit 1 when the query found nothing (as
    ``m3 query``)."""
    from PIL import Image

    from m3_memory.outputs import write_atomic
    from m3_memory.query.camera import Camera

    memory = session.memory
    if not memory.cameras:
        raise InputError(args.memory, "stores no source cameras to render the screenshot from")
    if not 0 <= args.view < len(memory.cameras):
        raise InputError("--view", f"{args.view} is not a source camera of this memory (0..{len(memory.cameras) - 1})")
    answer = session.ask(args.query) if args.query else None
    camera = Camera.from_view(memory.cameras[args.view])
    picture = Image.fromarray(session.render(camera.scaled(max(1.0, SCREENSHOT_WIDTH / camera.width))))
    trace = session.trace_picture()
    if trace is not None:
        below = Image.fromarray(trace)
        sheet = Image.new("RGB", (max(picture.width, below.width), picture.height + below.height + 4), "white")
        sheet.paste(picture, (0, 0))
        sheet.paste(below, (0, picture.height + 4))
        picture = sheet
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda tmp: picture.save(tmp, format="PNG"))
    if answer is not None:
        print(answer.report)
    print(f"wrote {path}")
    return 0 if answer is None or answer.result.found else 1
