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


def _sorted_rows(points: np.ndarray, colors: np.ndarray) -> np.ndarray:
    rows = np.concatenate([points, colors], axis=1)
    return rows[np.lexsort(rows[:, ::-1].T)]


def test_merge_is_open3d_voxel_down_sample_of_all_the_points(scene):
    """The frames (and sparse points) are merged as open3d's voxel_down_sample merges their
    union in one call: the same voxels, mean points and mean colours."""
    import open3d as o3d

    from m3_memory.conventions import backproject

    frames = list(scene)[:5]
    sparse = (np.array([[0.0, 0.0, 3.0], [0.3, -0.2, 2.0]]), np.array([[255, 0, 0], [0, 0, 255]], np.uint8))
    g = init_from_rgbd(frames, query_dim=4, voxel=0.01, stride=2, sparse=sparse)
    points, colors = [sparse[0]], [sparse[1] / 255.0]
    for f in frames:
        v, u = np.nonzero(f.depth[::2, ::2] > 0)
        points.append(backproject(f.depth, f.K, f.T_world_cam, 2))
        colors.append(f.rgb[::2, ::2][v, u] / 255.0)
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.concatenate(points)))
    cloud.colors = o3d.utility.Vector3dVector(np.concatenate(colors))
    ref = cloud.voxel_down_sample(0.01)
    assert len(g) == len(ref.points) > 1000
    expected = _sorted_rows(np.asarray(ref.points, np.float32), np.asarray(ref.colors, np.float32))
    got = _sorted_rows(g.means.numpy(), (0.5 + SH_C0 * g.sh_dc).numpy())
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_blockwise_reduction_matches_one_block():
    from m3_memory.training.init import VoxelMeans

    rng = np.random.default_rng(0)
    points = rng.uniform(-1.0, 1.0, (200_000, 3))
    colors = rng.uniform(0.0, 1.0, (200_000, 3))
    lo, hi = points.min(axis=0), points.max(axis=0)
    whole = VoxelMeans(0.05, lo, hi)
    whole.add(points, colors)
    blocks = VoxelMeans(0.05, lo, hi)
    for start in range(0, len(points), 7_000):  # reduced several times along the way
        blocks.add(points[start:start + 7_000], colors[start:start + 7_000])
    for a, b in zip(whole.means(), blocks.means()):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    means, _ = whole.means()
    assert len(means) == len(np.unique(np.floor((points - (lo - 0.025)) / 0.05), axis=0))
    assert (np.diff(whole.keys) > 0).all()
