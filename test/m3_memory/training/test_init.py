import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from m3_memory.errors import InputError
from m3_memory.recording import Frame
from m3_memory.synth import SynthConfig, SyntheticScene
from m3_memory.training.init import SH_C0, init_from_rgbd


@pytest.fixture(scope="module")
def scene():
    return SyntheticScene(SynthConfig(width=160, height=120, n_frames=8))


def test_gaussians_lie_on_the_surfaces_with_their_colours(scene):
    g = init_from_rgbd(scene, query_dim=16, voxel=0.01)
    assert 1000 < len(g) < 200_000 and g.queries.shape == (len(g), 16)
    duck = scene.object("yellow bath duck")
    surface = cKDTree(np.concatenate([np.asarray(p.mesh.sample_points_uniformly(20000).points) for p in duck.parts]))
    dist, _ = surface.query(g.means.numpy())
    on_duck = dist < 0.004
    assert on_duck.sum() > 20
    rgb = 0.5 + SH_C0 * g.sh_dc[torch.from_numpy(on_duck)]
    r, gr, b = rgb.median(dim=0).values.tolist()
    assert r > 0.6 and gr > 0.5 and b < 0.5 * gr  # yellow
    scale = g.log_scales.exp()[:, 0]
    assert 0.003 < scale.median() < 0.05  # about the voxel size
    assert torch.allclose(torch.sigmoid(g.opacity_logits), torch.tensor(0.1))


def test_voxel_merges_views(scene):
    one = init_from_rgbd([scene.render(0)], query_dim=4, voxel=0.02)
    two = init_from_rgbd([scene.render(0), scene.render(0)], query_dim=4, voxel=0.02)
    assert len(two) == len(one)  # the same view twice adds nothing


def test_no_depth_and_no_pose(scene):
    f = scene.render(0)
    empty = Frame(f.rgb, np.zeros_like(f.depth), f.K, f.T_world_cam, 0.0)
    with pytest.raises(InputError, match="no valid depth"):
        init_from_rgbd([empty], query_dim=4, source="scan.db3")
    unposed = Frame(f.rgb, f.depth, f.K, None, 0.0, name="frame 0")
    with pytest.raises(InputError, match="frame 0 has no camera pose"):
        init_from_rgbd([unposed], query_dim=4)


def test_sparse_points_are_merged_in(scene):
    frames = list(scene)[:2]
    far = np.array([[0.0, 0.0, 50.0], [1.0, 0.0, 50.0]])  # beyond any depth
    g = init_from_rgbd(frames, query_dim=4, voxel=0.01, sparse=(far, np.array([[255, 0, 0], [255, 0, 0]], np.uint8)))
    plain = init_from_rgbd(frames, query_dim=4, voxel=0.01)
    assert len(g) == len(plain) + 2
    hit = (g.means - torch.tensor([0.0, 0.0, 50.0])).norm(dim=1).argmin()
    torch.testing.assert_close(0.5 + SH_C0 * g.sh_dc[hit], torch.tensor([1.0, 0.0, 0.0]))
