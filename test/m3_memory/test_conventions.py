import numpy as np
import pytest
import transforms3d.euler as te

from m3_memory.conventions import (
    GL_FROM_CV,
    T_from_quat_wxyz,
    backproject,
    depth_from_u16,
    depth_to_u16,
    invert_T,
    make_T,
    quat_wxyz_from_T,
    quat_wxyz_to_xyzw,
    quat_xyzw_to_wxyz,
    rigid_error,
)


def random_pose(rng):
    return make_T(te.euler2mat(*rng.uniform(-np.pi, np.pi, 3)), rng.normal(size=3))


def test_quaternion_round_trip_and_orders():
    rng = np.random.default_rng(1)
    for _ in range(20):
        T = random_pose(rng)
        q = quat_wxyz_from_T(T)
        assert q[0] >= 0 and np.isclose(np.linalg.norm(q), 1)
        np.testing.assert_allclose(T_from_quat_wxyz(q, T[:3, 3]), T, atol=1e-12)
        np.testing.assert_array_equal(quat_xyzw_to_wxyz(quat_wxyz_to_xyzw(q)), q)
    # 90 degrees about z: wxyz = (cos45, 0, 0, sin45); xyzw puts w last
    q = quat_wxyz_from_T(make_T(te.euler2mat(0, 0, np.pi / 2), [0, 0, 0]))
    np.testing.assert_allclose(quat_wxyz_to_xyzw(q), [0, 0, np.sqrt(0.5), np.sqrt(0.5)], atol=1e-12)


def test_invert_and_compose():
    rng = np.random.default_rng(2)
    T_a_b, T_b_c = random_pose(rng), random_pose(rng)
    np.testing.assert_allclose(invert_T(T_a_b) @ T_a_b, np.eye(4), atol=1e-12)
    p_c = np.array([0.3, -0.2, 1.5, 1.0])
    np.testing.assert_allclose((T_a_b @ T_b_c) @ p_c, T_a_b @ (T_b_c @ p_c), atol=1e-12)


@pytest.mark.parametrize("bad, words", [
    (np.full((4, 4), np.nan), "NaN"),
    (np.diag([2.0, 2.0, 2.0, 1.0]), "non-rigid"),
    (np.diag([1.0, 1.0, -1.0, 1.0]), "non-rigid"),
    (np.eye(3), "shape"),
])
def test_rigid_error_names_the_problem(bad, words):
    assert words in rigid_error(bad)


def test_rigid_error_accepts_rigid():
    assert rigid_error(random_pose(np.random.default_rng(3))) is None


def test_depth_u16_round_trip_and_invalid():
    d = np.array([[0.0, 0.0004, 1.2341, 70.0, np.nan]], dtype=np.float32)
    u = depth_to_u16(d)
    np.testing.assert_array_equal(u, [[0, 0, 1234, 0, 0]])  # 70 m overflows uint16 mm -> invalid
    np.testing.assert_allclose(depth_from_u16(u), [[0, 0, 1.234, 0, 0]], atol=1e-7)
    assert depth_from_u16(u).dtype == np.float32


def test_gl_to_cv_flips_y_and_z():
    T_world_gl = make_T(np.eye(3), [1, 2, 3])
    T_world_cv = T_world_gl @ GL_FROM_CV
    # an OpenCV camera looks along +z; the OpenGL camera looks along -z
    np.testing.assert_allclose(T_world_cv[:3, 2], [0, 0, -1])
    np.testing.assert_allclose(T_world_cv[:3, 1], [0, -1, 0])


def test_backproject_inverts_projection():
    K = np.array([[500.0, 0, 319.5], [0, 500.0, 239.5], [0, 0, 1]])
    depth = np.zeros((480, 640), np.float32)
    depth[100, 200] = 2.0
    T = make_T(te.euler2mat(0.1, 0.2, 0.3), [1, 2, 3])
    p_world = backproject(depth, K, T)
    p_cam = invert_T(T) @ np.append(p_world[0], 1)
    uvw = K @ p_cam[:3]
    np.testing.assert_allclose(uvw[:2] / uvw[2], [200, 100], atol=1e-9)
    np.testing.assert_allclose(p_cam[2], 2.0)


def test_scale_intrinsics_keeps_the_image_edges():
    from m3_memory.conventions import intrinsics_matrix, scale_intrinsics

    K = intrinsics_matrix(500.0, 400.0, 319.5, 239.5)  # principal point at the centre of 640 x 480
    half = scale_intrinsics(K, 0.5, 0.5)
    np.testing.assert_allclose(half, intrinsics_matrix(250.0, 200.0, 159.5, 119.5))  # centre of 320 x 240
    np.testing.assert_allclose(scale_intrinsics(half, 2.0, 2.0), K)


def test_fit_transform_recovers_a_motion_and_a_similarity_and_says_when_it_is_undetermined():
    from scipy.spatial.transform import Rotation

    from m3_memory.conventions import fit_transform, make_T
    from m3_memory.errors import InputError

    rng = np.random.default_rng(5)
    src = rng.normal(size=(7, 3))  # [n, 3]
    T = make_T(Rotation.random(random_state=4).as_matrix(), [0.3, -1.2, 2.0])
    dst = src @ T[:3, :3].T + T[:3, 3]
    np.testing.assert_allclose(fit_transform(src, dst), T, atol=1e-9)
    S = T.copy()
    S[:3, :3] *= 0.4
    np.testing.assert_allclose(fit_transform(src, src @ S[:3, :3].T + S[:3, 3], with_scale=True), S, atol=1e-9)
    mirrored = dst * [1.0, 1.0, -1.0]  # the best rotation, never a reflection
    assert np.linalg.det(fit_transform(src, mirrored)[:3, :3]) > 0.999
    line = np.outer(np.arange(5.0), [1.0, 2.0, 0.5])  # [5, 3] on one line
    fitted = fit_transform(line, line @ T[:3, :3].T + T[:3, 3])  # some rotation about the line: still exact
    np.testing.assert_allclose(line @ fitted[:3, :3].T + fitted[:3, 3], line @ T[:3, :3].T + T[:3, 3], atol=1e-9)
    with pytest.raises(InputError, match="one line"):
        fit_transform(line, line, unique=True)
    with pytest.raises(InputError, match="3 or more"):
        fit_transform(src[:2], dst[:2])
