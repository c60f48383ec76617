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

The three specific errors subclass :class:`InputError`, so code that catches it (the ROS
handlers) still catches them; their ``exit_code`` tells them apart.

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


class InputError(ValueError):
    """A problem with a user's input (file, folder, argument).

    ``str(err)`` is one line: ``<input>: <what is wrong>``. The CLI prints it and exits
    :attr:`exit_code`.
    """

    exit_code = EXIT_BAD_INPUT

    def __init__(self, source: str | Path, problem: str):
        self.source = str(source)
        self.problem = " ".join(str(problem).split())
        super().__init__(f"{self.source}: {self.problem}")


class BuildFailed(InputError):
    """A build that started could not finish (training diverged, nothing left after pruning, the
    memory could not be written). Exit 3; the message says what was kept (the checkpoint)."""

    exit_code = EXIT_BUILD_FAILED


class SafetyRefusal(InputError):
    """A safety check refused to move the robot (limits, a moving arm, no confirmation for the
    real hardware). Exit 4."""

    exit_code = EXIT_SAFETY_REFUSAL


class MissingDependency(InputError):
    """An optional package is not installed; the message says what to install. Exit 5."""

    exit_code = EXIT_MISSING_DEPENDENCY


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
    if isinstance(err, InputError):
        return str(err), err.exit_code
    if isinstance(err, OSError) and err.errno is not None:
        return str(input_error_from_os(err)), EXIT_BAD_INPUT
    if isinstance(err, ImportError):
        name = err.name or str(err)
        return f"{name}: not installed (pip install {name.split('.')[0]})", EXIT_MISSING_DEPENDENCY
    module = type(err).__module__ or ""
    for library, what in (("safetensors", "not a readable safetensors file"), ("PIL", "not a readable image"),
                          ("open3d", "open3d cannot read it"), ("pyrealsense2", "librealsense cannot read it")):
        if module.startswith(library):
            return f"{what}: {first_line(err)}", EXIT_BAD_INPUT
    return None


class Terminated(BaseException):
    """Raised by the CLI's SIGTERM handler outside a build's training loop (like KeyboardInterrupt
    for SIGINT); the CLI exits 143."""
