"""Progress of long work: a tqdm bar on a terminal, a log line at least every 30 s otherwise.

Off a terminal (a launch file, CI, ``m3 build ... > build.log 2>&1``) a bar would print nothing
useful, so :class:`Progress` logs ``<what>: <done>/<total> <unit> (<percent>), <postfix>, ETA
<time>`` on the ``m3.progress`` logger instead, at most every ``every_s`` seconds and when the
work ends (``$M3_PROGRESS_EVERY_S`` overrides the 30 s). The ``m3`` command shows these lines
on stderr unless ``--quiet``.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

log = logging.getLogger("m3.progress")
LOG_EVERY_S = 30.0  # longest silence off a terminal, seconds


def log_every_s() -> float:
    """Seconds between progress lines off a terminal: ``$M3_PROGRESS_EVERY_S`` or 30."""
    try:
        return max(0.0, float(os.environ.get("M3_PROGRESS_EVERY_S", LOG_EVERY_S)))
    except ValueError:
        return LOG_EVERY_S

T = TypeVar("T")


def on_terminal() -> bool:
    """Whether stderr is a terminal (where a tqdm bar is drawn)."""
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


class Progress:
    """Count ``total`` steps of ``desc``: a bar on a terminal, log lines off it, nothing when
    ``show`` is False. ``every_s``: the longest time between two log lines (seconds; default
    :func:`log_every_s`)."""

    def __init__(self, total: int | None, desc: str, unit: str = "it", initial: int = 0, show: bool = True,
                 every_s: float | None = None, leave: bool = True):
        self.total, self.desc, self.unit = total, desc, unit
        self.every_s = log_every_s() if every_s is None else every_s
        self.n = self.start_n = initial
        self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=leave,
                        disable=not (show and on_terminal()))
        self.logs = show and not on_terminal()
        self.start = self.last = time.monotonic()
        self.postfix: dict[str, str] = {}

    def update(self, n: int = 1, **postfix: object) -> None:
        """Advance by ``n`` steps; ``postfix`` (e.g. loss=0.12) is shown with the count."""
        self.n += n
        if postfix:
            self.postfix.update({k: str(v) for k, v in postfix.items()})
            self.bar.set_postfix(self.postfix, refresh=False)
        self.bar.update(n)
        if self.logs and time.monotonic() - self.last >= self.every_s:
            self._log()

    def line(self) -> str:
        """The progress line: count, percent, postfix, elapsed time and ETA."""
        elapsed = time.monotonic() - self.start
        done = self.n - self.start_n
        parts = [f"{self.desc}: {self.n}/{self.total if self.total is not None else '?'} {self.unit}"]
        if self.total:
            parts[0] += f" ({100 * self.n / self.total:.0f}%)"
        parts += [f"{k} {v}" for k, v in self.postfix.items()]
        parts.append(f"elapsed {_duration(elapsed)}")
        if self.total and done > 0 and self.n < self.total:
            parts.append(f"ETA {_duration(elapsed / done * (self.total - self.n))}")
        return ", ".join(parts)

    def _log(self) -> None:
        self.last = time.monotonic()
        log.info("%s", self.line())

    def close(self) -> None:
        """End the bar; off a terminal, log the final count when anything was logged or took long."""
        self.bar.close()
        if self.logs and (self.last > self.start or time.monotonic() - self.start >= self.every_s):
            self._log()
        self.logs = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress(items: Iterable[T], desc: str, total: int | None = None, unit: str = "it", show: bool = True,
             leave: bool = True) -> Iterator[T]:
    """Iterate ``items`` with a :class:`Progress` (``total`` defaults to ``len(items)`` when known)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Progress(total, desc, unit, show=show, leave=leave) as bar:
        for item in items:
            yield item
            bar.update()
