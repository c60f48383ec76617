"""Pictures of a build: held-out views (rendered vs ground truth) and the training curve."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from m3_memory.memory.extract import pca_colors  # noqa: E402
from m3_memory.recording.inspect import contact_sheet  # noqa: E402
from m3_memory.training.losses import lookup, map_pixel_centres  # noqa: E402
from m3_memory.training.trainer import Trainer, View  # noqa: E402


def _depth_image(depth: np.ndarray, vmax: float) -> np.ndarray:
    """Depth [H, W] m -> turbo-coloured uint8 [H, W, 3]; invalid (0) black."""
    rgb = (plt.get_cmap("turbo")(np.clip(depth / vmax, 0, 1))[..., :3] * 255).astype(np.uint8)
    rgb[depth <= 0] = 0
    return rgb


def _u8(rgb: torch.Tensor) -> np.ndarray:
    return (rgb.detach().cpu().clamp(0, 1).numpy() * 255).astype(np.uint8)


@torch.no_grad()
def heldout_sheet(trainer: Trainer, views: list[View], path: Path, model: str | None, max_views: int = 4) -> None:
    """One row per held-out view: colour GT | render, depth GT | render, features GT | decoded."""
    chosen = [views[i] for i in np.linspace(0, len(views) - 1, min(max_views, len(views))).round().astype(int)]
    rows, titles, gts, preds = [], [], [], []
    for view in chosen:
        rgb, queries, depth, _ = trainer.render(view, depth=True)
        vmax = float(np.percentile(view.depth[view.depth > 0].numpy(), 99)) if (view.depth > 0).any() else 3.0
        row = [_u8(view.rgb), _u8(rgb), _depth_image(view.depth.numpy(), vmax), _depth_image(depth.cpu().numpy(), vmax)]
        if model is not None:
            target = view.features[model]
            h, w = target.shape[:2]
            height, width = queries.shape[:2]
            uv = map_pixel_centres(h, w, width, height)
            a, b = trainer.slices[model]
            q = lookup(queries[..., a:b].cpu(), uv, width, height)
            gts.append(target.float())
            preds.append(trainer.decoders[model](q.to(trainer.device)).cpu().reshape(h, w, -1))
        rows.append(row)
        titles.append(view.name)
    legend = [("colour GT | render, depth GT | render", (0, 0, 0))]
    if model is not None:
        colored = pca_colors(gts + preds)
        size = rows[0][0].shape[1::-1]
        for i, row in enumerate(rows):
            for img in (colored[i], colored[len(rows) + i]):
                row.append(np.asarray(Image.fromarray(img).resize(size, Image.NEAREST)))
        legend.append((f"| {model} features GT | decoded from memory (shared PCA colours)", (0, 0, 0)))
    contact_sheet(rows, titles, path, legend)


def training_curve(history: list[dict], path: Path) -> None:
    """Loss per iteration and held-out PSNR / feature cosine at evaluation points -> PNG."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    its = [h["iteration"] for h in history if "loss" in h]
    ax1.plot(its, [h["loss"] for h in history if "loss" in h], lw=0.6, color="tab:blue")
    ax1.set_xlabel("iteration")
    ax1.set_ylabel("training loss")
    ax1.set_yscale("log")
    evals = [h for h in history if "psnr" in h]
    if evals:
        ax2.plot([h["iteration"] for h in evals], [h["psnr"] for h in evals], "o-", color="tab:red", label="PSNR (dB)")
        ax2.set_ylabel("held-out PSNR (dB)")
        ax3 = ax2.twinx()
        for key in sorted({k for h in evals for k in h if k.startswith("cos.")}):
            ax3.plot([h["iteration"] for h in evals], [h[key] for h in evals], "s--", label=f"{key[4:]} feature cosine")
        ax3.set_ylabel("held-out feature cosine")
        ax3.legend(loc="lower right", fontsize=8)
    ax2.set_xlabel("iteration")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
