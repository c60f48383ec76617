"""DINOv2 dense features through timm: last-layer patch tokens after the final norm."""

from __future__ import annotations

import pickle

import numpy as np
import timm
import torch
from safetensors import SafetensorError
from timm.models import get_pretrained_cfg

from m3_memory.device import autocast
from m3_memory.errors import InputError, first_line
from m3_memory.foundation.base import (
    FoundationModel,
    check_rgb,
    file_identity,
    hub_cached_file,
    hub_download,
    model_input,
    register,
    weights_path_or_none,
)

# Checkpoint files timm looks for in a hub repo, safetensors first.
_HUB_FILENAMES = ("model.safetensors", "pytorch_model.bin")


DEFAULT_ARCH = "vit_large_patch14_dinov2.lvd142m"


def default_weights(arch: str = DEFAULT_ARCH) -> tuple[str, str | None]:
    """(the timm name of DINOv2's default weights, their file in the local hub cache or None)."""
    cfg = get_pretrained_cfg(arch)
    names = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else _HUB_FILENAMES
    return arch, hub_cached_file(cfg.hf_hub_id, names) if cfg.hf_hub_id else None


@register("dinov2")
class DINOv2Model(FoundationModel):
    """DINOv2 ViT from timm, built with ``dynamic_img_size=True`` so any patch grid works
    (timm resamples the positional embedding bicubically per input).

    weights: a checkpoint file (timm/DINOv2 state dict, loaded through timm's own
    ``pretrained_cfg_overlay=dict(file=...)`` path with its key filters), a timm pretrained
    tag (``arch`` becomes ``<arch without tag>.<tag>``), or None for the tag in ``arch``
    (fetched from the hub cache; downloaded only when the hub is reachable).
    arch: timm model name. image_size: short side in pixels (default: the model's own size,
    518 for the DINOv2 checkpoints). model_kwargs: passed to ``timm.create_model`` (tests
    use them to build small variants, e.g. ``depth=2, img_size=56``).
    Dense path: ``forward_features`` (patch embed, pos-embed, all blocks, final norm), drop
    the class and register tokens -> [gh, gw, c].
    """

    name = "dinov2"
    default_arch = DEFAULT_ARCH

    def __init__(self, weights: str | None = None, device: str = "cpu", arch: str | None = None,
                 image_size: int | None = None, **model_kwargs):
        arch = arch or self.default_arch
        path = weights_path_or_none(weights)
        if path is None and weights:
            arch = f"{arch.split('.')[0]}.{weights}"
        if not timm.is_model(arch):
            raise InputError(arch, "not a timm model name (timm.list_models('*dinov2*') lists the DINOv2 ones)")
        if path is None:
            cfg = get_pretrained_cfg(arch)
            if cfg is None or not cfg.hf_hub_id:
                raise InputError(arch, "timm has no hub weights for this name; pass --weights FILE")
            names = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else _HUB_FILENAMES
            checkpoint_file = hub_download(cfg.hf_hub_id, names, model=f"{self.name} ({arch})")
            self.checkpoint = arch
        else:
            checkpoint_file = str(path)
            self.checkpoint = f"{arch.split('.')[0]}:{file_identity(path)}"
        try:
            model = timm.create_model(arch, pretrained=True, pretrained_cfg_overlay=dict(file=checkpoint_file),
                                      dynamic_img_size=True, num_classes=0, **model_kwargs)
        except (RuntimeError, ValueError, KeyError, OSError, SafetensorError, pickle.UnpicklingError, EOFError) as err:
            raise InputError(checkpoint_file, f"cannot load as {arch} weights: {first_line(err)}") from None
        self.model = model.to(device).eval()
        self.arch = arch
        self.device = torch.device(device)
        self.feature_dim = int(model.num_features)
        self.mean, self.std = tuple(model.pretrained_cfg["mean"]), tuple(model.pretrained_cfg["std"])
        self.patch = int(model.patch_embed.patch_size[0])
        self.image_size = int(image_size or min(model.patch_embed.img_size))

    def encode_image(self, rgb: np.ndarray) -> torch.Tensor:
        """Last-layer patch tokens: uint8 [H, W, 3] -> float32 [gh, gw, c] on the CPU."""
        check_rgb(rgb, self.name)
        x = model_input(rgb, self.image_size, self.patch, self.mean, self.std, self.device)  # [1, 3, gh*p, gw*p]
        gh, gw = x.shape[-2] // self.patch, x.shape[-1] // self.patch
        with torch.inference_mode(), autocast(self.device):  # bf16 on CUDA, fp32 on the CPU
            tokens = self.model.forward_features(x)  # [1, prefix + gh*gw, c], after the final norm
        return tokens[0, self.model.num_prefix_tokens:].reshape(gh, gw, -1).float().cpu()
