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


ROOM = SynthConfig.room(width=96, height=72, n_frames=96)


def test_room_preset_has_tables_of_named_objects():
    room = SyntheticScene(ROOM)
    assert SynthConfig.room().n_frames == 300 and ROOM.tables == 4
    names = room.object_names
    assert len(set(names)) == len(names) and [o.id for o in room.objects] == list(range(1, len(names) + 1))
    assert names[:5] == [o.name for o in SyntheticScene(CFG).objects]  # the first table is the tabletop's
    tables = {n.split("(table ")[1].rstrip(")") for n in names[5:]}
    assert tables == {"2", "3", "4"}
    centres = np.array([room.object(n).center[:2] for n in names])
    assert np.ptp(centres[:, 0]) > 1.5 and np.ptp(centres[:, 1]) > 1.5  # spread over the room, not one table
    with pytest.raises(ValueError, match="preset"):
        SynthConfig(preset="garden")


def test_room_path_is_continuous_and_visits_every_table():
    room = SyntheticScene(ROOM)
    eyes = np.array([T[:3, 3] for T in room.poses])
    steps = np.linalg.norm(np.diff(eyes, axis=0), axis=1)
    assert steps.max() < 0.4 and np.ptp(eyes[:, 0]) > 2.0  # walks across the room without jumps
    seen = set()
    for i in range(0, ROOM.n_frames, 4):
        f = room.render(i)
        assert (f.depth > 0).mean() > 0.95  # walls and floor close the room: no sky
        seen |= {name for name, m in f.masks.items() if m.sum() > 20}
    assert {n.split(" (table ")[1] if "(table" in n else "1)" for n in seen} == {"1)", "2)", "3)", "4)"}
