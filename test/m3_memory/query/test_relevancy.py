"""Relevancy scores, heatmaps, regions and depth lifting on small hand-made inputs."""

import numpy as np
import pytest
import torch

from m3_memory.errors import InputError
from m3_memory.query.camera import Camera
from m3_memory.query.relevancy import display_heatmap, largest_component, relevancy_map, target_region
from m3_memory.query.target import check_depth, lift_region, oriented_box


def test_relevancy_is_lerfs_min_over_pairwise_softmax():
    g = torch.Generator().manual_seed(0)
    f, t, neg = torch.randn(50, 8, generator=g), torch.randn(8, generator=g), torch.randn(4, 8, generator=g)
    cos = lambda a, b: torch.nn.functional.cosine_similarity(a, b, dim=-1)  # noqa: E731
    pairs = torch.stack([torch.softmax(10 * torch.stack([cos(f, t[None]), cos(f, n[None])], -1), -1)[:, 0] for n in neg])
    torch.testing.assert_close(relevancy_map(f, t, neg), pairs.min(0).values)


def test_region_is_the_largest_component_above_otsu():
    score = np.zeros((40, 40), np.float32)
    score[5:15, 5:15] = 0.9  # 100 px
    score[30:33, 30:33] = 0.95  # 9 px, higher but smaller
    valid = np.ones_like(score, bool)
    region = target_region(score, valid)
    assert region.sum() == 100 and region[10, 10]
    assert target_region(score, valid, threshold=0.92).sum() == 9
    assert not largest_component(np.zeros((3, 3), bool)).any()
    heat = display_heatmap(score, valid, 0.5)
    assert heat.max() == 1.0 and heat[0, 0] == 0 and heat.dtype == np.float32


def test_lift_region_drops_background_behind_the_object():
    K = np.array([[100.0, 0, 19.5], [0, 100, 19.5], [0, 0, 1]])
    cam = Camera(K, 40, 40, np.eye(4))
    depth = np.full((40, 40), 2.0, np.float32)
    depth[10:30, 10:30] = 1.0
    mask = np.zeros((40, 40), bool)
    mask[8:32, 8:32] = True  # the region spills 2 px onto the wall 1 m behind
    pts = lift_region(mask, depth, cam)
    assert len(pts) == 400 and np.allclose(pts[:, 2], 1.0)
    box = oriented_box(pts + np.random.default_rng(0).normal(0, 1e-3, pts.shape))
    assert box is not None and np.all(box.extent < 0.25)


def test_live_depth_checks():
    cam = Camera(np.array([[100.0, 0, 19.5], [0, 100, 19.5], [0, 0, 1]]), 40, 30, np.eye(4))
    with pytest.raises(InputError, match="30x40"):
        check_depth(np.ones((40, 30), np.float32), cam)
    with pytest.raises(InputError, match="uint16"):
        check_depth(np.ones((30, 40), np.uint16), cam)
    with pytest.raises(InputError, match="millimetres"):
        check_depth(np.full((30, 40), 800.0, np.float32), cam)
    d = np.ones((30, 40), np.float32)
    d[0, 0] = np.nan
    assert check_depth(d, cam)[0, 0] == 0
