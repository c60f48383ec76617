"""``m3 doctor``: what m3 finds in this environment (compiler, OpenMP, CUDA/gsplat, ROS,
RealSense, model weights, caches), one line each, so a fallback is explained before a build."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import subprocess
import sys


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _first_line(cmd: list[str]) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"cannot run ({err})"
    return ((done.stdout or done.stderr).strip().splitlines() or ["?"])[0]


def _compositor() -> list[tuple[str, str]]:
    from m3_memory.render.cpu import FALLBACK_COST, compile_library, compiler, kernel_cache

    cxx = compiler()
    rows = [("C++ compiler", f"{cxx} ({_first_line([cxx, '--version'])})" if cxx else
             f"none ({os.environ.get('CXX', 'g++')} not on PATH): {FALLBACK_COST}")]
    if cxx:
        built, why = compile_library()
        rows.append(("C++ compositor (OpenMP)", f"ok: {built}" if built else f"FAILED: {why}; {FALLBACK_COST}"))
    rows.append(("kernel cache", str(kernel_cache())))
    return rows


def _gpu() -> list[tuple[str, str]]:
    import torch

    cuda = (f"yes: {torch.cuda.get_device_name(0)} (torch {torch.__version__}, CUDA {torch.version.cuda})"
            if torch.cuda.is_available() else f"no (torch {torch.__version__}; builds and queries run on the CPU)")
    gsplat = _version("gsplat")
    return [("CUDA", cuda), ("gsplat", gsplat or "not installed (CUDA rendering: pip install 'm3_memory[cuda]')"),
            ("CPU threads", str(torch.get_num_threads()))]


def _ros() -> list[tuple[str, str]]:
    distro = os.environ.get("ROS_DISTRO")
    rclpy = importlib.util.find_spec("rclpy") is not None
    return [("ROS 2", f"{distro or 'no ROS_DISTRO set'}; rclpy {'importable' if rclpy else 'not importable'}"
             + ("" if rclpy else " (source /opt/ros/<distro>/setup.bash for the nodes)"))]


def _realsense() -> list[tuple[str, str]]:
    version = _version("pyrealsense2")
    return [("RealSense", f"pyrealsense2 {version}" if version else
             "pyrealsense2 not installed (.bag/.db3 recordings: pip install 'm3_memory[realsense]')")]


def _weights() -> list[tuple[str, str]]:
    from m3_memory.foundation import clip, dinov2
    from m3_memory.foundation.cache import default_cache_root
    from m3_memory.foundation.fixture import WEIGHTS

    rows = []
    for name, (ident, path) in (("clip", clip.default_weights(clip.ClipModel)),
                                ("siglip", clip.default_weights(clip.SigLipModel)), ("dinov2", dinov2.default_weights())):
        rows.append((f"weights {name}", f"{ident}: {path}" if path else
                     f"{ident}: not in the local cache (downloaded on first use when the hub is reachable, "
                     "or pass --weights FILE)"))
    rows.append(("weights clip-fixture", str(WEIGHTS) if WEIGHTS.is_file() else f"MISSING: {WEIGHTS}"))
    rows.append(("feature cache", str(default_cache_root())))
    return rows


def environment() -> list[tuple[str, str]]:
    """(what, what was found) rows; a part that fails to load says so in its row."""
    from m3_memory import __version__

    rows = [("m3", f"{__version__} (Python {platform.python_version()}, {platform.machine()}, {sys.executable})")]
    for part in (_compositor, _gpu, _ros, _realsense, _weights):
        try:
            rows += part()
        except Exception as err:  # noqa: BLE001 - doctor reports, it never stops at the first problem
            rows.append((part.__name__.strip("_"), f"check failed: {type(err).__name__}: {err}"))
    return rows


def print_environment() -> int:
    """Print :func:`environment`; exit code 0."""
    rows = environment()
    width = max(len(what) for what, _ in rows)
    for what, found in rows:
        print(f"{what:{width}s}  {found}")
    return 0
