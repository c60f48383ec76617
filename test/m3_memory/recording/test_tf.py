import numpy as np
import pytest
from transforms3d.euler import euler2mat

from m3_memory.conventions import invert_T, make_T
from m3_memory.recording.tf import TfBuffer, TfLookupError


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
    np.testing.assert_allclose(tf.lookup("other", "cam", 0.0), invert_T(T_w_o) @ T_w_b @ T_b_c, atol=1e-12)
    np.testing.assert_allclose(tf.lookup("cam", "cam", 0.0), np.eye(4))


def test_dynamic_interpolation():
    tf = TfBuffer(tolerance=0.01)
    tf.add("world", "robot", pose(0, 0, 0, [0, 0, 0]), stamp=1.0)
    tf.add("world", "robot", pose(0, 0, np.pi / 2, [2, 0, 0]), stamp=2.0)
    mid = tf.lookup("world", "robot", 1.5)
    np.testing.assert_allclose(mid, pose(0, 0, np.pi / 4, [1, 0, 0]), atol=1e-12)
    np.testing.assert_allclose(tf.lookup("world", "robot", 2.0), pose(0, 0, np.pi / 2, [2, 0, 0]), atol=1e-12)
    with pytest.raises(TfLookupError, match="outside"):
        tf.lookup("world", "robot", 3.0)


def test_disconnected_frames():
    tf = TfBuffer()
    tf.add("a", "b", np.eye(4))
    tf.add("c", "d", np.eye(4))
    with pytest.raises(TfLookupError, match="not connected"):
        tf.lookup("a", "d", 0.0)
