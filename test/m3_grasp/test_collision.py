"""ArmCollision: the URDF's collision primitives against themselves, the B1 trunk and point clouds."""

from __future__ import annotations

import numpy as np
import pytest

from m3_grasp.collision import ArmCollision
from m3_memory.errors import InputError

FORWARD = np.array([0.0, 1.5, -1.0, -0.5, 0.0, 0.0])  # Unitree's "forward" posture: arm out in front, clear of all
REST = np.zeros(6)  # folded transport pose, where plans start
OPEN, CLOSED = -np.pi / 2, 0.0


@pytest.fixture(scope="module")
def arm() -> ArmCollision:
    return ArmCollision()


def at(T: np.ndarray, p_local) -> np.ndarray:
    """Point [1, 3] in base_link from coordinates in the frame T [4, 4]."""
    return (T @ np.append(p_local, 1.0))[None, :3]


def test_free_poses_touch_nothing(arm):
    arm.set_clouds(scene=np.zeros((0, 3)))
    for q in (FORWARD, REST):
        for g in (OPEN, CLOSED):
            assert not arm.collides(q, g)
            assert arm.why(q, g) == ""
            assert arm.clearance(q, g) > 0


def test_pairs_overlapping_at_rest_are_the_folded_wrist(arm):
    """They are checked beyond their overlap at rest: the wrist lying on the shoulder."""
    assert arm.rest_pairs
    for (a, b), depth in arm.rest_pairs.items():
        assert a.rsplit("_", 1)[0] in ("z1_link01", "z1_link02")
        assert b.rsplit("_", 1)[0] in ("z1_link04", "z1_link05", "z1_link06", "z1_gripper_stator")
        assert -0.02 < depth <= 0
    links = {p for pairs in arm.pairs.values() for p in pairs}
    assert ("base_link", "z1_link01") not in links and ("base_link", "z1_base_link") not in links
    assert ("base_link", "z1_link02") in arm.pairs["body"]
    assert ("z1_link02", "z1_link04") in arm.pairs["self"]
    arm.set_clouds()
    q = np.array([-0.688, 1.669, -0.271, 1.098, 1.133, 2.43])  # wrist swung into the upper arm (Unitree's meshes agree)
    assert arm.why(q, -0.644) == "z1_link02 and z1_link04"


def test_gripper_folded_into_the_trunk_hits_base_link(arm):
    q = np.array([0.0, 2.9, -0.4, 0.0, 0.0, 0.0])  # upper arm forward and down, forearm back under it
    arm.set_clouds()
    assert arm.collides(q, CLOSED)
    assert not arm.collides(q, CLOSED, with_body=False)
    found = arm.contacts(q, CLOSED)
    assert found and all(c.a == "base_link" and c.b.startswith("z1_gripper") for c in found)
    assert "base_link" in arm.why(q, CLOSED)


def test_wrist_bent_into_the_shoulder_is_a_self_collision(arm):
    q = np.array([0.0, 0.0, 0.0, 0.6, 0.0, 0.0])  # rest, wrist turned down onto the shoulder
    arm.set_clouds()
    assert arm.collides(q, CLOSED, with_body=False)
    links = {name for c in arm.contacts(q, CLOSED, with_body=False) for name in (c.a, c.b)}
    assert {"z1_link02", "z1_link06"} <= links
    assert arm.clearance(q, CLOSED, with_body=False) <= 0


def test_point_between_the_open_jaws(arm, kin):
    point = at(kin.fk(FORWARD), [-0.03, 0.0, 0.015])  # 3 cm behind the tool centre, 15 mm towards the mover
    arm.set_clouds(scene=point)
    assert not arm.collides(FORWARD, OPEN)
    assert arm.collides(FORWARD, CLOSED)
    assert arm.why(FORWARD, CLOSED) == "z1_gripper_mover and scene"


def test_point_on_the_forearm_and_five_cm_off(arm, kin):
    T = kin.frame(FORWARD, "z1_link03")  # forearm tube: axis x at z = 0.055, radius 0.022
    arm.set_clouds(scene=at(T, [0.13, 0.0, 0.077]))
    assert arm.why(FORWARD, CLOSED, with_self=False, with_body=False) == "z1_link03 and scene"
    arm.set_clouds(scene=at(T, [0.13, 0.0, 0.127]))
    assert not arm.collides(FORWARD, CLOSED)
    assert 0.03 < arm.clearance(FORWARD, CLOSED, "scene", with_self=False, with_body=False) <= 0.05


def test_clouds_are_chosen_per_query(arm, kin):
    point = at(kin.fk(FORWARD), [-0.03, 0.0, 0.015])
    arm.set_clouds(scene=np.zeros((0, 3)), object=point)
    assert arm.clouds == ["scene", "object"]
    assert arm.collides(FORWARD, CLOSED)
    assert not arm.collides(FORWARD, CLOSED, clouds="scene")
    assert arm.collides(FORWARD, CLOSED, clouds=["scene", "object"])
    with pytest.raises(InputError):
        arm.collides(FORWARD, CLOSED, clouds="table")
    with pytest.raises(InputError):
        arm.set_clouds(scene=np.zeros((4, 2)))


def test_margin_and_clearance_agree_with_collides(arm, kin):
    rng = np.random.default_rng(0)
    x, y = np.meshgrid(np.linspace(0.4, 0.8, 21), np.linspace(-0.3, 0.3, 31))
    table = np.column_stack([x.ravel(), y.ravel(), np.full(x.size, 0.0)])  # [651, 3] a low table, 2 cm apart
    arm.set_clouds(scene=table)
    outcomes = set()
    for _ in range(40):
        q, g = FORWARD + rng.normal(0.0, 0.6, 6), rng.uniform(OPEN, CLOSED)
        hit, d = arm.collides(q, g), arm.clearance(q, g)
        assert hit == (d <= 0), (q, g, arm.why(q, g), d)
        if d > 0:
            assert arm.collides(q, g, margin=d + 1e-3) and not arm.collides(q, g, margin=max(d - 1e-3, 0.0))
        outcomes.add(hit)
    assert outcomes == {True, False}


def test_distances_of_named_contacts_and_resolution_per_cloud(arm, kin):
    T = kin.frame(FORWARD, "z1_link03")
    point = at(T, [0.13, 0.0, 0.082])  # 5 mm off the forearm tube (axis at z 0.055, radius 0.022)
    arm.set_clouds({"fine": 0.002}, coarse=point, fine=point)
    found = arm.contacts(FORWARD, CLOSED, ["coarse", "fine"], False, False, margin=0.02)
    d = arm.distances(FORWARD, CLOSED, found)
    assert 0.002 < d["z1_link03 and fine"] <= 0.005  # the point's 2 mm voxel
    assert d["z1_link03 and coarse"] < d["z1_link03 and fine"]  # a 1 cm voxel reaches closer
