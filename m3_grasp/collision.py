"""Arm and gripper collision geometry against point clouds (all in base_link, metres).

The arm is a chain of capsules between successive frame origins of the URDF chain (radii:
Unitree's 65 mm joint motors); the gripper is three boxes in the tool frame (x approach,
z closing): the palm and two fingers at +-width/2. Approximate, conservative shapes.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from m3_grasp.kinematics import CHAIN_FRAMES, Z1Kinematics

# (from frame, to frame, radius m): base .. gripper stator; the jaws are the boxes below.
ARM_CAPSULES = tuple(zip(CHAIN_FRAMES[:7], CHAIN_FRAMES[1:8], (0.035, 0.035, 0.035, 0.03, 0.035, 0.035, 0.035)))
FINGER_DEPTH = 0.08  # m, jaw length behind the grip centre (along -x of the tool frame); the palm starts there
FINGER_TIP = 0.015  # m, finger beyond the grip centre
FINGER_BREADTH = 0.03  # m, along y of the tool frame
FINGER_THICKNESS = 0.012  # m, along z
PALM_HALF = (0.035, 0.04)  # m, half sizes of the gripper body along y and z


def finger_region(width: float) -> tuple[np.ndarray, np.ndarray]:
    """Box (lo [3], hi [3]) in the tool frame swept by the jaws when they close from ``width``."""
    return (np.array([-FINGER_DEPTH, -FINGER_BREADTH / 2, -width / 2]),
            np.array([FINGER_TIP, FINGER_BREADTH / 2, width / 2]))


def gripper_boxes(width: float, jaw_reach: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """Palm and both fingers, open to ``width`` metres, as boxes (lo [3], hi [3]) in the tool frame."""
    y, t = FINGER_BREADTH / 2, FINGER_THICKNESS
    palm = (np.array([-jaw_reach - 0.05, -PALM_HALF[0], -PALM_HALF[1]]),
            np.array([-FINGER_DEPTH, PALM_HALF[0], PALM_HALF[1]]))
    upper = (np.array([-FINGER_DEPTH, -y, width / 2]), np.array([FINGER_TIP, y, width / 2 + t]))
    lower = (np.array([-FINGER_DEPTH, -y, -width / 2 - t]), np.array([FINGER_TIP, y, -width / 2]))
    return [palm, upper, lower]


def in_box(points: np.ndarray, box: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Mask [N] of points [N, 3] inside an axis-aligned box (lo, hi)."""
    return np.all((points >= box[0]) & (points <= box[1]), axis=1)


class Obstacles:
    """A point cloud [K, 3] in base_link with a KD-tree for clearance queries."""

    def __init__(self, points_base: np.ndarray):
        self.points = np.asarray(points_base, dtype=np.float64).reshape(-1, 3)
        self.tree = cKDTree(self.points) if len(self.points) else None

    def segment_clearance(self, a: np.ndarray, b: np.ndarray, radius: float) -> float:
        """Distance (m) from the capsule a-b of ``radius`` to the nearest point (< 0: penetration)."""
        if self.tree is None:
            return np.inf
        n = max(2, int(np.ceil(np.linalg.norm(b - a) / 0.01)) + 1)
        samples = a + np.linspace(0.0, 1.0, n)[:, None] * (b - a)  # [n, 3], 1 cm apart
        return float(self.tree.query(samples)[0].min()) - radius

    def arm_clearance(self, kin: Z1Kinematics, q: np.ndarray) -> float:
        """Smallest clearance (m) of the arm capsules at configuration q [6]."""
        p = dict(zip(CHAIN_FRAMES, kin.chain_points(q)))
        return min(self.segment_clearance(p[a], p[b], r) for a, b, r in ARM_CAPSULES)

    def points_in_boxes(self, T_base_ee: np.ndarray, boxes: list[tuple[np.ndarray, np.ndarray]]) -> int:
        """How many points fall inside any of the tool-frame boxes at tool pose T_base_ee [4, 4]."""
        if self.tree is None:
            return 0
        count = 0
        for lo, hi in boxes:
            centre = T_base_ee[:3, :3] @ ((lo + hi) / 2) + T_base_ee[:3, 3]
            idx = self.tree.query_ball_point(centre, float(np.linalg.norm(hi - lo)) / 2)
            if idx:
                local = (self.points[idx] - T_base_ee[:3, 3]) @ T_base_ee[:3, :3]  # [k, 3] tool frame
                count += int(in_box(local, (lo, hi)).sum())
        return count
