"""Time parameterisation (toppra) and the stop along the path: within the limits, on the path."""

from __future__ import annotations

import numpy as np
import pytest

from m3_grasp.timing import Limits, Segment, Trajectory, within_limits

LIMITS = Limits(np.full(7, 0.9), np.full(7, 1.5))  # rad/s, rad/s^2
DT = 0.002


@pytest.mark.parametrize("distance", [1e-9, 1e-6, 1e-3, 0.05, 2.0])
def test_rest_to_rest_moves_of_any_length_keep_the_limits(distance):
    a = np.zeros(7)
    b = a + distance * np.array([1.0, -0.5, 0.3, 0.0, 0.2, -1.0, 0.4])
    segment = Segment(np.array([a, b]), LIMITS)
    x = Trajectory([segment]).sample(DT)
    np.testing.assert_allclose(x[0], a, atol=1e-12)
    np.testing.assert_allclose(x[-1], b, atol=1e-9)
    assert within_limits(x, DT, LIMITS)


def test_a_curved_path_is_followed_within_limits():
    s = np.linspace(0.0, 1.0, 30)[:, None]
    path = np.hstack([np.sin(2 * s), 0.5 * s, -s**2, np.cos(3 * s) - 1, 0.2 * s, -0.3 * s, np.zeros_like(s)])
    trajectory = Trajectory([Segment(path, LIMITS), Segment(path[::-1], LIMITS)])
    x = trajectory.sample(DT)
    assert within_limits(x, DT, Limits(LIMITS.velocity, LIMITS.acceleration * 1.05))  # spline between toppra's grid
    np.testing.assert_allclose(trajectory(trajectory.starts[1:2])[0], path[-1], atol=1e-9)  # segments meet at rest
    assert np.abs(trajectory(trajectory.starts[1:2], 1)).max() < 1e-6
    dense = np.vstack([np.linspace(p, q, 50) for p, q in zip(path[:-1], path[1:])])  # the waypoints' polyline
    nearest = np.min(np.linalg.norm(x[::10, None, :] - dense[None], axis=2), axis=1)
    assert nearest.max() < 0.01  # on the path: the spline through the waypoints stays within 1e-2 rad of their polyline


@pytest.mark.parametrize("fraction", [0.05, 0.3, 0.5, 0.77, 0.99])
def test_stop_decelerates_along_the_path_to_rest(fraction):
    a, b = np.zeros(7), np.array([1.2, -0.8, 0.5, 0.3, 0.0, 0.9, -0.6])
    trajectory = Trajectory([Segment(np.array([a, b]), LIMITS)])
    t = trajectory.times(DT)
    k = int(fraction * (len(t) - 1))
    sent = trajectory(t[: k + 1])
    tail = trajectory.stop_from(t[k], DT, LIMITS, sent[-2:])
    x = np.vstack([sent, tail])
    assert within_limits(x, DT, LIMITS)
    np.testing.assert_allclose(x[-1], x[-2], atol=1e-12)  # at rest
    direction = (b - a) / np.linalg.norm(b - a)
    off_path = x - np.outer((x - a) @ direction, direction)
    assert np.abs(off_path).max() < 1e-9  # a straight path stays straight
    assert np.all(np.diff((x - a) @ direction) >= -1e-12)  # never backwards
