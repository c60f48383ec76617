"""Which views of a recording train the memory and which are held out to score it: one rule for
the build, ``m3 features`` (whose bank must be the build's) and evaluation. Pure Python, so the
training options can name its default without importing torch."""

from __future__ import annotations

HELD_OUT_EVERY = 8  # every 8th view from the first is held out


def split_views(count: int, test_every: int = HELD_OUT_EVERY) -> tuple[list[int], list[int]]:
    """Positions (0 .. count - 1) of the training and the held-out views: every
    ``test_every``-th view from the first is held out, none when there is only one view."""
    test = [i for i in range(count) if count > 1 and i % test_every == 0]
    held = set(test)
    return [i for i in range(count) if i not in held], test
