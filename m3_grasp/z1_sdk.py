"""The Z1 through Unitree's SDK (unitreerobotics/z1_sdk, Python binding ``unitree_arm_interface``),
driven the way its ``examples_py/example_lowcmd.py`` does it.

Followed: z1_sdk at commit f1af2b4 (2024-10-29; its ``unitree_arm_interface.pyi`` came with
dedf544, 2024-09-25). The sequence:

1. ``ArmInterface(True)`` (hasGripper); ``setFsmLowcmd()`` (PASSIVE -> LOWCMD; z1_controller's
   ``z1_ctrl`` must be running and connected to the arm);
2. read the measured state: ``lowstate.getQ()``, ``getQd()``, ``getGripperQ()``; command it
   (zero speed, gravity torque) and ``loopOn()``: the SDK's own 500 Hz thread holds the arm
   there while m3 plans (the example streams at once instead; m3 plans between reading the
   state and moving, and an arm in LOWCMD without commands is not held);
3. ``loopOff()``, read the state again, and every ``_ctrlComp.dt`` (2 ms): ``setArmCmd(q, qd,
   tau)`` with the feed-forward torque from ``_ctrlComp.armModel.inverseDynamics(q, qd, qdd, 0)``,
   ``setGripperCmd(angle, speed, 0)``, ``sendRecv()``; the first command is the measured state;
4. at the end (or after a stop): command the last position and ``loopOn()``, so that the SDK's
   thread keeps sending it (the arm holds it while m3 runs), and, when asked,
   ``backToStart()``. A next plan starts again at 3 (at 1 after backToStart, which leaves
   LOWCMD).

Gripper: the SDK's gripper angle is in [-pi/2, 0] rad, 0 closed and negative open (unitreeArm.h,
MoveJ), the same sign and range as ``z1_gripper_joint`` in urdf/b1_z1.urdf: commands pass as
they are. The binding is not on PyPI: it is built from the SDK's ``examples_py`` with pybind11
for the Python it is compiled against (the repository also ships a prebuilt one for CPython
3.8 on x86_64). Put the folder holding ``unitree_arm_interface*.so`` on PYTHONPATH.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from m3_grasp.state import ArmState
from m3_memory.errors import MissingDependency


def import_sdk():
    """The ``unitree_arm_interface`` module, or :class:`MissingDependency` (exit 5) saying how to build it."""
    try:
        import unitree_arm_interface
    except ImportError as err:
        raise MissingDependency("unitree backend", f"the Z1 SDK module unitree_arm_interface is not importable ({err}); build it "
                         "from unitreerobotics/z1_sdk (cmake with pybind11 for this Python) and put its lib/ on "
                         "PYTHONPATH") from err
    return unitree_arm_interface


def _first(value) -> float:
    return float(np.asarray(value, dtype=np.float64).reshape(-1)[0])


class Z1LowCmd:
    """The SDK's low-level mode as an :class:`m3_grasp.execution.ArmPort`."""

    def __init__(self, sdk, back_to_start: bool = False, clock: Callable[[], float] | None = None,
                 sleep: Callable[[float], None] | None = None):
        self.arm = sdk.ArmInterface(True)  # hasGripper (positional in the .pyi)
        self.model = self.arm._ctrlComp.armModel
        self.control_dt = float(self.arm._ctrlComp.dt)
        self.back_to_start = back_to_start
        self.clock, self.sleep = clock or time.monotonic, sleep or time.sleep
        self.lowcmd = sdk.ArmFSMState.LOWCMD
        self._due: float | None = None
        self._enter_lowcmd()

    def _enter_lowcmd(self) -> None:
        self.arm.setFsmLowcmd()
        self._hold_at(self.read().x)

    def _hold_at(self, x: np.ndarray) -> None:
        """Command x [7] at rest and let the SDK's thread keep sending it."""
        q = np.asarray(x[:6], dtype=np.float64)
        self.arm.setArmCmd(q, np.zeros(6), np.asarray(self.model.inverseDynamics(q, np.zeros(6), np.zeros(6), np.zeros(6))))
        self.arm.setGripperCmd(float(x[6]), 0.0, 0.0)
        self.arm.loopOn()

    def begin(self) -> None:
        """Take over from the SDK's thread: from here on every command is sent by :meth:`send`."""
        if self.arm.getCurrentState() != self.lowcmd:  # backToStart left LOWCMD
            self._enter_lowcmd()
        self.arm.loopOff()
        self._due = None

    def read(self) -> ArmState:
        state = self.arm.lowstate
        return ArmState(np.asarray(state.getQ(), dtype=np.float64), _first(state.getGripperQ()),
                        np.asarray(state.getQd(), dtype=np.float64), "the Z1 SDK's lowstate")

    def send(self, x: np.ndarray, xd: np.ndarray, xdd: np.ndarray) -> None:
        q, qd = np.asarray(x[:6], dtype=np.float64), np.asarray(xd[:6], dtype=np.float64)
        tau = np.asarray(self.model.inverseDynamics(q, qd, np.asarray(xdd[:6], dtype=np.float64), np.zeros(6)))
        self.arm.setArmCmd(q, qd, tau)
        self.arm.setGripperCmd(float(x[6]), float(xd[6]), 0.0)
        self.arm.sendRecv()
        now = self.clock()
        self._due = (now if self._due is None else max(self._due, now - self.control_dt)) + self.control_dt
        self.sleep(max(self._due - self.clock(), 0.0))

    def hold(self, x: np.ndarray) -> None:
        self._hold_at(x)
        if self.back_to_start:
            self.arm.backToStart()
