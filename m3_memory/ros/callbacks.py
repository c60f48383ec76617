"""What every m3 node callback needs, without rclpy: log an outcome, keep exceptions from
reaching the executor, one goal at a time, and an executor loop that survives a failing callback.

rclpy's loggers fix the severity (and the throttling options) of each call site on its first
call and raise ``ValueError`` ("Logger severity cannot be changed between calls") when the same
line logs at another severity. So a severity chosen at run time (``(log.info if ok else
log.warning)(...)``) kills the node on the first outcome of the other kind; :func:`log_outcome`
has one call site per severity, and :class:`CallbackGuard` logs every failure from one site.
Times are seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class Logger(Protocol):
    """The part of rclpy's RcutilsLogger the nodes use."""

    def info(self, message: str) -> Any: ...

    def warning(self, message: str) -> Any: ...

    def error(self, message: str) -> Any: ...


def log_outcome(logger: Logger, ok: bool, message: str, failure: str = "warning") -> None:
    """Log ``message`` at info when ``ok``, else at ``failure`` ("warning" or "error"); each
    severity from its own line, as rclpy requires."""
    if ok:
        logger.info(message)
    elif failure == "error":
        logger.error(message)
    else:
        logger.warning(message)


def describe(err: BaseException) -> str:
    """One line for an exception: its type and message."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


class CallbackGuard:
    """Runs callbacks so that no exception leaves them: a failure is logged at error (at most
    once per ``period`` seconds per callback name, with the count of those held back) and the
    callback's ``fallback`` answer is returned instead (an error response, a failed result, None)."""

    def __init__(self, logger: Logger, period: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.logger, self.period, self.clock = logger, period, clock
        self.lock = threading.Lock()
        self.last: dict[str, float] = {}  # callback name -> time of its last logged failure
        self.held: dict[str, int] = {}  # callback name -> failures not logged since

    def call(self, what: str, fn: Callable[[], T], fallback: Callable[[str], T]) -> T:
        """``fn()``; on an exception: report it and return ``fallback(one-line reason)``."""
        try:
            return fn()
        except Exception as err:  # noqa: BLE001 - a node callback must never raise into the executor
            reason = f"{what} failed: {describe(err)}"
            self.report(what, reason)
            return fallback(reason)

    def wrap(self, what: str, fn: Callable[..., Any]) -> Callable[..., None]:
        """A subscription callback that logs (throttled) instead of raising."""
        def callback(*args: Any) -> None:
            self.call(what, lambda: fn(*args), lambda reason: None)

        return callback

    def report(self, what: str, reason: str) -> None:
        """Log a failure of ``what``, throttled per name."""
        now = self.clock()
        with self.lock:
            last = self.last.get(what)
            if last is not None and now - last < self.period:
                self.held[what] = self.held.get(what, 0) + 1
                return
            held = self.held.pop(what, 0)
            self.last[what] = now
        more = f" ({held} more since the last report)" if held else ""
        self.logger.error(reason + more)


class OneAtATime:
    """Admits one goal at a time: the goal callback claims it (without waiting), the execute
    callback releases it when the goal ends. Claim and release may run on different threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()

    def claim(self) -> bool:
        """True (and busy from now on) when free; False while a goal holds it."""
        return self.lock.acquire(blocking=False)

    def release(self) -> None:
        self.lock.release()

    @property
    def busy(self) -> bool:
        return self.lock.locked()


def keep_spinning(spin_once: Callable[[], None], ok: Callable[[], bool], report: Callable[[BaseException], None],
                  stop: tuple[type[BaseException], ...] = ()) -> None:
    """Call ``spin_once`` while ``ok()``: an exception a callback raised into the executor is
    reported and spinning goes on; the exceptions in ``stop`` (shutdown) end the loop quietly.
    KeyboardInterrupt is not an Exception and ends it too (the caller shuts down)."""
    while ok():
        try:
            spin_once()
        except stop:
            return
        except Exception as err:  # noqa: BLE001 - one failing callback must not end the node
            report(err)
