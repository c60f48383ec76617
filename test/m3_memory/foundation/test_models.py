"""Foundation models on tiny untrained architectures, loaded through the real weight-file path.

No network: the hub is forced offline and its caches point at empty folders.
"""

from __future__ import annotations

import json
import time

import numpy as np
import open_clip
import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.numpy import save_file as save_numpy
from timm.models import register_model
from timm.models.vision_transformer import VisionTransformer

from m3_memory.errors import InputError
from m3_memory.foundation import FoundationModel, cached_features, default_cache_root, load_model
from m3_memory.foundation.base import model_input
from m3_memory.foundation.clip import resize_pos_grid
from m3_memory.foundation.precomputed import PrecomputedModel
from m3_memory.recording.frame import Frame

TINY_CLIP = "m3-test-tiny-clip"
TINY_SIGLIP = "m3-test-tiny-sl"  # no "siglip" in the name: open_clip would pick the T5 tokenizer (needs transformers)
TINY_TIMM_SIGLIP = "m3_test_tiny_siglip_trunk"
TEXT_CFG = {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}


@register_model
def m3_test_tiny_siglip_trunk(pretrained: bool = False, num_classes: int = 0, global_pool: str = "map", **_) -> VisionTransformer:
    """A 2-block SigLIP-shaped timm ViT (no class token, attention-pool head), 32 px, 8 px patches."""
    return VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, class_token=False,
                             global_pool=global_pool, num_classes=num_classes)


@pytest.fixture(scope="module")
def tiny_configs(tmp_path_factory):
    """Register tiny CLIP and SigLIP-like open_clip configs."""
    folder = tmp_path_factory.mktemp("open_clip_configs")
    (folder / f"{TINY_CLIP}.json").write_text(json.dumps({
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
        "text_cfg": TEXT_CFG}))
    (folder / f"{TINY_SIGLIP}.json").write_text(json.dumps({
        "embed_dim": 32, "custom_text": True, "init_logit_bias": -10,
        "vision_cfg": {"image_size": 32, "timm_model_name": TINY_TIMM_SIGLIP, "timm_model_pretrained": False,
                       "timm_pool": "map", "timm_proj": "none"},
        "text_cfg": {**TEXT_CFG, "proj_bias": True, "no_causal_mask": True}}))
    open_clip.add_model_config(folder)


def _saved(arch: str, folder) -> tuple[str, dict[str, torch.Tensor]]:
    """A randomly initialised open_clip model's state dict saved with torch.save: (path, state dict)."""
    torch.manual_seed(0)
    state = open_clip.create_model(arch).state_dict()
    path = folder / f"{arch}.pt"
    torch.save(state, path)
    return str(path), state


@pytest.fixture(scope="module")
def tiny_clip(tiny_configs, tmp_path_factory):
    path, state = _saved(TINY_CLIP, tmp_path_factory.mktemp("clip"))
    return load_model("clip", weights=path, arch=TINY_CLIP), state


@pytest.fixture(scope="module")
def tiny_siglip(tiny_configs, tmp_path_factory):
    path, state = _saved(TINY_SIGLIP, tmp_path_factory.mktemp("siglip"))
    return load_model("siglip", weights=path, arch=TINY_SIGLIP), state


def _image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _same_weights(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> bool:
    loaded = module.state_dict()
    return loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)


def test_unknown_model_lists_known_names():
    with pytest.raises(InputError) as err:
        load_model("nope")
    assert str(err.value).startswith("nope:")
    for name in ("clip", "siglip", "dinov2", "precomputed"):
        assert name in str(err.value)


def test_clip_loads_weights_file_exactly(tiny_clip):
    model, state = tiny_clip
    assert _same_weights(model.model, state)
    assert model.checkpoint.startswith(f"{TINY_CLIP}:{TINY_CLIP}.pt@")
    assert (model.feature_dim, model.image_size, model.has_text) == (16, 32, True)


@pytest.mark.parametrize("height, width, grid", [(32, 32, (4, 4)), (48, 80, (4, 7)), (96, 32, (12, 4))])
def test_clip_dense_shape_any_aspect(tiny_clip, height, width, grid):
    features = tiny_clip[0].encode_image(_image(height, width))
    assert features.shape == (*grid, 16) and features.dtype == torch.float32
    assert torch.isfinite(features).all()


def test_clip_dense_is_the_last_block_value_path(tiny_clip):
    """One patch computed by hand: blocks but the last, then ln_1 -> W_v -> out_proj -> ln_post -> proj."""
    model = tiny_clip[0]
    visual = model.model.visual
    rgb = _image(32, 32, seed=1)
    dense = model.encode_image(rgb)  # [4, 4, 16]
    with torch.no_grad():
        x = model_input(rgb, 32, 8, model.mean, model.std, "cpu")
        h = visual._embeds(x)  # open_clip's own patch + class + positional embedding and ln_pre
        for block in visual.transformer.resblocks[:-1]:
            h = block(h)
        i, j = 2, 3
        token = h[0, 1 + i * 4 + j]  # [c]
        last = visual.transformer.resblocks[-1]
        c = token.shape[0]
        normed = F.layer_norm(token, (c,), last.ln_1.weight, last.ln_1.bias, last.ln_1.eps)
        value = last.attn.in_proj_weight[2 * c:] @ normed + last.attn.in_proj_bias[2 * c:]
        out = last.attn.out_proj.weight @ value + last.attn.out_proj.bias
        expected = F.layer_norm(out, (c,), visual.ln_post.weight, visual.ln_post.bias, visual.ln_post.eps) @ visual.proj
    torch.testing.assert_close(dense[i, j], expected, rtol=1e-4, atol=1e-5)


def test_clip_positional_embedding_resize_matches_open_clip(tiny_clip, tmp_path):
    """For a 4 x 7 patch grid our resize equals open_clip's own (a model built for 32 x 56 px)."""
    model, state = tiny_clip
    path = tmp_path / "tiny.pt"
    torch.save(state, path)
    wide = open_clip.create_model(TINY_CLIP, pretrained=str(path), force_image_size=(32, 56))
    ours = resize_pos_grid(model.model.visual.positional_embedding[1:].detach(), (4, 4), (4, 7))
    torch.testing.assert_close(ours, wide.visual.positional_embedding[1:].detach())


def test_clip_text_is_normalised(tiny_clip):
    text = tiny_clip[0].encode_text(["a yellow bath duck", "a mug", "the table"])
    assert text.shape == (3, 16)
    torch.testing.assert_close(text.norm(dim=-1), torch.ones(3))
    with pytest.raises(InputError):
        tiny_clip[0].encode_text([])


def test_siglip_loads_and_pools_each_patch(tiny_siglip):
    """Per patch: the pool's value path proj(W_v t + b_v), plus its residual MLP."""
    model, state = tiny_siglip
    assert _same_weights(model.model, state)
    assert model.mean == (0.5, 0.5, 0.5)
    trunk = model.model.visual.trunk
    rgb = _image(48, 80, seed=2)
    dense = model.encode_image(rgb)
    assert dense.shape == (4, 7, 32)
    with torch.no_grad():
        pos = trunk.pos_embed[0].reshape(4, 4, -1).permute(2, 0, 1)[None]  # [1, c, 4, 4]
        pos = F.interpolate(pos, size=(4, 7), mode="bicubic", align_corners=False, antialias=True)[0].permute(1, 2, 0).reshape(28, -1)
        x = model_input(rgb, 32, 8, model.mean, model.std, "cpu")
        h = trunk.patch_embed.proj(x).flatten(2).transpose(1, 2) + pos  # [1, 28, c]
        h = trunk.norm(trunk.blocks(h))
        pool = trunk.attn_pool
        c = h.shape[-1]
        token = h[0, 1 * 7 + 5]
        y = pool.proj(pool.kv.weight[c:] @ token + pool.kv.bias[c:])
        expected = y + pool.mlp(pool.norm(y))
    torch.testing.assert_close(dense[1, 5], expected, rtol=1e-4, atol=1e-5)
    text = model.encode_text(["a duck"])
    assert text.shape == (1, 32)


def test_dinov2_loads_file_and_gives_last_layer_patch_tokens(tmp_path):
    torch.manual_seed(0)
    reference = timm.create_model("vit_small_patch14_dinov2", depth=2, img_size=56).eval()
    path = tmp_path / "dinov2_small.pth"
    torch.save(reference.state_dict(), path)
    model = load_model("dinov2", weights=str(path), arch="vit_small_patch14_dinov2", depth=2, img_size=56)
    assert _same_weights(model.model, reference.state_dict())
    assert (model.feature_dim, model.image_size, model.has_text) == (384, 56, False)
    assert model.encode_image(_image(48, 80)).shape == (4, 7, 384)
    rgb = _image(56, 56, seed=3)
    with torch.no_grad():
        tokens = reference.forward_features(model_input(rgb, 56, 14, model.mean, model.std, "cpu"))  # [1, 1 + 16, 384]
    torch.testing.assert_close(model.encode_image(rgb), tokens[0, 1:].reshape(4, 4, 384), rtol=1e-4, atol=1e-5)
    with pytest.raises(InputError, match="text encoder"):
        model.encode_text(["a duck"])


@pytest.fixture
def offline_hub(monkeypatch, tmp_path):
    """No network and empty weight caches, whatever machine runs the tests."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HOME", str(tmp_path))


@pytest.mark.parametrize("name", ["clip", "siglip", "dinov2"])
def test_hub_weights_offline_fail_fast_and_say_what_to_do(offline_hub, name):
    start = time.monotonic()
    with pytest.raises(InputError) as err:
        load_model(name)
    assert time.monotonic() - start < 20
    message = str(err.value)
    assert name in message and "--weights FILE" in message and "\n" not in message


def test_bad_weights_arguments():
    with pytest.raises(InputError, match="does not exist"):
        load_model("clip", weights="/no/such/ViT-L-14-336px.pt")
    with pytest.raises(InputError, match="tag"):
        load_model("clip", weights="no_such_tag")
    with pytest.raises(InputError, match="open_clip architecture"):
        load_model("clip", weights="openai", arch="ViT-Nope")


def test_wrong_weights_file_is_an_input_error(tiny_configs, tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"visual.conv1.weight": torch.zeros(1)}, path)
    with pytest.raises(InputError, match=f"cannot load as {TINY_CLIP}"):
        load_model("clip", weights=str(path), arch=TINY_CLIP)


def _frame(name: str = "", seed: int = 0) -> Frame:
    return Frame(rgb=_image(24, 32, seed), depth=np.ones((24, 32), np.float32), K=np.diag([30.0, 30.0, 1.0]),
                 T_world_cam=None, stamp=0.0, name=name)


def test_precomputed_reads_by_name_or_index(tmp_path):
    maps = {k: np.random.default_rng(k).normal(size=(3, 4, 5)).astype(np.float32) for k in range(3)}
    np.save(tmp_path / "000000.npy", maps[0])
    save_numpy({"features": maps[1].astype(np.float16)}, str(tmp_path / "000001.safetensors"))
    np.save(tmp_path / "kitchen.npy", maps[2])
    model = load_model("precomputed", weights=str(tmp_path), name="seem")
    assert (model.name, model.feature_dim, model.cacheable) == ("seem", 5, False)
    np.testing.assert_array_equal(model.encode_frame(0).numpy(), maps[0])
    np.testing.assert_allclose(model.encode_frame(_frame(), 1).numpy(), maps[1], atol=1e-2)
    np.testing.assert_array_equal(model.encode_frame(_frame("kitchen"), 7).numpy(), maps[2])
    with pytest.raises(InputError, match="frame 5"):
        model.encode_frame(5)
    with pytest.raises(InputError, match="read per frame"):
        model.encode_image(_image(8, 8))
    assert [f.shape for f in cached_features(model, [_frame(), _frame()], "rec")] == [(3, 4, 5), (3, 4, 5)]


def test_precomputed_errors(tmp_path):
    with pytest.raises(InputError, match="--weights FOLDER"):
        load_model("precomputed")
    with pytest.raises(InputError, match="does not exist"):
        PrecomputedModel(tmp_path / "missing")
    with pytest.raises(InputError, match="no feature files"):
        PrecomputedModel(tmp_path)
    np.save(tmp_path / "0.npy", np.zeros((3, 4, 5), np.float32))
    np.save(tmp_path / "1.npy", np.zeros((3, 4, 6), np.float32))
    with pytest.raises(InputError, match="1.npy: feature dim 6 differs from 5"):
        PrecomputedModel(tmp_path)
    np.save(tmp_path / "1.npy", np.zeros((3, 4), np.float32))
    with pytest.raises(InputError, match=r"1.npy: features must be \[h, w, d\]"):
        PrecomputedModel(tmp_path)
    bad = np.zeros((3, 4, 5), np.float32)
    bad[1, 2, 3] = np.nan
    np.save(tmp_path / "1.npy", bad)
    model = PrecomputedModel(tmp_path)
    with pytest.raises(InputError, match="1.npy: 1 NaN"):
        model.encode_frame(1)


class CountingModel(FoundationModel):
    """A stand-in model: the mean colour of 8x8 blocks as a [h/8, w/8, 3] map; counts calls."""

    name = "counting"
    feature_dim = 3
    checkpoint = "v1"
    image_size = 24

    def __init__(self):
        self.calls = 0

    def encode_image(self, rgb: np.ndarray) -> torch.Tensor:
        self.calls += 1
        h, w = rgb.shape[0] // 8, rgb.shape[1] // 8
        return torch.from_numpy(rgb[:h * 8, :w * 8].reshape(h, 8, w, 8, 3).mean(axis=(1, 3)) / 255.0).float()


def test_cache_computes_each_frame_once(tmp_path, monkeypatch):
    monkeypatch.setenv("M3_CACHE", str(tmp_path / "cache"))
    assert default_cache_root() == tmp_path / "cache"
    recording = tmp_path / "scan.bag"
    recording.write_bytes(b"recording")
    frames = [_frame(seed=k) for k in range(3)]
    model = CountingModel()
    first = list(cached_features(model, frames, recording))
    assert model.calls == 3 and first[0].shape == (3, 4, 3) and first[0].dtype == torch.float32
    second = list(cached_features(model, frames, recording))
    assert model.calls == 3
    for a, b in zip(first, second):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    folders = list((tmp_path / "cache" / "counting").iterdir())
    assert len(folders) == 1
    assert sorted(p.name for p in folders[0].iterdir()) == ["0.safetensors", "1.safetensors", "2.safetensors", "meta.json"]
    model.checkpoint = "v2"  # other weights: other key, computed again
    list(cached_features(model, frames[:1], recording))
    assert model.calls == 4
