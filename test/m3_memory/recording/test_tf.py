import numpy as np
import pytest
from transforms3d.euler import euler2mat
from transforms3d.quaternions import axangle2quat

from m3_memory.conventions import invert_T, make_T
from m3_memory.recording.tf import TfBuffer, TfConnectivityError, TfExtrapolationError, TfLookupError, slerp


def pose(a, b, c, t):
    return make_T(euler2mat(a, b, c), t)


def test_chain_composition_and_inverse():
    tf = TfBuffer()
    T_w_b, T_b_c, T_w_o = pose(0.1, 0.2, 0.3, [1, 2, 3]), pose(-0.4, 0.1, 0.0, [0.1, 0, 0.2]), pose(0, 0, 1, [5, 0, 0])
    tf.add("world", "base", T_w_b)
    tf.add("base", "cam", T_b_c)
    tf.add("world", "other", T_w_o)
    np.testing.assert_allclose(tf.lookup("world", "cam", 0.0), T_w_b @ T_b_c, atol=1e-12)
    np.testing.assert_allclose(tf.lookup("cam", "world", 0.0), invert_T(T_w_b @ T_b_c), atol=1e-12)
    # through the common ancestor "world"
    np.testing.assert_allclose(tf.lookup("other", "cam", 0.0), invert_T(T_w_o) @ T_w_b @ T_b_c, atol=1e-12)
    np.testing.assert_allclose(tf.lookup("cam", "cam", 0.0), np.eye(4))
    assert tf.frames() == {"world", "base", "cam", "other"}


def test_dynamic_interpolation_midpoint_and_range():
    tf = TfBuffer(tolerance=0.01)
    tf.add("world", "robot", pose(0, 0, 0, [0, 0, 0]), stamp=1.0)
    tf.add("world", "robot", pose(0, 0, np.pi / 2, [2, 0, 0]), stamp=2.0)
    tf.add("robot", "cam", pose(0.3, 0, 0, [0, 0, 1]))  # static below a dynamic edge
    np.testing.assert_allclose(tf.lookup("world", "robot", 1.5), pose(0, 0, np.pi / 4, [1, 0, 0]), atol=1e-12)
    np.testing.assert_allclose(tf.lookup("world", "robot", 1.25), pose(0, 0, np.pi / 8, [0.5, 0, 0]), atol=1e-12)
    np.testing.assert_allclose(tf.lookup("world", "cam", 2.0), pose(0, 0, np.pi / 2, [2, 0, 0]) @ pose(0.3, 0, 0, [0, 0, 1]),
                               atol=1e-12)
    np.testing.assert_allclose(tf.lookup("world", "robot", 2.005), pose(0, 0, np.pi / 2, [2, 0, 0]), atol=1e-12)
    with pytest.raises(TfExtrapolationError, match="outside its data"):
        tf.lookup("world", "cam", 3.0)
    with pytest.raises(TfLookupError):
        tf.lookup("world", "robot", 0.98)


def test_slerp_takes_the_short_way_round():
    z = np.array([0.0, 0.0, 1.0])
    q0, q1 = axangle2quat(z, np.radians(170)), axangle2quat(z, np.radians(-170))
    np.testing.assert_allclose(abs(slerp(q0, q1, 0.5) @ axangle2quat(z, np.pi)), 1.0, atol=1e-12)
    np.testing.assert_allclose(slerp(q0, -q0, 0.3), q0, atol=1e-12)  # same rotation, opposite sign
    np.testing.assert_allclose(slerp(q0, q0, 0.7), q0, atol=1e-12)


def test_disconnected_frames_and_cycles():
    tf = TfBuffer()
    tf.add("a", "b", np.eye(4))
    tf.add("c", "d", np.eye(4))
    with pytest.raises(TfConnectivityError, match="not connected"):
        tf.lookup("a", "d", 0.0)
    with pytest.raises(TfConnectivityError, match="not connected"):
        tf.lookup("a", "unknown", 0.0)
    tf.add("b", "a", np.eye(4))
    with pytest.raises(TfConnectivityError, match="cycle"):
        tf.lookup("a", "b", 0.0)


def test_last_edge_wins():
    tf = TfBuffer()
    tf.add("world", "cam", pose(0, 0, 0, [1, 0, 0]), stamp=1.0)
    tf.add("world", "cam", pose(0, 0, 0, [2, 0, 0]))  # now static: valid at any stamp
    np.testing.assert_allclose(tf.lookup("world", "cam", 50.0)[:3, 3], [2, 0, 0])
    tf.add("odom", "cam", pose(0, 0, 0, [3, 0, 0]))  # re-parented
    with pytest.raises(TfConnectivityError):
        tf.lookup("world", "cam", 0.0)
    np.testing.assert_allclose(tf.lookup("odom", "cam", 0.0)[:3, 3], [3, 0, 0])
