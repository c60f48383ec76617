"""Where each principal scene component came from: the memory's attention trace.

Algorithm 1 keeps rows of the flattened feature maps ``[n*h*w, d]`` of the training views;
row ``k`` of a bank is the feature at one pixel of one view's feature map. A memory records
that origin per component, so a rendered feature can be explained by the stored features
memory attention drew on and the image patches they were computed from (the paper's
"pixel trace").

On disk: ``<model>.sources`` ``[t, 6]`` int32 in ``memory.safetensors`` (columns
:data:`COLUMNS`) and ``"trace": {"version": TRACE_VERSION, "columns": [...]}`` in
``meta.json``. Memories written before the trace have neither and load without it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from m3_memory.errors import InputError

TRACE_VERSION = 1
COLUMNS = ("view", "frame", "row", "col", "map_height", "map_width")


@dataclass
class ComponentSources:
    """Origins of one model's principal scene components, one row per component ``[t, 6]``
    (int): ``view`` (index into ``Memory.cameras``), ``frame`` (index of that frame in the
    source recording, counting every frame it yields), ``row``/``col`` (the pixel of the
    feature map, 0-based) and ``map_height``/``map_width`` (that feature map's size; the
    patch it covers in the ``width x height`` image is ``row * height / map_height`` ...)."""

    table: torch.Tensor  # [t, 6] int32

    def __post_init__(self) -> None:
        if self.table.ndim != 2 or self.table.shape[1] != len(COLUMNS):
            raise InputError("trace", f"sources must be [t, {len(COLUMNS)}], got {list(self.table.shape)}")
        self.table = self.table.to(torch.int32)

    def __len__(self) -> int:
        return self.table.shape[0]

    def column(self, name: str) -> np.ndarray:
        """One column [t] as numpy int."""
        return self.table[:, COLUMNS.index(name)].numpy().astype(np.int64)

    def patch_box(self, k: int, width: int, height: int) -> tuple[int, int, int, int]:
        """Component ``k``'s feature-map pixel as an image box ``(left, top, right, bottom)`` in
        pixels of a ``width x height`` image of its view (right/bottom exclusive)."""
        _, _, r, c, mh, mw = (int(v) for v in self.table[k])
        return (int(np.floor(c * width / mw)), int(np.floor(r * height / mh)),
                int(np.ceil((c + 1) * width / mw)), int(np.ceil((r + 1) * height / mh)))


def sources_of_rows(kept: torch.Tensor, map_shapes: Sequence[tuple[int, int]], views: Sequence[int],
                    frames: Sequence[int]) -> ComponentSources:
    """Origins of the kept rows ``kept [t]`` (indices into the concatenation of the flattened
    feature maps, in order) of maps with ``map_shapes`` ``(h, w)`` taken from memory views
    ``views`` that are recording frames ``frames`` (one entry per map)."""
    if not len(map_shapes) == len(views) == len(frames):
        raise InputError("trace", "one view and one frame index per feature map")
    sizes = torch.tensor([h * w for h, w in map_shapes], dtype=torch.long)  # [n]
    starts = torch.cumsum(sizes, 0) - sizes  # [n]
    kept = kept.long()
    if kept.numel() and (int(kept.min()) < 0 or int(kept.max()) >= int(sizes.sum())):
        raise InputError("trace", "kept rows outside the feature maps")
    m = torch.searchsorted(starts, kept, right=True) - 1  # [t] which map
    shapes = torch.tensor(list(map_shapes), dtype=torch.long).reshape(-1, 2)  # [n, 2]
    local = kept - starts[m]
    w = shapes[m, 1]
    table = torch.stack([torch.tensor(list(views), dtype=torch.long)[m], torch.tensor(list(frames), dtype=torch.long)[m],
                         local // w, local % w, shapes[m, 0], w], dim=1)  # [t, 6]
    return ComponentSources(table)


def trace_meta() -> dict:
    """The ``meta.json`` entry that says the memory holds a trace and in which layout."""
    return {"version": TRACE_VERSION, "columns": list(COLUMNS)}


def read_trace(where: object, meta: dict | None, tensors: dict[str, torch.Tensor], components: dict[str, int]
               ) -> dict[str, ComponentSources]:
    """The traces of the models in ``components`` (name -> bank rows) from a loaded ``meta.json``
    entry and tensors ({} when the memory has none); a trace from a newer m3, with another layout
    or of another length than its bank is an :class:`InputError` naming ``where``."""
    if meta is None:
        return {}
    if not isinstance(meta, dict) or int(meta.get("version", 0)) > TRACE_VERSION:
        raise InputError(where, f"trace written by a newer m3 (version {meta.get('version') if isinstance(meta, dict) else meta}); "
                         "upgrade m3 to read it")
    if list(meta.get("columns", [])) != list(COLUMNS):
        raise InputError(where, f"trace columns {meta.get('columns')} are not {list(COLUMNS)}")
    out = {}
    for name, rows in components.items():
        table = tensors.get(f"{name}.sources")
        if table is not None:
            if table.ndim != 2 or table.shape[0] != rows:
                raise InputError(where, f"trace of {name} has shape {list(table.shape)}, its bank {rows} components")
            out[name] = ComponentSources(table)
    return out
