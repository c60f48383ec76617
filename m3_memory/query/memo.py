"""Per-memory store of what queries derive from a loaded memory and reuse (k-d tree, decoded
Gaussian features, rendered views), so that text-independent work is done once.

A memory's store lives as long as its ``means`` tensor; loaded memories are not edited in place
(what could be, such as the rendered views, also keys on the tensors' version counters).
"""

from __future__ import annotations

import weakref

from m3_memory.memory.artifact import Memory

_STORES: dict[int, tuple[weakref.ref, dict]] = {}  # id(means) -> (the tensor, what was computed from its memory)


def memo(memory: Memory) -> dict:
    """The store of ``memory`` (a dict, empty at first)."""
    means = memory.gaussians.means
    ref, store = _STORES.get(id(means), (None, None))
    if ref is None or ref() is not means:
        store = {}
        _STORES[id(means)] = (weakref.ref(means, lambda _, key=id(means), stores=_STORES: stores.pop(key, None)), store)
    return store
