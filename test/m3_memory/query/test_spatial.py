"""Queries on the Gaussians themselves (no rendering), and the object centre of rendered queries."""

import numpy as np
import pytest
from scipy.spatial import cKDTree

from m3_memory.memory.artifact import load_memory
from m3_memory.query.api import QueryConfig, query_gaussians, query_text, text_model_for
from m3_memory.query.camera import Camera
from m3_memory.query.relevancy import score_map
from m3_memory.query.spatial import (
    cluster_library,
    dbscan,
    dbscan_open3d,
    dbscan_pairs,
    gaussian_features,
)
from m3_memory.render.cpu import compiler
from m3_memory.synth import SynthConfig, SyntheticScene


@pytest.fixture(scope="module")
def memory(built_memory):
    return load_memory(built_memory[0])


@pytest.fixture(scope="module")
def scene():
    return SyntheticScene(SynthConfig(width=160, height=120, n_frames=10))  # as `synth`


def centre(scene, name):
    return np.concatenate([np.asarray(p.mesh.sample_points_uniformly(5000).points) for p in scene.object(name).parts]).mean(0)


def test_neighbourhood_decoding_finds_what_single_queries_do_not(memory, scene):
    """A Gaussian's own query is mostly its random initialisation; summed over neighbours it reads."""
    text_model = text_model_for(memory)
    emb = text_model.encode_text(["yellow bath duck", "wooden table", "grey floor", "sky"])
    near = np.nonzero(np.linalg.norm(memory.gaussians.means.numpy() - centre(scene, "yellow bath duck"), axis=1) < 0.04)[0]
    single = score_map(gaussian_features(memory, neighbours=1, index=near), emb[0], emb[1:], "relevancy")
    summed = score_map(gaussian_features(memory, index=near), emb[0], emb[1:], "relevancy")
    assert len(near) > 20 and summed.median() > 10 * single.median()


@pytest.mark.parametrize("name", ["yellow bath duck", "blue mug", "green block"])
def test_query_gaussians_finds_objects_in_3d(memory, scene, name):
    result = query_gaussians(memory, name)
    assert result.found and result.heatmap.size == 0 and result.T_world_cam is None, result.message
    assert np.linalg.norm(result.point_world - centre(scene, name)) < 0.03
    assert len(result.gaussians) == len(result.points_world) > 20


def test_object_centre_is_the_same_from_every_view(memory, scene):
    """The visible surface moves with the view; the memory's Gaussians of the object do not."""
    duck = centre(scene, "yellow bath duck")
    surface, body = [], []
    for view in memory.cameras:
        cam = Camera.from_view(view)
        surface.append(query_text(memory, "yellow bath duck", cam, config=QueryConfig(object_centre=False)).point_world)
        body.append(query_text(memory, "yellow bath duck", cam).point_world)
    body_err = [np.linalg.norm(p - duck) for p in body]
    assert max(body_err) < 0.03
    assert np.ptp(np.array(body), axis=0).max() < np.ptp(np.array(surface), axis=0).max()


def clustered_points(seed: int) -> np.ndarray:
    """Blobs of several densities and sizes, a few touching ones, and uniform noise: [M, 3] m."""
    rng = np.random.default_rng(seed)
    blobs = [rng.normal(c, s, (n, 3)) for c, s, n in zip(rng.random((12, 3)) * 0.3, rng.uniform(0.004, 0.02, 12),
                                                         rng.integers(20, 800, 12))]
    return rng.permutation(np.concatenate([*blobs, rng.random((600, 3)) * 0.3]))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("eps, min_points", [(0.02, 5), (0.01, 3), (0.03, 12)])
@pytest.mark.parametrize("fn", [dbscan, dbscan_pairs])
def test_dbscan_labels_are_open3d_s(fn, seed, eps, min_points):
    """The grid kernel and the k-d tree + connected-components DBSCAN give open3d's labels,
    numbering, noise and border points (joined to the lowest-numbered cluster near them) included."""
    points = clustered_points(seed)
    ref = dbscan_open3d(points, eps, min_points)
    fast = fn(points, eps, min_points)
    assert ref.max() >= 2 and (ref == -1).any()  # several clusters and some noise: the cases are exercised
    border = np.bincount(cKDTree(points).query_pairs(eps, output_type="ndarray").ravel(), minlength=len(points)) + 1
    assert ((border < min_points) & (ref >= 0)).any()  # non-core points that joined a cluster
    np.testing.assert_array_equal(fast, ref)


def test_the_grid_kernel_is_built_and_used():
    assert cluster_library() is not None or compiler() is None


@pytest.mark.parametrize("fn", [dbscan, dbscan_pairs])
def test_dbscan_edge_cases(fn):
    assert fn(np.zeros((0, 3)), 0.02, 5).shape == (0,)
    np.testing.assert_array_equal(fn(np.eye(3), 0.02, 1), [0, 1, 2])  # every point its own core
    np.testing.assert_array_equal(fn(np.eye(3), 0.02, 2), [-1, -1, -1])  # no core
    np.testing.assert_array_equal(fn(np.eye(3) - 5.0, 0.02, 2), dbscan_open3d(np.eye(3) - 5.0, 0.02, 2))  # negative cells
    far = np.array([[0.0, 0, 0], [0.01, 0, 0], [1e5, 0, 0], [1e5 + 0.01, 0, 0]])  # past the grid: the pairs path
    np.testing.assert_array_equal(fn(far, 0.02, 2), [0, 0, 1, 1])
