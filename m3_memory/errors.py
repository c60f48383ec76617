"""The one error type users see: a bad input, named, with what is wrong."""

from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """A problem with a user's input (file, folder, argument).

    ``str(err)`` is one line: ``<input>: <what is wrong>``. The CLI prints it and exits 2.
    """

    def __init__(self, source: str | Path, problem: str):
        self.source = str(source)
        self.problem = " ".join(str(problem).split())
        super().__init__(f"{self.source}: {self.problem}")
