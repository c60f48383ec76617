"""Hand-made memories for tests whose answer must be known exactly."""

from __future__ import annotations

from pathlib import Path

TINY_BUILD = dict(iterations=40, max_side=160, max_gaussians=15_000, densify_start=10, densify_stop=30,
                  densify_every=10, eval_every=20, checkpoint_every=20)  # training options of the small test builds


def duck_on_table_memory(out: Path, table, duck, scale: float) -> Path:
    """Save a *.m3 memory of Gaussians at ``table`` [k, 3] and ``duck`` [m, 3] (world, m; isotropic
    ``scale`` m, opaque) whose two-dimensional queries decode exactly to the fixture CLIP's text
    embeddings of "wooden table" and "yellow bath duck": the query path finds the duck there."""
    import numpy as np
    import torch

    from m3_memory.foundation import load_model
    from m3_memory.memory.artifact import Gaussians, Memory, ModelEntry, save_memory
    from m3_memory.memory.attention import MemoryBank

    model = load_model("clip-fixture")
    emb = model.encode_text(["yellow bath duck", "wooden table"]).float()  # [2, d]; query e_k attends to component k
    means = torch.tensor(np.r_[table, duck], dtype=torch.float32)
    n, k = len(means), len(table)
    queries = torch.zeros(n, 2)
    queries[:k, 1], queries[k:, 0] = 1.0, 1.0
    gaussians = Gaussians(means=means, quats=torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
                          log_scales=torch.full((n, 3), float(np.log(scale))), opacity_logits=torch.full((n,), 4.0),
                          sh_dc=torch.zeros(n, 3), sh_rest=torch.zeros(n, 3, 3), queries=queries)
    memory = Memory(gaussians, {"clip": MemoryBank("clip", emb, emb.clone())},
                    [ModelEntry("clip", emb.shape[1], (0, 2), 0.9, 0.05, False, model.checkpoint)])
    return save_memory(out, memory)
