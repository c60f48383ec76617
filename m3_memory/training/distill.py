"""A Feature-3DGS-style distillation baseline, trained with the same budget as a memory.

Each Gaussian carries a low-dimensional feature ``f [l]`` instead of a principal query; the
rendered feature map goes through a learned linear decoder (Feature 3DGS's 1x1 convolution,
``[l] -> [d]``) to the foundation model's space. Everything else is the memory build's: the
same frames and cached features, the same initial Gaussians, colour loss, feature loss
(cosine + MSE on the same sampled pixels), learning rates, density control and iterations.
Only the decoder differs, so the comparison isolates memory attention over principal scene
components against a learned projection.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import torch

from m3_memory.errors import InputError
from m3_memory.foundation import FoundationModel
from m3_memory.memory.artifact import Gaussians, Memory
from m3_memory.training.build import BuildStopped, prepare, run_training
from m3_memory.training.config import TrainConfig
from m3_memory.training.trainer import Trainer, scene_extent

DECODER_LR = 1e-3  # Adam step of the linear decoder (the projection's rate, TrainConfig.lr_projection)


class DistillTrainer(Trainer):
    """:class:`Trainer` whose per-model decoder is ``torch.nn.Linear(feature_dim, d)``.

    gaussians: the start (their queries are replaced by N(0, 1) features of ``feature_dim``
    per model); feature_dims: model name -> d."""

    def __init__(self, gaussians: Gaussians, feature_dims: dict[str, int], cfg: TrainConfig, extent: float,
                 feature_dim: int, device: torch.device | str = "cpu") -> None:
        if feature_dim < 1:
            raise InputError("baseline feature dimension", f"must be >= 1, got {feature_dim}")
        g = torch.Generator().manual_seed(cfg.seed)
        names = list(feature_dims)
        features = torch.randn(len(gaussians), feature_dim * len(names), generator=g)  # [N, l * models]
        start = Gaussians(gaussians.means, gaussians.quats, gaussians.log_scales, gaussians.opacity_logits,
                          gaussians.sh_dc, gaussians.sh_rest, features)
        slices = {n: (k * feature_dim, (k + 1) * feature_dim) for k, n in enumerate(names)}
        super().__init__(start, {}, slices, cfg, extent, device)
        torch.manual_seed(cfg.seed)  # nn.Linear's own initialisation
        self.linear = {n: torch.nn.Linear(feature_dim, d).to(self.device) for n, d in feature_dims.items()}
        self.decoders = dict(self.linear)
        for name, layer in self.linear.items():
            self.optimizers[f"decoder.{name}"] = torch.optim.Adam(
                [{"params": list(layer.parameters()), "lr": DECODER_LR, "name": f"decoder.{name}"}])
        self.feature_dim = feature_dim

    def parameter_count(self) -> int:
        """Numbers stored: per-Gaussian parameters plus the decoders' weights and biases."""
        decoders = sum(p.numel() for layer in self.linear.values() for p in layer.parameters())
        return self.gaussians().parameter_count() + decoders

    @torch.no_grad()
    def features_at(self, T_world_cam: np.ndarray, K: np.ndarray, width: int, height: int, model: str) -> torch.Tensor:
        """Decoded features [H, W, d] of ``model`` at a camera (T_world_cam [4, 4] m, OpenCV K),
        the learned background composited where no Gaussian is (as in training)."""
        _, features, _, _ = self.render_camera(T_world_cam, K, width, height)
        a, b = self.slices[model]
        return self.linear[model](features[..., a:b])

    def state_dict(self) -> dict:
        return {**super().state_dict(), "decoders": {n: layer.state_dict() for n, layer in self.linear.items()}}

    def load_state_dict(self, state: dict) -> None:
        for name, layer in self.linear.items():
            layer.load_state_dict(state["decoders"][name])  # in place: the optimiser keeps its tensors
        super().load_state_dict(state)


def memory_budget(memory: Memory) -> TrainConfig:
    """The config a memory was built with, at the iterations it actually trained: the baseline's budget."""
    if "config" not in memory.training:
        raise InputError("memory", "records no training config: cannot give the baseline its budget")
    cfg = TrainConfig.from_json(memory.training["config"])
    return cfg.with_(iterations=int(memory.training.get("iterations", cfg.iterations)))


def train_baseline(recording: str | Path, cfg: TrainConfig, models: list[FoundationModel], feature_dim: int = 64,
                   cache_root: str | Path | None = None, show_progress: bool = True, device: torch.device | str = "cpu",
                   **recording_options
                   ) -> tuple[DistillTrainer, dict[str, float]]:
    """Train the baseline for ``models`` on ``recording`` under ``cfg`` (a memory's own config gives
    the same budget). Returns the trainer and its held-out metrics (PSNR, cosine, L2 per model)."""
    prep = prepare(recording, cfg, models, cache_root, show_progress, **recording_options)
    train, test = prep.train, prep.test
    dims = {fm.name: fm.feature_dim for fm in prep.models}
    trainer = DistillTrainer(prep.gaussians, dims, cfg, scene_extent(train), feature_dim, device)
    with tempfile.TemporaryDirectory(prefix="m3-baseline-") as tmp:
        try:
            run_training(trainer, train, test, cfg, Path(tmp) / "baseline.ckpt", {}, [], lambda *a: None, None,
                         show_progress)
        except BuildStopped:
            raise KeyboardInterrupt from None  # nothing to resume: the baseline is rebuilt on the next run
    metrics = trainer.evaluate(test)
    if not all(math.isfinite(v) for v in metrics.values()):
        raise InputError("baseline", f"training diverged (held-out {metrics})")
    return trainer, metrics
