"""RGB-D odometry on ray-cast frames of the synthetic tabletop, and the trajectory metrics."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from m3_memory.conventions import invert_T, make_T
from m3_memory.errors import InputError
from m3_memory.recording.frame import Frame
from m3_memory.recording.odometry import (
    Odometry,
    OdometryConfig,
    estimate_poses,
    estimate_trajectory,
    fill_depth_gaps,
    register_pair,
    trajectory_errors,
)
from m3_memory.synth import SynthConfig, SyntheticScene

WIDTH, HEIGHT = 320, 240


def _motion(t_m: np.ndarray, axis: np.ndarray, angle_deg: float) -> np.ndarray:
    """Rigid motion [4, 4]: rotation of angle_deg about axis [3], translation t_m [3] (metres)."""
    axis = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    return make_T(Rotation.from_rotvec(np.deg2rad(angle_deg) * axis).as_matrix(), t_m)


def _pose_error(T_a: np.ndarray, T_b: np.ndarray) -> tuple[float, float]:
    """(translation metres, rotation degrees) of inv(T_a) @ T_b."""
    E = invert_T(T_a) @ T_b
    return float(np.linalg.norm(E[:3, 3])), float(np.degrees(Rotation.from_matrix(E[:3, :3]).magnitude()))


@pytest.fixture(scope="module")
def scene() -> SyntheticScene:
    return SyntheticScene(SynthConfig(width=WIDTH, height=HEIGHT, n_frames=8))


@pytest.fixture(scope="module")
def views(scene) -> tuple[list[Frame], np.ndarray]:
    """Three ray-cast frames, each moved by the same known motion (3 cm, 2 degrees) from the
    one before; and that motion T_prev_cur [4, 4]."""
    T_prev_cur = _motion(np.array([0.018, -0.024, 0.0]), np.array([0.3, 1.0, 0.2]), 2.0)
    frames = []
    T = scene.poses[0]
    for i in range(3):
        rgb, depth, _ = scene.render_at(T, scene.K, WIDTH, HEIGHT)
        frames.append(Frame(rgb=rgb, depth=depth, K=scene.K.copy(), T_world_cam=T.copy(), stamp=i / 30.0,
                            name=f"view {i}").validate("synthetic"))
        T = T @ T_prev_cur
    return frames, T_prev_cur


def test_register_pair_recovers_known_motion(views):
    frames, T_prev_cur = views
    result = register_pair(frames[0], frames[1])
    assert not result.failed and result.reason == ""
    assert 0.3 < result.fitness <= 1.0
    dt, dr = _pose_error(T_prev_cur, result.T_prev_cur)
    assert dt < 0.005 and dr < 0.5, (dt, dr)


def test_estimate_poses_streams_copies_from_identity(views):
    frames, T_prev_cur = views
    given = [f.T_world_cam.copy() for f in frames]
    odometry = Odometry()
    out = list(estimate_poses(iter(frames), odometry=odometry))
    assert len(out) == 3 and [f.name for f in out] == [f.name for f in frames]
    np.testing.assert_array_equal(out[0].T_world_cam, np.eye(4))
    for f, T in zip(frames, given):  # inputs untouched
        np.testing.assert_array_equal(f.T_world_cam, T)
    assert all(o is not f for o, f in zip(out, frames))
    assert out[1].rgb is frames[1].rgb  # images shared, not copied
    assert len(odometry.results) == 2 and odometry.failures == 0
    assert odometry.last_result is odometry.results[-1] and odometry.last_result.index == 2
    dt, dr = _pose_error(T_prev_cur @ T_prev_cur, out[2].T_world_cam)
    assert dt < 0.01 and dr < 1.0, (dt, dr)
    errors = trajectory_errors([f.T_world_cam for f in out], given)
    assert errors["rpe_trans_max_m"] < 0.005 and errors["rpe_rot_max_deg"] < 0.5, errors


def test_failed_registration_keeps_previous_pose(views):
    frames, _ = views
    blank = Frame(rgb=np.zeros_like(frames[0].rgb), depth=np.zeros_like(frames[0].depth), K=frames[0].K,
                  T_world_cam=None, stamp=1.0, name="blank")
    other_size = Frame(rgb=frames[0].rgb[:-8], depth=frames[0].depth[:-8], K=frames[0].K, T_world_cam=None,
                       stamp=2.0, name="cropped")
    odometry = Odometry()
    out = list(estimate_poses([frames[0], blank, other_size], odometry=odometry))
    assert odometry.failures == 2 and all(r.failed and r.reason for r in odometry.results)
    for f in out:
        np.testing.assert_array_equal(f.T_world_cam, np.eye(4))
    assert "intrinsics" in odometry.results[1].reason


def test_trajectory_flags_an_unregistrable_frame_and_tracks_past_it(views):
    frames, T_prev_cur = views
    blank = Frame(rgb=np.zeros_like(frames[0].rgb), depth=np.zeros_like(frames[0].depth), K=frames[0].K,
                  T_world_cam=None, stamp=0.5, name="blank")
    sequence = [frames[0], blank, frames[1], frames[2]]
    trajectory = estimate_trajectory(sequence)
    assert trajectory.flagged == [1]  # no registration reaches the blank frame: no guessed pose
    tracking = [(e.target, e.source, e.failed) for e in trajectory.edges if not e.loop]
    assert tracking == [(0, 1, True), (0, 2, False), (2, 3, False)]  # tracking skips the blank frame
    assert any(e.loop and not e.failed and (e.target, e.source) == (0, 3) for e in trajectory.edges)
    np.testing.assert_array_equal(trajectory.poses[0], np.eye(4))
    for i, k in ((2, 1), (3, 2)):
        dt, dr = _pose_error(np.linalg.matrix_power(T_prev_cur, k), trajectory.poses[i])
        assert dt < 0.01 and dr < 1.0, (i, dt, dr)
    out = list(estimate_poses(sequence))  # loop closure by default: the flagged frame has no pose
    assert out[1].T_world_cam is None and out[3].T_world_cam is not None


def test_fill_depth_gaps_closes_cracks_not_edges_or_holes():
    depth = np.full((12, 12), 1.0, dtype=np.float32)
    depth[:, 6:] = 2.0  # a depth edge between columns 5 and 6
    depth[4, :] = 0.0  # a one-pixel crack across both surfaces
    depth[8:11, 1:4] = 0.0  # a 3x3 hole
    filled = fill_depth_gaps(depth, max_spread=0.07)
    assert filled.dtype == np.float32 and depth[4, 2] == 0.0  # input untouched
    np.testing.assert_array_equal(filled[4, :5], 1.0)
    np.testing.assert_array_equal(filled[4, 7:], 2.0)
    assert filled[4, 5] == 0.0 and filled[4, 6] == 0.0  # neighbours straddle the edge
    assert filled[9, 2] == 0.0  # hole centre has no valid neighbour
    assert np.count_nonzero(filled == 0) < np.count_nonzero(depth == 0)


def test_sparse_depth_still_registers(views):
    frames, T_prev_cur = views
    keep = np.ones(frames[0].depth.shape, dtype=bool)
    keep[::4, :] = False  # every 4th row and column cracked, as re-projected depth is
    keep[:, ::4] = False
    sparse = [Frame(rgb=f.rgb, depth=np.where(keep, f.depth, 0.0).astype(np.float32), K=f.K, T_world_cam=None,
                    stamp=f.stamp) for f in frames[:2]]
    result = register_pair(*sparse)
    dt, dr = _pose_error(T_prev_cur, result.T_prev_cur)
    assert not result.failed and dt < 0.005 and dr < 0.5, (dt, dr)


def test_config_rejects_bad_values():
    with pytest.raises(InputError, match="method"):
        OdometryConfig(method="icp")
    with pytest.raises(InputError, match="iterations"):
        OdometryConfig(iterations=())
    with pytest.raises(InputError, match="positive"):
        OdometryConfig(depth_max=0.0)


def _trajectory(n: int = 6) -> list[np.ndarray]:
    """A curved camera path T_world_cam [n][4, 4]."""
    return [_motion(np.array([0.2 * i, 0.05 * i**2, 0.1 * np.sin(i)]), np.array([0.1, 1.0, 0.3]), 10.0 * i)
            for i in range(n)]


def test_trajectory_errors_zero_for_exact_poses_in_another_world():
    gt = _trajectory()
    G = _motion(np.array([1.0, -2.0, 0.5]), np.array([1.0, 0.2, -0.4]), 70.0)
    errors = trajectory_errors([G @ T for T in gt], gt)
    assert errors["frames"] == 6
    for key, value in errors.items():
        if key != "frames":
            assert value == pytest.approx(0.0, abs=1e-6), key


def test_trajectory_errors_measure_a_known_perturbation():
    gt = _trajectory()
    est = [T.copy() for T in gt]
    est[3][:3, 3] += [0.0, 0.01, 0.0]  # camera 3 off by 1 cm
    est[5] = est[5] @ _motion(np.zeros(3), np.array([0.0, 0.0, 1.0]), 3.0)  # last camera turned 3 degrees in place
    errors = trajectory_errors(est, gt)
    assert errors["ate_first_max_m"] == pytest.approx(0.01)
    assert errors["ate_first_rmse_m"] == pytest.approx(0.01 / np.sqrt(6))
    assert errors["ate_rigid_rmse_m"] <= errors["ate_first_rmse_m"] + 1e-12
    assert errors["rpe_trans_max_m"] == pytest.approx(0.01, rel=1e-6)  # pairs (2, 3) and (3, 4)
    assert errors["rpe_trans_mean_m"] == pytest.approx(2 * 0.01 / 5, rel=1e-6)
    assert errors["rpe_rot_max_deg"] == pytest.approx(3.0, rel=1e-6)  # pair (4, 5) only
    assert errors["rpe_rot_mean_deg"] == pytest.approx(3.0 / 5, rel=1e-6)


def test_trajectory_errors_rigid_fit_ignores_a_bad_first_pose():
    gt = _trajectory()
    est = [T.copy() for T in gt]
    est[0] = est[0] @ _motion(np.zeros(3), np.array([0.0, 1.0, 0.0]), 20.0)  # first camera turned 20 degrees
    errors = trajectory_errors(est, gt)
    assert errors["ate_first_max_m"] > 0.1
    assert errors["ate_rigid_rmse_m"] == pytest.approx(0.0, abs=1e-9)


def test_trajectory_errors_short_and_mismatched():
    one = trajectory_errors([np.eye(4)], [np.eye(4)])
    assert one["ate_first_rmse_m"] == 0.0 and one["rpe_trans_mean_m"] is None and one["ate_rigid_rmse_m"] is None
    two = trajectory_errors(_trajectory(2), _trajectory(2))
    assert two["rpe_rot_max_deg"] == pytest.approx(0.0, abs=1e-6) and two["ate_rigid_max_m"] is None
    with pytest.raises(InputError, match="equally long"):
        trajectory_errors(_trajectory(3), _trajectory(2))
