"""The arm's measured state: where a plan starts and what execution compares against."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from m3_memory.errors import InputError


@dataclass(frozen=True)
class ArmState:
    """Measured joint positions q [6] (z1_joint1..6, rad), the gripper joint (rad; 0 closed,
    negative open) and the joint speeds qd [6] (rad/s), with where they came from (the SDK's
    lowstate, /joint_states, --start-joints, the simulation, or the assumed rest pose)."""

    q: np.ndarray
    gripper: float = 0.0
    qd: np.ndarray = field(default_factory=lambda: np.zeros(6))
    source: str = ""

    def __post_init__(self):
        object.__setattr__(self, "q", np.asarray(self.q, dtype=np.float64).reshape(-1))
        object.__setattr__(self, "qd", np.asarray(self.qd, dtype=np.float64).reshape(-1))
        object.__setattr__(self, "gripper", float(self.gripper))
        if self.q.shape != (6,) or self.qd.shape != (6,):
            raise InputError(self.source or "arm state", f"needs 6 joint positions and 6 speeds, got {self.q.size} and {self.qd.size}")

    @property
    def x(self) -> np.ndarray:
        """Arm joints and gripper [7] (rad)."""
        return np.append(self.q, self.gripper)

    @classmethod
    def rest(cls) -> ArmState:
        """The Z1's folded rest pose (all joints 0, gripper closed): assumed, not measured."""
        return cls(np.zeros(6), 0.0, np.zeros(6), "the rest pose (assumed, not measured)")

    @classmethod
    def parse(cls, text: str, what: str = "--start-joints") -> ArmState:
        """'q1,...,q6[,gripper]' in radians -> ArmState; InputError naming ``what`` otherwise."""
        try:
            values = [float(v) for v in text.split(",")]
        except ValueError:
            values = []
        if len(values) not in (6, 7) or not np.all(np.isfinite(values)):
            raise InputError(what, f"expected 6 or 7 comma-separated finite numbers (z1_joint1..6[, gripper], rad), got '{text}'")
        return cls(values[:6], values[6] if len(values) == 7 else 0.0, np.zeros(6), what)
