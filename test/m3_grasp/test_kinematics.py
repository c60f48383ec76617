"""FK against poses computed by hand from the URDF offsets; IK round trips; bad URDFs."""

from __future__ import annotations

import numpy as np
import pytest

from m3_grasp.kinematics import POSITION_TOL, ROTATION_TOL, Z1Kinematics, pose_errors
from m3_grasp.robot import default_urdf
from m3_memory.errors import InputError

MOUNT = np.array([0.3455, 0.0, 0.085])  # z1_base_link in base_link
SHOULDER = MOUNT + [0, 0, 0.0585 + 0.045]  # joint2
TOOL = 0.07 + 0.0492 + 0.051 + 0.149  # joint4 -> tool centre along the tool axis


def Ry(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def Rz(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def Rx(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


FOREARM = np.array([0.218, 0.0, 0.057])  # joint3 -> joint4
HAND = FOREARM + [TOOL, 0, 0]  # joint3 -> tool centre at zero wrist angles
CASES = [  # q, expected tool position in base_link, expected rotation
    (np.zeros(6), SHOULDER + [-0.35, 0, 0] + HAND, np.eye(3)),
    ([np.pi / 2, 0, 0, 0, 0, 0], MOUNT + Rz(np.pi / 2) @ (SHOULDER - MOUNT + [-0.35, 0, 0] + HAND), Rz(np.pi / 2)),
    ([0, np.pi / 2, 0, 0, 0, 0], SHOULDER + [0, 0, 0.35] + Ry(np.pi / 2) @ HAND, Ry(np.pi / 2)),
    ([0, 0, 0, -np.pi / 2, 0, 0], SHOULDER + [-0.35, 0, 0] + FOREARM + [0, 0, TOOL], Ry(-np.pi / 2)),
    ([0, 0, 0, 0, 0, np.pi / 2], SHOULDER + [-0.35, 0, 0] + HAND, Rx(np.pi / 2)),
]


@pytest.mark.parametrize("q, position, rotation", CASES)
def test_fk_matches_hand_computation(kin, q, position, rotation):
    T = kin.fk(q)
    np.testing.assert_allclose(T[:3, 3], position, atol=1e-9)
    np.testing.assert_allclose(T[:3, :3], rotation, atol=1e-9)


def test_zero_pose_agrees_with_unitree_documentation(kin):
    """Unitree's Z1 docs: joint6 at [-0.0128, 0, 0.1605] in the arm base frame at zero pose."""
    T = np.linalg.inv(kin.T_base_armbase) @ kin.frame(np.zeros(6), "z1_link06")
    np.testing.assert_allclose(T[:3, 3], [-0.0128, 0, 0.1605], atol=1e-9)


def test_ik_round_trips_random_poses(kin):
    rng = np.random.default_rng(3)
    for _ in range(60):
        q = rng.uniform(kin.lower + 0.02, kin.upper - 0.02)
        target = kin.fk(q)
        result = kin.ik(target, rng=rng)
        assert result.success, result
        p_err, r_err = pose_errors(kin.fk(result.q), target)
        assert p_err < POSITION_TOL and r_err < ROTATION_TOL
        assert kin.within_limits(result.q, kin.margin)


def test_ik_reports_unreachable_poses(kin):
    T = np.eye(4)
    T[:3, 3] = [2.0, 0.0, 0.3]
    result = kin.ik(T)
    assert not result.success and result.position_error > 0.5
    assert kin.reach_excess(T) > 0.5 and not kin.reachable(T)


def test_gripper_width_and_angle_are_inverse(kin):
    g = kin.gripper
    assert 0.09 < g.max_width <= 0.1 + 1e-9 and g.lower < 0 == g.upper
    for w in (0.0, 0.03, 0.08):
        assert g.width(g.angle(w)) == pytest.approx(w)


@pytest.mark.parametrize("drop, needle", [("camera_color_optical_frame", "no link 'camera_color_optical_frame'"),
                                          ("z1_ee_link", "no link 'z1_ee_link'")])
def test_urdf_missing_a_link_is_one_line(tmp_path, drop, needle):
    text = default_urdf().read_text()
    start = text.index(f'<link name="{drop}"/>')
    joint_start = text.index("<joint", start)
    end = text.index("</joint>", joint_start) + len("</joint>")
    broken = tmp_path / "broken.urdf"
    broken.write_text(text[:start] + text[end:])
    with pytest.raises(InputError, match=needle) as err:
        Z1Kinematics.from_urdf(broken)
    assert "\n" not in str(err.value)


def test_urdf_not_parsing_is_one_line(tmp_path):
    bad = tmp_path / "bad.urdf"
    bad.write_text("<robot name='x'><link name='a'/><joint name='j' type='fixed'><parent link='a'/></joint></robot>")
    with pytest.raises(InputError) as err:
        Z1Kinematics.from_urdf(bad)
    assert "\n" not in str(err.value)
