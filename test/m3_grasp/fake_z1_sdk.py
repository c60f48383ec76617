"""A stand-in for Unitree's ``unitree_arm_interface`` with the surface of its
``unitree_arm_interface.pyi`` (z1_sdk f1af2b4): FSM calls, ``lowstate``, ``setArmCmd``,
``setGripperCmd``, ``sendRecv``, ``loopOn``/``loopOff``, ``backToStart`` and the high-level
moves. The arm it simulates lags its commands: each ``sendRecv`` moves the measured joints a
first-order step (time constant ``LAG_S``) towards the last command, as a position-controlled
motor would. Everything sent is recorded, and misuse the real controller would reject
(commands outside LOWCMD, LOWCMD not entered from PASSIVE) raises."""

from __future__ import annotations

from enum import IntEnum

import numpy as np

LAG_S = 0.02  # s, time constant of the measured joints following the commands
DT = 0.002  # s, the SDK's control period


class ArmFSMState(IntEnum):
    INVALID = 0
    PASSIVE = 1
    JOINTCTRL = 2
    CARTESIAN = 3
    MOVEJ = 4
    MOVEL = 5
    MOVEC = 6
    TEACH = 7
    TEACHREPEAT = 8
    TOSTATE = 9
    SAVESTATE = 10
    TRAJECTORY = 11
    LOWCMD = 12


def postureToHomo(posture: np.ndarray, /) -> np.ndarray:
    raise NotImplementedError("not used by m3")


def homoToPosture(T: np.ndarray, /) -> np.ndarray:
    raise NotImplementedError("not used by m3")


class LowlevelState:
    def __init__(self, q: np.ndarray, gripper: float):
        self.q = np.append(np.asarray(q, dtype=np.float64), gripper)  # [7] like the SDK's (gripper last)
        self.dq = np.zeros(7)
        self.tau = np.zeros(7)

    def getQ(self) -> np.ndarray:
        return self.q[:6].copy()

    def getQd(self) -> np.ndarray:
        return self.dq[:6].copy()

    def getTau(self) -> np.ndarray:
        return self.tau[:6].copy()

    def getGripperQ(self) -> float:
        return float(self.q[6])


class Z1Model:
    def __init__(self, endPosLocal=None, endEffectorMass=0.0, endEffectorCom=None, endEffectorInertia=None, /):
        pass

    def checkInSingularity(self, q, /) -> bool:
        return False

    def forwardKinematics(self, q, index, /):
        raise NotImplementedError("not used by m3")

    def inverseKinematics(self, Tdes, qPast, checkInWrokSpace, /):
        raise NotImplementedError("not used by m3")

    def solveQP(self, twist, qPast, dt, /):
        raise NotImplementedError("not used by m3")

    def CalcJacobian(self, q, /):
        raise NotImplementedError("not used by m3")

    def inverseDynamics(self, q, qd, qdd, Ftip, /) -> np.ndarray:
        for v in (q, qd, qdd, Ftip):
            assert np.shape(v) == (6,)
        return 0.05 * np.asarray(qdd, dtype=np.float64)  # a stand-in: only its shape matters here

    def jointProtect(self, q, qd, /):
        return q, qd

    def getJointQMax(self) -> np.ndarray:
        return np.array([2.618, 2.967, 0.0, 1.518, 1.344, 2.792])

    def getJointQMin(self) -> np.ndarray:
        return np.array([-2.618, 0.0, -2.880, -1.518, -1.344, -2.792])

    def getJointSpeedMax(self) -> np.ndarray:
        return np.full(6, np.pi)


class CtrlComponents:
    def __init__(self):
        self.armModel = Z1Model()
        self.dt = DT


class ArmInterface:
    """Set ``ArmInterface.start_q`` / ``start_gripper`` before creating one to place the arm."""

    start_q = np.zeros(6)
    start_gripper = 0.0
    instances: list = []

    def __init__(self, hasGripper: bool, /) -> None:
        assert hasGripper
        self._ctrlComp = CtrlComponents()
        self.lowstate = LowlevelState(self.start_q, self.start_gripper)
        self.q, self.qd, self.tau = np.zeros(6), np.zeros(6), np.zeros(6)
        self.gripperQ = self.gripperQd = self.gripperTau = 0.0
        self.state = ArmFSMState.PASSIVE
        self.looping = False
        self.calls: list[str] = []  # every call, in order
        self.sent: list[np.ndarray] = []  # [7] command per sendRecv (q and gripper angle)
        self.measured: list[np.ndarray] = []  # [7] measured state after each sendRecv
        self.stall: np.ndarray | None = None  # [6] bool: joints that stop following (a fault)
        ArmInterface.instances.append(self)

    def _log(self, name: str) -> None:
        self.calls.append(name)

    def setFsm(self, fsm: ArmFSMState):
        self._log(f"setFsm({ArmFSMState(fsm).name})")
        if fsm == ArmFSMState.LOWCMD and self.state != ArmFSMState.PASSIVE:
            raise RuntimeError("only PASSIVE may switch to LOWCMD")
        self.state = ArmFSMState(fsm)
        return True

    def setFsmLowcmd(self):
        self._log("setFsmLowcmd")
        self.setFsm(ArmFSMState.PASSIVE)
        self.setFsm(ArmFSMState.LOWCMD)

    def getCurrentState(self) -> ArmFSMState:
        return self.state

    def loopOn(self):
        self._log("loopOn")
        self.looping = True

    def loopOff(self):
        self._log("loopOff")
        self.looping = False

    def backToStart(self):
        self._log("backToStart")
        assert self.looping, "backToStart needs the SDK's send thread (loopOn)"
        self.lowstate.q[:6] = 0.0
        self.state = ArmFSMState.JOINTCTRL

    def labelRun(self, label: str, /):
        self._log(f"labelRun({label})")

    def labelSave(self, label: str, /):
        self._log(f"labelSave({label})")

    def teach(self, label: str, /):
        self._log(f"teach({label})")

    def teachRepeat(self, label: str, /):
        self._log(f"teachRepeat({label})")

    def calibration(self):
        raise AssertionError("m3 never calibrates the arm")

    def MoveJ(self, *args) -> bool:
        raise AssertionError("m3 streams low-level commands, never MoveJ")

    def MoveL(self, *args) -> bool:
        raise AssertionError("m3 streams low-level commands, never MoveL")

    def MoveC(self, *args) -> bool:
        raise AssertionError("m3 streams low-level commands, never MoveC")

    def startTrack(self, fsm: ArmFSMState, /):
        self._log("startTrack")

    def setWait(self, Y_N: bool, /):
        self._log("setWait")

    def jointCtrlCmd(self, directions, jointSpeed, /):
        raise AssertionError("not used by m3")

    def cartesianCtrlCmd(self, directions, oriSpeed, posSpeed, /):
        raise AssertionError("not used by m3")

    def setArmCmd(self, q: np.ndarray, qd: np.ndarray, tau: np.ndarray, /):
        assert self.state == ArmFSMState.LOWCMD, "setArmCmd outside LOWCMD"
        assert np.shape(q) == np.shape(qd) == np.shape(tau) == (6,)
        self.q, self.qd, self.tau = np.array(q, dtype=np.float64), np.array(qd, dtype=np.float64), np.array(tau)

    def setGripperCmd(self, gripperPos: float, gripperW: float, gripperTau: float, /):
        assert self.state == ArmFSMState.LOWCMD, "setGripperCmd outside LOWCMD"
        self.gripperQ, self.gripperQd, self.gripperTau = float(gripperPos), float(gripperW), float(gripperTau)

    def sendRecv(self):
        assert self.state == ArmFSMState.LOWCMD, "sendRecv outside LOWCMD"
        assert not self.looping, "sendRecv called while the SDK's own thread sends (loopOn)"
        self._log("sendRecv")
        command = np.append(self.q, self.gripperQ)
        self.sent.append(command)
        previous = self.lowstate.q.copy()
        step = (1 - np.exp(-DT / LAG_S)) * (command - previous)
        if self.stall is not None:
            step[:6][self.stall] = 0.0
        self.lowstate.q = previous + step
        self.lowstate.dq = step / DT
        self.measured.append(self.lowstate.q.copy())
