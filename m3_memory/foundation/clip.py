"""CLIP and SigLIP dense features through open_clip.

CLIP ("clip", default ViT-L/14@336 with OpenAI weights): MaskCLIP-style value path in the
last block. SigLIP ("siglip", default so400m/14@384, WebLI weights): the attention-pooling
head applied to every patch on its own. Both give one vector per patch in the model's
image-text joint space, so :meth:`encode_text` embeddings compare with them by cosine.
"""

from __future__ import annotations

import os
import pickle
from abc import abstractmethod
from collections.abc import Callable
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from huggingface_hub import constants as hub_constants
from open_clip.constants import INCEPTION_MEAN, INCEPTION_STD, OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from open_clip.pretrained import download_pretrained
from open_clip.transformer import ResidualAttentionBlock, VisionTransformer
from safetensors import SafetensorError
from timm.layers import Format

from m3_memory.device import autocast
from m3_memory.errors import InputError, first_line
from m3_memory.foundation.base import (
    FoundationModel,
    check_rgb,
    file_identity,
    hub_cached_file,
    hub_reachable,
    model_input,
    register,
    weights_path_or_none,
)

# open_clip's default checkpoint file names in a hub repo, safetensors first (what open_clip tries).
_HUB_FILENAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


class OpenClipModel(FoundationModel):
    """An open_clip model: loading, preprocessing and the text tower; subclasses give the dense path.

    weights: a checkpoint file (``open_clip.create_model(arch, pretrained=FILE)``), an
    open_clip weights tag for ``arch`` (looked up in the local cache; downloaded only when
    the hub is reachable), or None for ``default_tag``. arch: an open_clip architecture name;
    a file gets the architecture's activation as named (OpenAI CLIP files need a
    ``-quickgelu`` arch, as the default is) and the family's mean/std.
    image_size: short side in pixels (default: the architecture's training size).
    """

    default_arch = ""
    default_tag = ""
    mean: tuple[float, float, float] = OPENAI_DATASET_MEAN  # used when weights come from a file
    std: tuple[float, float, float] = OPENAI_DATASET_STD

    def __init__(self, weights: str | None = None, device: str = "cpu", arch: str | None = None,
                 image_size: int | None = None):
        arch = arch or self.default_arch
        if arch not in open_clip.list_models():
            raise InputError(arch, f"not an open_clip architecture (open_clip.list_models() lists them); "
                                   f"default for {self.name} is {self.default_arch}")
        path = weights_path_or_none(weights)
        if path is not None:
            checkpoint_file, tag_cfg = str(path), {}
            self.checkpoint = f"{arch}:{file_identity(path)}"
        else:
            tag = weights or self.default_tag
            tag_cfg = open_clip.get_pretrained_cfg(arch, tag)
            if not tag_cfg:
                known = ", ".join(open_clip.list_pretrained_tags_by_model(arch)) or "none"
                raise InputError(tag, f"neither a weights file nor an open_clip tag for {arch} (tags: {known})")
            checkpoint_file = _tag_checkpoint(f"{self.name} ({arch} weights '{tag}')", tag_cfg)
            self.checkpoint = f"{arch}:{tag}"
        mean, std = tag_cfg.get("mean", self.mean), tag_cfg.get("std", self.std)
        try:
            model = open_clip.create_model(arch, pretrained=checkpoint_file, device=device,
                                           force_quick_gelu=bool(tag_cfg.get("quick_gelu", False)),
                                           force_preprocess_cfg={"mean": mean, "std": std})
        except (RuntimeError, ValueError, KeyError, OSError, SafetensorError, pickle.UnpicklingError, EOFError) as err:
            raise InputError(checkpoint_file, f"cannot load as {arch} weights: {first_line(err)}") from None
        self.model = model.eval()
        self.arch = arch
        self.device = torch.device(device)
        self.mean, self.std = tuple(mean), tuple(std)
        self.feature_dim = int(open_clip.get_model_config(arch)["embed_dim"])
        self._tokenizer: Callable[[list[str]], torch.Tensor] | None = None  # loaded on first use
        self._prepare_vision_tower()
        self.image_size = int(image_size or min(self._native_size()))

    @abstractmethod
    def _prepare_vision_tower(self) -> None:
        """Check the vision tower has the structure the dense path needs (else :class:`InputError`)
        and set it up for any input size."""

    def _native_size(self) -> tuple[int, int]:
        """(height, width) in pixels the vision tower was built for."""
        return tuple(self.model.visual.image_size)

    @abstractmethod
    def _patch(self) -> int:
        """Patch side in pixels."""

    @abstractmethod
    def _dense(self, x: torch.Tensor) -> torch.Tensor:
        """x: normalised float32 [1, 3, gh*p, gw*p]. Returns [gh, gw, d] in the joint space."""

    def encode_image(self, rgb: np.ndarray) -> torch.Tensor:
        """Dense joint-space features: uint8 [H, W, 3] -> float32 [gh, gw, d] on the CPU (not normalised)."""
        check_rgb(rgb, self.name)
        x = model_input(rgb, self.image_size, self._patch(), self.mean, self.std, self.device)
        with torch.inference_mode(), autocast(self.device):  # bf16 on CUDA, fp32 on the CPU
            return self._dense(x).float().cpu()

    @property
    def has_text(self) -> bool:
        return True

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """L2-normalised text embeddings: k strings -> float32 [k, d] on the CPU."""
        if isinstance(texts, str) or not texts or not all(isinstance(t, str) and t.strip() for t in texts):
            raise InputError(self.name, f"text queries must be a non-empty list of non-empty strings, got {texts!r}")
        if self._tokenizer is None:
            self._tokenizer = _tokenizer(self.arch, self.name)
        tokens = self._tokenizer(texts).to(self.device)  # [k, context_length] int
        with torch.inference_mode(), autocast(self.device):  # bf16 on CUDA, fp32 on the CPU
            return self.model.encode_text(tokens, normalize=True).float().cpu()


def _tokenizer(arch: str, model: str) -> Callable[[list[str]], torch.Tensor]:
    """open_clip's tokenizer for ``arch``; :class:`InputError` naming ``model`` when it cannot be loaded.

    CLIP's BPE tokenizer ships with open_clip. SigLIP's is a Hugging Face tokenizer: it needs
    the ``transformers`` package and the tokenizer files in the hub cache (or a reachable hub).
    """
    hf_name = open_clip.get_model_config(arch)["text_cfg"].get("hf_tokenizer_name", "")
    if hf_name and hub_cached_file(hf_name, ("tokenizer_config.json",)) is None and not hub_reachable():
        raise InputError(model, f"text tokenizer {hf_name} is not in the hub cache {hub_constants.HF_HUB_CACHE} and the "
                                "model hub is unreachable; download it once while online")
    try:
        return open_clip.get_tokenizer(arch)
    except (OSError, ImportError, ValueError) as err:
        raise InputError(model, f"cannot load the {arch} text tokenizer (SigLIP tokenizers need the `transformers` "
                                f"package): {str(err).splitlines()[0]}") from err


def cached_tag_file(tag_cfg: dict) -> tuple[str | None, list[str]]:
    """(the local file of an open_clip weights tag, or None; the places looked in): the Hugging
    Face cache (the tag's hub repo), then open_clip's URL cache (~/.cache/clip). No network."""
    hf_hub, url, places = tag_cfg.get("hf_hub", ""), tag_cfg.get("url", ""), []
    if hf_hub:
        repo_id, filename = os.path.split(hf_hub)
        cached = hub_cached_file(repo_id, (filename,) if filename else _HUB_FILENAMES)
        if cached is not None:
            return cached, places
        places.append(f"hub repo {repo_id}")
    if url:
        cached_url = Path("~/.cache/clip").expanduser() / os.path.basename(url)
        if cached_url.is_file():
            return str(cached_url), places
        places.append(str(cached_url))
    return None, places


def default_weights(cls: type[OpenClipModel]) -> tuple[str, str | None]:
    """(``arch:tag`` of a model class's default weights, their local file or None); no network."""
    return f"{cls.default_arch}:{cls.default_tag}", cached_tag_file(open_clip.get_pretrained_cfg(cls.default_arch,
                                                                                                 cls.default_tag))[0]


def _tag_checkpoint(model: str, tag_cfg: dict) -> str:
    """Local file of the open_clip weights tag described by ``tag_cfg``: from the caches, else downloaded.

    Looks in the Hugging Face cache (the tag's hub repo) and open_clip's URL cache
    (~/.cache/clip); downloads only when the hub answers, so offline it fails at once with
    :class:`InputError` naming ``model``.
    """
    cached, places = cached_tag_file(tag_cfg)
    if cached is not None:
        return cached
    where = f"{' and '.join(places)} (hub cache {hub_constants.HF_HUB_CACHE})"
    if not hub_reachable():
        raise InputError(model, f"not in the local cache and the model hub is unreachable (looked in {where}); "
                                "pass --weights FILE with a local checkpoint")
    try:
        return download_pretrained(tag_cfg)
    except (OSError, RuntimeError, ValueError) as err:
        raise InputError(model, f"could not download ({where}): {str(err).splitlines()[0]}; pass --weights FILE") from err


def resize_pos_grid(pos: torch.Tensor, old: tuple[int, int], new: tuple[int, int]) -> torch.Tensor:
    """Bicubic resize of a patch-grid positional embedding: [old_h*old_w, c] -> [new_h*new_w, c].

    Antialiased, as open_clip's ``resize_pos_embed`` and timm's ``resample_abs_pos_embed`` do.
    """
    if old == new:
        return pos
    grid = pos.reshape(1, old[0], old[1], -1).permute(0, 3, 1, 2)  # [1, c, old_h, old_w]
    grid = F.interpolate(grid.float(), size=new, mode="bicubic", align_corners=False, antialias=True)
    return grid.permute(0, 2, 3, 1).reshape(new[0] * new[1], -1).to(pos.dtype)


@register("clip")
class ClipModel(OpenClipModel):
    """CLIP with MaskCLIP-style dense features.

    Dense path for an image with a gh x gw patch grid:
    1. patch embedding (``conv1``), class token, the positional embedding resized (bicubic,
       antialiased) from the training grid to gh x gw (class entry kept), ``ln_pre``;
    2. all transformer blocks but the last, unchanged;
    3. last block, value path only: ``v = out_proj(W_v ln_1(x) + b_v)`` (W_v, b_v the value
       third of ``in_proj_weight`` / ``in_proj_bias``; ``ls_1`` applied when present), with no
       attention mixing, no residual and no MLP;
    4. ``ln_post`` and ``@ proj`` on every patch token -> [gh, gw, d].
    Step 3 is how the authors' released M3 code and F3RM's MaskCLIP extractor (``forward_v``)
    take dense CLIP features: only the value features, because adding the residual or running
    the MLP degrades them (Zhou et al., "Extract Free Dense Labels from CLIP", ECCV 2022). The
    original MaskCLIP code (mmseg ``return_qkv``) instead adds the residual and runs ``ln_2``
    + MLP on the value tokens; we do not.
    """

    name = "clip"
    default_arch = "ViT-L-14-336-quickgelu"
    default_tag = "openai"

    def _prepare_vision_tower(self) -> None:
        visual = self.model.visual
        blocks = getattr(getattr(visual, "transformer", None), "resblocks", None)
        if (not isinstance(visual, VisionTransformer) or visual.attn_pool is not None or visual.proj is None
                or not all(isinstance(b, ResidualAttentionBlock) for b in blocks)
                or not blocks[-1].attn._qkv_same_embed_dim):
            raise InputError(self.arch, "the dense CLIP path needs a plain ViT vision tower (class token, "
                                        "nn.MultiheadAttention blocks, ln_post + proj); use another arch")

    def _patch(self) -> int:
        return int(self.model.visual.patch_size[0])

    def _dense(self, x: torch.Tensor) -> torch.Tensor:
        visual = self.model.visual
        tokens = visual.conv1(x)  # [1, c, gh, gw]
        gh, gw = tokens.shape[-2:]
        tokens = tokens.flatten(2).transpose(1, 2)  # [1, gh*gw, c]
        pos = visual.positional_embedding  # [1 + Gh*Gw, c]
        pos = torch.cat([pos[:1], resize_pos_grid(pos[1:], tuple(visual.grid_size), (gh, gw))])  # [1 + gh*gw, c]
        cls = visual.class_embedding.view(1, 1, -1).to(tokens.dtype)
        h = visual.ln_pre(torch.cat([cls, tokens], dim=1) + pos.to(tokens.dtype))  # [1, 1 + gh*gw, c]
        blocks = visual.transformer.resblocks
        if not visual.transformer.batch_first:
            h = h.transpose(0, 1)  # blocks expect [L, N, c]
        for block in blocks[:-1]:
            h = block(h)
        if not visual.transformer.batch_first:
            h = h.transpose(0, 1)
        v = value_path(blocks[-1], h[:, 1:])  # [1, gh*gw, c]
        out = visual.ln_post(v) @ visual.proj  # [1, gh*gw, d]
        return out.reshape(gh, gw, -1)


def value_path(block: ResidualAttentionBlock, h: torch.Tensor) -> torch.Tensor:
    """A block's attention branch with attention replaced by identity: ``ls_1(out_proj(v(ln_1(h))))``.

    h: [..., c] tokens entering the block. Returns [..., c]. Each token's output depends on
    that token alone (no mixing), which keeps features local to their patch.
    """
    attn = block.attn
    c = attn.embed_dim
    w_v = attn.in_proj_weight[2 * c:]  # [c, c]
    b_v = attn.in_proj_bias[2 * c:] if attn.in_proj_bias is not None else None
    v = F.linear(block.ln_1(h), w_v, b_v)
    return block.ls_1(attn.out_proj(v))


@register("siglip")
class SigLipModel(OpenClipModel):
    """SigLIP with the attention-pooling head applied per patch.

    SigLIP's image embedding is ``head(attn_pool(tokens))``: a learned latent query attends
    over all patch tokens (after the trunk's final norm), then ``proj`` and a residual MLP.
    For dense features each patch token is fed to that same head as a one-token sequence.
    With a single key the attention weight is exactly 1, so this equals the MaskCLIP-like
    value path through the pool: ``y = proj(W_v t + b_v)``, ``f = y + mlp(norm(y))``, and
    then whatever follows the pool in timm / open_clip (identity for SigLIP). Each patch thus
    lands in SigLIP's joint space with no mixing between patches. The positional embedding
    is resized for the input's patch grid by timm (``dynamic_img_size``).
    """

    name = "siglip"
    default_arch = "ViT-SO400M-14-SigLIP-384"
    default_tag = "webli"
    mean = INCEPTION_MEAN
    std = INCEPTION_STD

    def _prepare_vision_tower(self) -> None:
        trunk = getattr(self.model.visual, "trunk", None)
        pool = getattr(trunk, "attn_pool", None)
        if pool is None or pool.pos_embed is not None or pool.latent_len != 1 or getattr(trunk, "num_prefix_tokens", 1) != 0:
            raise InputError(self.arch, "the dense SigLIP path needs a timm ViT trunk with an attention-pool "
                                        "head ('map' pooling, one latent, no pool pos-embed) and no class token; "
                                        "use another arch")
        trunk.dynamic_img_size = True  # resample pos_embed to each input's grid; patch embed keeps the grid shape
        trunk.patch_embed.strict_img_size = False
        trunk.patch_embed.flatten = False
        trunk.patch_embed.output_fmt = Format.NHWC

    def _native_size(self) -> tuple[int, int]:
        return tuple(self.model.visual.trunk.patch_embed.img_size)

    def _patch(self) -> int:
        return int(self.model.visual.trunk.patch_embed.patch_size[0])

    def _dense(self, x: torch.Tensor) -> torch.Tensor:
        visual = self.model.visual
        gh, gw = x.shape[-2] // self._patch(), x.shape[-1] // self._patch()
        tokens = visual.trunk.forward_features(x)  # [1, gh*gw, c] after the trunk's final norm
        per_patch = tokens.reshape(gh * gw, 1, -1)  # each patch its own one-token sequence
        out = visual.head(visual.trunk.forward_head(per_patch))  # [gh*gw, d]
        return out.reshape(gh, gw, -1)
