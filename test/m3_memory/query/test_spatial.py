"""Queries on the Gaussians themselves (no rendering), and the object centre of rendered queries."""

import numpy as np
import pytest

from m3_memory.memory.artifact import load_memory
from m3_memory.query.api import QueryConfig, query_gaussians, query_text, text_model_for
from m3_memory.query.camera import Camera
from m3_memory.query.relevancy import score_map
from m3_memory.query.spatial import gaussian_features
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
