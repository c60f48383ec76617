"""Image quality (PSNR, SSIM, LPIPS when available) and retrieval recall (I2T / T2I at k)."""

import numpy as np
import pytest
import torch

from m3_memory.query.metrics import image_quality, image_scores, lpips_unavailable, recall_at, retrieval


def test_image_quality():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)
    same = image_quality(img, img, with_lpips=False)
    assert same["psnr"] == float("inf") and same["ssim"] == pytest.approx(1.0) and same["lpips"] is None
    noisy = np.clip(img + rng.normal(0, 20, img.shape), 0, 255).astype(np.uint8)
    q = image_quality(noisy, img, with_lpips=False)
    assert 20 < q["psnr"] < 24 and 0.5 < q["ssim"] < 0.99  # sigma 20 of 255: about 22 dB


def test_lpips_says_why_it_is_missing():
    why = lpips_unavailable()
    assert why is None or "lpips" in why or "weights" in why


def test_recall_at_k():
    scores = torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.3, 0.8]])
    relevant = np.array([[False, False, True], [True, False, False]])
    r = recall_at(scores, relevant, ranks=(1, 2, 3))
    assert r == {1: 0.0, 2: 0.5, 3: 1.0}  # row 0: 2nd; row 1: 3rd


def test_retrieval_ranks_images_by_their_best_pixel():
    texts = torch.eye(4)  # objects 0, 1 and distractors 2, 3
    a = torch.zeros(2, 2, 4)
    a[0, 0] = torch.tensor([1.0, 0, 0, 0])  # one pixel of object 0, the rest a distractor
    a[1:, :] = torch.tensor([0, 0, 1.0, 0])
    a[0, 1] = torch.tensor([0, 0, 1.0, 0])
    b = torch.zeros(2, 2, 4)
    b[..., 1] = 1.0  # object 1 everywhere
    assert torch.allclose(image_scores([a, b], texts), torch.tensor([[1.0, 0, 1, 0], [0, 1, 0, 0]]))
    present = np.array([[True, False], [False, True]])
    r = retrieval([a, b], present, texts[:2], texts[2:])
    assert r["T2I@1"] == 1.0 and r["I2T@5"] == 1.0 and r["images"] == 2 and r["texts"] == 4
    assert r["I2T@1"] in (0.5, 1.0)  # image a ties object 0 with a distractor
