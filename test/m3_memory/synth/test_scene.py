import numpy as np
import pytest
from scipy.spatial import cKDTree

from m3_memory.conventions import backproject, invert_T, rigid_error
from m3_memory.synth import TABLE_TOP_Z, SynthConfig, SyntheticScene

CFG = SynthConfig(width=160, height=120, n_frames=12)


@pytest.fixture(scope="module")
def scene():
    return SyntheticScene(CFG)


def test_named_objects_and_duck(scene):
    assert "yellow bath duck" in scene.object_names
    assert len(scene.object_names) >= 4
    duck = scene.object("yellow bath duck")
    assert duck.center[2] > TABLE_TOP_Z and 0.08 < duck.extent[0] < 0.2  # on the table, bath-duck sized


def test_rendering_is_deterministic(scene):
    a, b = scene.render(3), SyntheticScene(CFG).render(3)
    np.testing.assert_array_equal(a.rgb, b.rgb)
    np.testing.assert_array_equal(a.depth, b.depth)


def test_duck_pixels_are_yellow(scene):
    f = scene.render(0)
    m = f.masks["yellow bath duck"]
    assert m.sum() > 50
    r, g, b = np.median(f.rgb[m].astype(float), axis=0)
    assert r > 150 and g > 120 and b < 0.5 * g


def test_camera_path_circles_and_looks_at_the_table(scene):
    centre = np.array([0, 0, TABLE_TOP_Z, 1.0])
    angles = []
    for T in scene.poses:
        assert rigid_error(T) is None
        p = invert_T(T) @ centre
        u, v = (scene.K @ p[:3])[:2] / p[2]
        assert p[2] > 0 and 0 <= u < CFG.width and 0 <= v < CFG.height
        angles.append(np.arctan2(T[1, 3], T[0, 3]))
    assert np.ptp(np.unwrap(angles)) > np.deg2rad(300)  # goes around the table


def test_masked_depth_lies_on_the_object(scene):
    f = scene.render(5)
    duck = scene.object("yellow bath duck")
    d = np.where(f.masks["yellow bath duck"], f.depth, 0)
    pts = backproject(d, f.K, f.T_world_cam)
    lo, hi = duck.points.min(0) - 0.005, duck.points.max(0) + 0.005
    assert len(pts) > 20 and np.all((pts >= lo) & (pts <= hi))


def test_two_views_agree_in_3d(scene):
    a, b = scene.render(0), scene.render(1)
    pa = backproject(a.depth, a.K, a.T_world_cam, stride=2)
    pb = backproject(b.depth, b.K, b.T_world_cam, stride=2)
    def near(p):
        return p[np.linalg.norm(p[:, :2], axis=1) < 0.6]  # the table region both views see
    dist, _ = cKDTree(near(pa)).query(near(pb))
    assert np.median(dist) < 0.01
