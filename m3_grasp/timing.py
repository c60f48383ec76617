"""Time parameterisation of joint paths within velocity and acceleration limits (toppra), and
the stop along a timed trajectory.

A joint vector ``x`` [7] holds the six Z1 arm joints (z1_joint1..6) and the gripper joint, in
radians. A path is a list of such vectors (waypoints) traced as a cubic spline; toppra finds the
fastest timing along it that keeps every joint's speed and acceleration within the limits, from
rest to rest. A :class:`Trajectory` joins such segments back to back in time and is sampled at a
backend's own control period. :meth:`Trajectory.stop_from` slows the motion down along the same
path (the path the planner checked for collisions) to rest, within the limits.
Units: radians, seconds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import toppra
import toppra.algorithm
import toppra.constraint

logging.getLogger("toppra").setLevel(logging.ERROR)  # a failed attempt is retried below, then reported

MARGIN = 0.98  # toppra's limits are this fraction of the given ones: its grid is exact, its splines nearly so
DOF = 7  # six arm joints and the gripper


@dataclass(frozen=True)
class Limits:
    """Per-joint limits of the arm and gripper: velocity [7] rad/s, acceleration [7] rad/s^2."""

    velocity: np.ndarray
    acceleration: np.ndarray

    def scaled(self, fraction: float) -> Limits:
        return Limits(self.velocity * fraction, self.acceleration * fraction)


class TimingError(ValueError):
    """toppra found no timing for a path within the limits."""


class Segment:
    """One rest-to-rest move along a path, timed by toppra. ``x(t, order)`` [T, 7] for t in [0, duration]."""

    def __init__(self, waypoints: np.ndarray, limits: Limits):
        path = np.asarray(waypoints, dtype=np.float64)  # [n, 7]
        keep = np.r_[True, np.abs(np.diff(path, axis=0)).max(1) > 1e-9]
        path = path[keep]
        self.start, self.end = path[0].copy(), path[-1].copy()
        if len(path) == 1:  # nothing moves
            self.duration, self._traj = 0.0, None
            return
        ss = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(path, axis=0), axis=1))]
        spline = toppra.SplineInterpolator(ss, path, bc_type="clamped")  # path parameter: joint-space arc length (rad)
        v, a = limits.velocity * MARGIN, limits.acceleration * MARGIN
        constraints = [toppra.constraint.JointVelocityConstraint(np.c_[-v, v]),
                       toppra.constraint.JointAccelerationConstraint(np.c_[-a, a])]
        for n in (max(100, 20 * len(path)), max(400, 80 * len(path))):  # a finer grid when the first is badly conditioned
            gridpoints = np.linspace(0.0, ss[-1], n)
            self._traj = toppra.algorithm.TOPPRA(constraints, spline, gridpoints=gridpoints,
                                                 parametrizer="ParametrizeConstAccel").compute_trajectory(0.0, 0.0)
            if self._traj is not None:
                break
        else:
            raise TimingError(f"toppra found no timing for a path of {len(path)} waypoints over {ss[-1]:.3f} rad")
        self.duration = float(self._traj.duration)

    def __call__(self, t: np.ndarray, order: int = 0) -> np.ndarray:
        t = np.clip(np.atleast_1d(np.asarray(t, dtype=np.float64)), 0.0, self.duration)
        if self._traj is None:
            return np.repeat((self.start if order == 0 else np.zeros(DOF))[None], len(t), axis=0)
        return np.asarray(self._traj(t, order)).reshape(len(t), DOF)


class Trajectory:
    """Segments back to back in time, each starting where (and when) the previous one ends at rest."""

    def __init__(self, segments: list[Segment]):
        if not segments:
            raise ValueError("a trajectory needs at least one segment")
        self.segments = segments
        self.starts = np.r_[0.0, np.cumsum([s.duration for s in segments])]  # [S + 1] s

    @property
    def duration(self) -> float:
        return float(self.starts[-1])

    @property
    def start(self) -> np.ndarray:
        return self.segments[0].start

    @property
    def end(self) -> np.ndarray:
        return self.segments[-1].end

    def __call__(self, t: np.ndarray, order: int = 0) -> np.ndarray:
        """Positions (order 0), velocities (1) or accelerations (2) [T, 7] at times t [T] (s)."""
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        out = np.empty((len(t), DOF))
        index = np.clip(np.searchsorted(self.starts, t, side="right") - 1, 0, len(self.segments) - 1)
        for k in np.unique(index):
            mask = index == k
            out[mask] = self.segments[k](t[mask] - self.starts[k], order)
        return out

    def times(self, dt: float) -> np.ndarray:
        """Sample times [T] (s): every ``dt`` from 0, and the end."""
        t = np.arange(0.0, self.duration, dt)
        return np.append(t, self.duration) if len(t) == 0 or self.duration - t[-1] > 1e-9 else t

    def sample(self, dt: float) -> np.ndarray:
        """Positions [T, 7] every ``dt`` seconds, from the start to the end."""
        return self(self.times(dt))

    def stop_from(self, t0: float, dt: float, limits: Limits, before: np.ndarray | None = None) -> np.ndarray:
        """Commands [K, 7], one every ``dt`` s, that bring the motion at time ``t0`` to rest along
        the trajectory's own path: the path time advances at a rate falling from 1 to 0 as
        (1 + cos(pi tau / T)) / 2 over T seconds, with T the shortest (of a geometric series)
        whose commands, after ``before`` [B, 7] (the commands already sent, the last at t0), keep
        within ``limits``. The first returned command follows the one at t0; the last is at rest."""
        before = self(np.array([t0 - dt, t0])) if before is None else np.asarray(before, dtype=np.float64)
        T = 2 * dt
        while True:
            tau = np.arange(1, int(np.ceil(T / dt)) + 1) * dt  # [K]
            tau = np.minimum(tau, T)
            s = t0 + (tau + T / np.pi * np.sin(np.pi * tau / T)) / 2  # integral of the rate
            x = self(np.minimum(s, self.duration))
            x = np.vstack([x, x[-1:]])  # one more period at rest: the last step's speed becomes 0
            if within_limits(np.vstack([before[-2:], x]), dt, limits) or T > 60.0:
                return x
            T *= 1.25


def within_limits(x: np.ndarray, dt: float, limits: Limits) -> bool:
    """Whether commands x [T, 7] sent every dt seconds keep within the speed and acceleration
    limits (finite differences)."""
    v = np.diff(x, axis=0) / dt
    a = np.diff(v, axis=0) / dt
    return bool(np.all(np.abs(v) <= limits.velocity + 1e-9) and np.all(np.abs(a) <= limits.acceleration + 1e-9))
