"""Train the fixture CLIP on the synthetic tabletop (``python -m m3_memory.foundation.fixture_train``).

Two cross-entropy terms on the dense (MaskCLIP value path) feature map and the text
embeddings of the scene's classes (its five objects, the table, the floor, the sky), with
soft targets from the rendered labels: each patch picks its class among the texts, and
each text picks its patches among the image's patches (so the best-scoring pixels of a
query lie on the object). Dense image features and text features thus share one space.
A few synonyms per class train the text tower to map them together. Trains on scans of
several seeds, radii and heights; about a minute on 2 cores. Held-out patch accuracy of
the committed weights: 0.976 (views every 8th of the training scans).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F

from m3_memory.conventions import backproject
from m3_memory.foundation.base import model_input
from m3_memory.foundation.fixture import ARCH, CLASSES, WEIGHTS, register_fixture_arch
from m3_memory.progress import progress
from m3_memory.synth import SynthConfig, SyntheticScene

SYNONYMS = {
    "yellow bath duck": ["yellow bath duck", "rubber duck", "yellow duck", "bath duck", "duck"],
    "red apple": ["red apple", "apple", "a red fruit"],
    "blue mug": ["blue mug", "mug", "blue cup", "coffee mug"],
    "green block": ["green block", "green cube", "toy block", "cube"],
    "purple bowl": ["purple bowl", "bowl", "violet bowl"],
    "wooden table": ["wooden table", "table", "table top"],
    "grey floor": ["grey floor", "floor", "ground"],
    "sky": ["sky", "background wall", "empty space"],
}
IMAGE_SIZE = 96  # short side fed to the model, pixels (its native size)


def class_map(scene: SyntheticScene, rgb_label_depth, T_world_cam: np.ndarray) -> np.ndarray:
    """Per-pixel class index into CLASSES [H, W] from a render's object labels and depth."""
    _, depth, label = rgb_label_depth
    h, w = depth.shape
    cls = np.full((h, w), CLASSES.index("sky"), dtype=np.int64)
    v, u = np.nonzero(depth > 0)
    z = backproject(depth, scene.K, T_world_cam)[:, 2]  # world height of each valid pixel (row-major order)
    cls[v, u] = np.where(z > 0.05, CLASSES.index("wooden table"), CLASSES.index("grey floor"))
    for obj in scene.objects:
        cls[label == obj.id] = CLASSES.index(obj.name)
    return cls


def training_views(n_per_scan: int = 24) -> list[tuple[np.ndarray, np.ndarray]]:
    """(rgb uint8 [H, W, 3], class map [H, W]) pairs from several scans of the scene."""
    views = []
    for seed, radius, height in ((0, 0.75, 0.45), (1, 0.6, 0.3), (2, 0.9, 0.6), (3, 0.7, 0.2)):
        scene = SyntheticScene(SynthConfig(width=160, height=120, n_frames=n_per_scan, radius=radius,
                                           cam_height=height, seed=seed))
        for T in scene.poses:
            out = scene.render_at(T, scene.K, 160, 120)
            views.append((out[0], class_map(scene, out, T)))
    return views


def soft_targets(cls: np.ndarray, gh: int, gw: int) -> torch.Tensor:
    """Class fractions per patch [gh * gw, C] from a per-pixel class map."""
    one_hot = F.one_hot(torch.from_numpy(cls), len(CLASSES)).permute(2, 0, 1)[None].float()  # [1, C, H, W]
    return F.adaptive_avg_pool2d(one_hot, (gh, gw))[0].permute(1, 2, 0).reshape(gh * gw, -1)


def train(out: Path, steps: int = 1500, seed: int = 0, show_progress: bool = True) -> float:
    """Train from scratch and save fp16 weights to ``out``; returns held-out patch accuracy."""
    from safetensors.torch import save_file

    from m3_memory.foundation.clip import ClipModel

    torch.manual_seed(seed)
    register_fixture_arch()
    model = open_clip.create_model(ARCH)
    init = out.with_suffix(".init.safetensors")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(init))
    clip = ClipModel(weights=str(init), arch=ARCH)  # the same wrapper, so training uses the exact dense path
    init.unlink()
    net = clip.model.train()
    tokenizer = open_clip.get_tokenizer(ARCH)
    texts = [t for c in CLASSES for t in SYNONYMS[c]]
    owner = torch.tensor([CLASSES.index(c) for c in CLASSES for _ in SYNONYMS[c]])
    tokens = tokenizer(texts)
    views = training_views()
    held_out = views[::8]
    train_views = [v for i, v in enumerate(views) if i % 8]
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    rng = np.random.default_rng(seed)
    for _ in progress(range(steps), "train fixture CLIP", unit="step", show=show_progress):
        rgb, cls = train_views[rng.integers(len(train_views))]
        if rng.random() < 0.5:
            rgb, cls = rgb[:, ::-1].copy(), cls[:, ::-1].copy()
        x = model_input(rgb, IMAGE_SIZE, clip._patch(), clip.mean, clip.std, "cpu")
        dense = clip._dense(x)  # [gh, gw, d]
        gh, gw = dense.shape[:2]
        feats = F.normalize(dense.reshape(gh * gw, -1), dim=-1)
        text = net.encode_text(tokens, normalize=True)  # [T, d]
        logits = net.logit_scale.exp() * feats @ text.T  # [P, T]
        per_class = torch.stack([torch.logsumexp(logits[:, owner == c], dim=1) for c in range(len(CLASSES))], 1)
        target = soft_targets(cls, gh, gw)  # [P, C]
        which = -(target * F.log_softmax(per_class, dim=1)).sum(1).mean()  # each patch: which class
        where_t = target[:, owner]  # [P, T]: each text's patches
        present = where_t.sum(0) > 0
        where_t = where_t[:, present] / where_t[:, present].sum(0)
        where = -(where_t * F.log_softmax(logits[:, present], dim=0)).sum(0).mean()  # each text: which patches
        loss = which + where
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    net.eval()
    state = {k: v.detach().half().contiguous() for k, v in net.state_dict().items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out))
    return patch_accuracy(clip, held_out)


@torch.no_grad()
def patch_accuracy(clip, views: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """Fraction of patches whose nearest class text is their majority class."""
    text = clip.encode_text(list(CLASSES))
    right = total = 0
    for rgb, cls in views:
        dense = clip.encode_image(rgb)
        gh, gw = dense.shape[:2]
        pred = (F.normalize(dense.reshape(gh * gw, -1), dim=-1) @ text.T).argmax(1)
        truth = soft_targets(cls, gh, gw).argmax(1)
        right += int((pred == truth).sum())
        total += truth.numel()
    return right / total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=WEIGHTS)
    p.add_argument("--steps", type=int, default=1500)
    args = p.parse_args()
    print(f"held-out patch accuracy: {train(args.out, args.steps):.3f}; weights: {args.out}")


if __name__ == "__main__":
    main()
