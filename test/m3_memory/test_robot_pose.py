"""RobotPose: where the robot's base stands in a memory's world frame."""

import numpy as np
import pytest

from m3_memory.errors import InputError
from m3_memory.robot_pose import RobotPose, T_from_xyz_yaw


def test_from_xyz_yaw_maps_base_axes_into_the_world():
    pose = RobotPose.from_xyz_yaw(0.05, 0.83, 0.55, -np.pi / 2, source="test")
    T = pose.T_world_base
    assert T.dtype == np.float64 and T.shape == (4, 4) and pose.frame == "base_link"
    np.testing.assert_allclose(T @ [1.0, 0.0, 0.0, 1.0], [0.05, -0.17, 0.55, 1.0], atol=1e-12)  # 1 m ahead: towards -y
    np.testing.assert_allclose(T @ [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 1.0, 0.0], atol=1e-12)  # z stays up
    assert pose.yaw == pytest.approx(-np.pi / 2)
    assert pose.describe() == "base_link at x 0.050 y 0.830 z 0.550 m, yaw -90.0 deg (from test)"


def test_json_round_trip():
    pose = RobotPose(T_from_xyz_yaw(1.0, -2.0, 0.5, 2.5), source="tf world->base_link", frame="trunk")
    back = RobotPose.from_json(pose.to_json())
    np.testing.assert_array_equal(back.T_world_base, pose.T_world_base)
    assert (back.source, back.frame) == ("tf world->base_link", "trunk")


@pytest.mark.parametrize("T, words", [(np.eye(3), "shape"), (np.full((4, 4), np.nan), "NaN"),
                                      (np.diag([2.0, 1.0, 1.0, 1.0]), "non-rigid"), ([["a"] * 4] * 4, "matrix of numbers")])
def test_non_rigid_poses_are_refused(T, words):
    with pytest.raises(InputError, match=words) as err:
        RobotPose(T, source="somewhere")
    assert "robot pose (somewhere)" in str(err.value) and "\n" not in str(err.value)
