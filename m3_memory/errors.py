"""The errors users see and the exit codes of the ``m3`` command (the one taxonomy).

Every error is one line, ``<input>: <what is wrong>``. Exit codes:

- 0: done
- 1: ran, but found nothing (``m3 query``, like grep), or a grasp did not complete on the backend
- 2 (:class:`InputError`): bad input or usage: a file, folder, option or argument, or an output
  that cannot be written
- 3 (:class:`BuildFailed`): a build that started failed (diverged, everything pruned, the
  memory could not be written; the checkpoint is kept)
- 4 (:class:`SafetyRefusal`): the robot was not moved: a safety check refused
- 5 (:class:`MissingDependency`): an optional package is not installed
- 70: an internal error (a bug); ``--debug`` shows the traceback
- 130: interrupted by Ctrl-C (SIGINT); 143: terminated by SIGTERM (``ros2 launch``, systemd, Slurm)

All four derive from :class:`M3Error`: catch it to handle every failure m3 explains (the ROS
handlers do), catch one kind to handle only it.

:func:`describe` turns the errors of the operating system and of the libraries m3 reads files
with (safetensors, PIL, open3d, pyrealsense2) into the same one line and code.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_BAD_INPUT = 2
EXIT_BUILD_FAILED = 3
EXIT_SAFETY_REFUSAL = 4
EXIT_MISSING_DEPENDENCY = 5
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_TERMINATED = 143  # 128 + SIGTERM


class M3Error(Exception):
    """The base of the errors m3 reports to a user: ``str(err)`` is one line, ``<input>: <what is
    wrong>``; the CLI prints it and exits :attr:`exit_code`. Catch it to handle every kind."""

    exit_code = EXIT_INTERNAL

    def __init__(self, source: str | Path, problem: str):
        self.source = str(source)
        self.problem = " ".join(str(problem).split())
        super().__init__(f"{self.source}: {self.problem}")


class InputError(M3Error, ValueError):
    """Bad input or usage: a file, folder, option or argument, or an output that cannot be
    written. Exit 2."""

    exit_code = EXIT_BAD_INPUT


class BuildFailed(M3Error):
    """A build that started could not finish (training diverged, nothing left after pruning, the
    memory could not be written). Exit 3; the message says what was kept (the checkpoint)."""

    exit_code = EXIT_BUILD_FAILED


class SafetyRefusal(M3Error):
    """A safety check refused to move the robot (limits, a moving arm, no confirmation for the
    real hardware). Exit 4."""

    exit_code = EXIT_SAFETY_REFUSAL


class MissingDependency(M3Error):
    """An optional package is not installed. Exit 5; the message ends with the command that
    installs it (``pip install 'm3_memory[extra]'``, or the package's own when it has no extra)."""

    exit_code = EXIT_MISSING_DEPENDENCY

    def __init__(self, source: str | Path, problem: str, extra: str | None = None, package: str | None = None):
        install = f"pip install 'm3_memory[{extra}]'" if extra else f"pip install {package}" if package else ""
        super().__init__(source, f"{problem}; install it with: {install}" if install else problem)


# import name -> the m3_memory extra that installs it (pyproject.toml [project.optional-dependencies])
EXTRAS = {"pyrealsense2": "realsense"}


def missing_dependency(err: ImportError, what: str, name: str | None = None) -> MissingDependency:
    """An :class:`ImportError` of an optional package (``name``; default: the module that failed)
    as :class:`MissingDependency` for ``what`` (e.g. "reading .bag recordings"), naming the extra or
    the package to install."""
    name = name or (err.name or "").split(".")[0] or first_line(err)
    broken = err.name is None or err.name.split(".")[0] != name  # installed, but it failed to load
    problem = f"cannot be imported ({first_line(err)})" if broken else "is not installed"
    return MissingDependency(name, f"{problem}; it is needed for {what}", extra=EXTRAS.get(name),
                             package=None if name in EXTRAS else name)


_OS_PROBLEMS = {
    errno.ENOENT: "does not exist",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted (not writable here)",
    errno.EROFS: "is on a read-only file system",
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EISDIR: "is a directory, expected a file",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EEXIST: "already exists",
    errno.ENOTEMPTY: "already exists and is not empty",
    errno.ELOOP: "is a symbolic link loop",
    errno.ENAMETOOLONG: "file name too long",
    errno.EIO: "input/output error",
}


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none)."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def os_problem(err: OSError) -> str:
    """What an :class:`OSError` means, in a few words (no path)."""
    return _OS_PROBLEMS.get(err.errno or -1, os.strerror(err.errno) if err.errno else str(err) or type(err).__name__)


def missing_reason(path: str | Path) -> str:
    """Why ``path`` cannot be opened, for a path where ``exists()`` is False: a symbolic link loop,
    a broken link (and where it points), a denied permission, or plainly "does not exist"."""
    try:
        os.stat(path)
    except OSError as err:
        if err.errno == errno.ENOENT and os.path.islink(path):
            return f"is a broken symbolic link (to {os.readlink(path)})"
        if err.errno == errno.ENOENT and any(os.path.islink(p) for p in Path(path).parents):
            return "does not exist (a folder on its path is a broken symbolic link)"
        return os_problem(err)
    return "cannot be opened"


def input_error_from_os(err: OSError, fallback: str | Path = "file") -> InputError:
    """An :class:`OSError` as the one-line error naming its path (or ``fallback``)."""
    where = err.filename if err.filename is not None else fallback
    return InputError(where, os_problem(err))


def describe(err: BaseException) -> tuple[str, int] | None:
    """(one line, exit code) for the failures of files and libraries the CLI maps; None for
    anything else (an internal error)."""
    if isinstance(err, M3Error):
        return str(err), err.exit_code
    if isinstance(err, OSError) and err.errno is not None:
        return str(input_error_from_os(err)), EXIT_BAD_INPUT
    if isinstance(err, ImportError):
        return str(missing_dependency(err, "this command")), EXIT_MISSING_DEPENDENCY
    module = type(err).__module__ or ""
    for library, what in (("safetensors", "not a readable safetensors file"), ("PIL", "not a readable image"),
                          ("open3d", "open3d cannot read it"), ("pyrealsense2", "librealsense cannot read it")):
        if module.startswith(library):
            return f"{what}: {first_line(err)}", EXIT_BAD_INPUT
    return None


class Terminated(BaseException):
    """Raised by the CLI's SIGTERM handler outside a build's training loop (like KeyboardInterrupt
    for SIGINT); the CLI exits 143."""
