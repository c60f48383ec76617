"""Output locations checked before the work, and exclusive outputs while it runs.

:func:`check_output` is what every command calls on its output before any long work: the
place must be writable (tried with a probe file, which also catches read-only mounts and
root-owned trees where permission bits say nothing), must have room for a size estimate, and
must not be a file where a folder is expected (or the reverse), nor an existing output unless
that is allowed. :class:`OutputLock` makes an output exclusive to one process.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from m3_memory.errors import InputError, os_problem

log = logging.getLogger("m3")

MB = 1 << 20


class Staged:
    """An output (a file or a folder) written whole or not at all.

    :attr:`tmp` is a path that does not exist yet, in a private folder beside ``path``
    (``<prefix>XXXXXXXX.tmp``, default prefix ``.<name>-``); the writer creates the output there.
    :meth:`commit` renames it to ``path``: replacing what is there when ``replace``, else refusing
    with FileExistsError (also when it appeared meanwhile). :meth:`discard` removes it. As a
    ``with`` block (``with Staged(path) as tmp:``) it commits when the block ends without an
    error and discards otherwise, so ``path`` is either the new output or untouched.
    """

    def __init__(self, path: str | Path, replace: bool = True, prefix: str | None = None):
        self.path, self.replace = Path(path), replace
        self.work = Path(tempfile.mkdtemp(prefix=f".{self.path.name}-" if prefix is None else prefix, suffix=".tmp",
                                          dir=self.path.parent))
        self.tmp = self.work / self.path.name

    def commit(self) -> Path:
        """Move the output into place (and the private folder away); returns ``path``."""
        path, old = self.path, self.work / ".old"
        try:
            if not os.path.lexists(self.tmp):
                raise FileNotFoundError(errno.ENOENT, "nothing was written", str(self.tmp))
            if os.path.lexists(path) and not self.replace:
                raise FileExistsError(errno.EEXIST, "exists and is not replaced", str(path))
            if self.replace and os.path.isdir(path) and not os.path.islink(path):
                os.replace(path, old)  # a folder cannot be renamed over a non-empty one
            try:
                (os.replace if self.replace else os.rename)(self.tmp, path)
            except OSError as err:
                if os.path.lexists(old):
                    os.replace(old, path)  # the previous output back
                if not self.replace and err.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
                    raise FileExistsError(errno.EEXIST, "appeared while writing and is not replaced", str(path)) from None
                raise
        finally:
            self.discard()
        return path

    def discard(self) -> None:
        """Remove the private folder and whatever was written there."""
        shutil.rmtree(self.work, ignore_errors=True)

    def __enter__(self) -> Path:
        return self.tmp

    def __exit__(self, kind, err, traceback) -> None:
        if kind is None:
            self.commit()
        else:
            self.discard()


def write_atomic(path: Path, write: Callable[[Path], object], prefix: str | None = None) -> None:
    """``write(tmp_path)`` the file ``path`` through :class:`Staged` (replacing what is there)."""
    with Staged(path, prefix=prefix) as tmp:
        write(tmp)


def beside(source: str | Path, what: str, suffix: str = "") -> Path:
    """Where a command writes when no output is given: ``<folder of source>/<stem of
    source>_<what><suffix>`` (``scene.m3`` -> ``scene_query``), beside its input and never in the
    working directory. ``source`` is made absolute (not resolving links), so the path printed
    says where the output is from anywhere."""
    source = Path(os.path.abspath(source))
    return source.parent / f"{source.stem}_{what}{suffix}"


def nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists (``.`` for a relative path with none)."""
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            return candidate
    return Path(".")


def check_output(path: str | Path, *, folder: bool = True, allow_existing: bool = False, need_bytes: int = 0,
                 existing_hint: str = "pass --overwrite to replace it") -> Path:
    """Check an output location before the work that fills it; return it as a Path.

    folder: the output is a folder (else a file). allow_existing: an existing output of the
    right kind may be reused/replaced. need_bytes: free space required (bytes, a conservative
    estimate of what will be written). Raises a one-line :class:`InputError` naming the path.
    """
    path = Path(path)
    if os.path.lexists(path):
        try:
            path.stat()
        except OSError as err:  # a dangling link or a link loop
            raise InputError(path, os_problem(err) if err.errno == errno.ELOOP else "is a broken symbolic link") from None
        if folder and not path.is_dir():
            raise InputError(path, "is a file, expected a folder")
        if not folder and path.is_dir():
            raise InputError(path, "is a folder, expected a file")
        if not allow_existing:
            raise InputError(path, f"exists; {existing_hint}")
    base = path if folder and path.is_dir() else nearest_existing(path.parent)
    if not base.is_dir():
        raise InputError(base, f"is a file, so {path} cannot be created below it")
    probe_dir = base
    try:
        fd, probe = tempfile.mkstemp(prefix=".m3-probe-", dir=probe_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise InputError(path, f"cannot be written: {os_problem(err)}") from None
    free = shutil.disk_usage(probe_dir).free
    if need_bytes > free:
        raise InputError(path, f"needs about {need_bytes / MB:.0f} MB but only {free / MB:.0f} MB are free there")
    return path


@contextmanager
def parent_folders(path: Path) -> Iterator[None]:
    """Create the missing folders above ``path`` for a ``with`` block; when the block fails, the
    ones it created are removed again if still empty (a failed command leaves nothing behind)."""
    missing = [p for p in reversed(path.parents) if not os.path.lexists(p)]
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        for folder in reversed(missing):
            try:
                folder.rmdir()
            except OSError:
                break
        raise


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists (on this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def lock_path(out: str | Path) -> Path:
    """``<out>.lock``: the lock file of output ``out``."""
    out = Path(out)
    return out.with_name(out.name + ".lock")


class OutputLock:
    """An exclusive lock on an output for the lifetime of a ``with`` block.

    ``<out>.lock`` is held with ``fcntl.flock`` (released by the kernel when the process dies)
    and holds the holder's PID. A second process is refused at once with a one-line
    :class:`InputError` naming that PID; a lock file left by a dead process is taken over with
    a warning.
    """

    def __init__(self, out: str | Path, what: str = "build"):
        self.out, self.path, self.what = Path(out), lock_path(out), what
        self.fd: int | None = None

    def __enter__(self) -> "OutputLock":
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise InputError(self.out, f"another {self.what} (PID {holder}) is writing it; wait for it to end or "
                                 "choose another --out") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:  # the previous holder removed it between our open and flock
                same = False
            if same:
                break
            os.close(fd)
        previous = os.pread(fd, 64, 0).decode(errors="replace").strip()
        if previous.isdigit() and int(previous) != os.getpid():
            state = "is no longer running" if not pid_alive(int(previous)) else "did not remove it"
            log.warning("%s: taking over the lock left by %s PID %s, which %s", self.path, self.what, previous, state)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is None:
            return
        try:
            os.unlink(self.path)  # while still holding it: a waiting process re-checks the inode
        except FileNotFoundError:
            pass
        os.close(self.fd)
        self.fd = None
