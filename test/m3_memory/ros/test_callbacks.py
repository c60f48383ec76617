"""Node callbacks that survive: per-call-site log severities (as rclpy enforces them), exceptions
turned into answers with throttled logs, one goal at a time, an executor loop that keeps going."""

from __future__ import annotations

import ast
import inspect
import threading
from pathlib import Path

import pytest

from m3_memory.ros.callbacks import CallbackGuard, OneAtATime, keep_spinning, log_outcome

ROOT = Path(__file__).resolve().parents[3]
ROS_DIRS = (ROOT / "m3_memory" / "ros", ROOT / "m3_grasp" / "ros")


class RclpyLikeLogger:
    """Records messages by severity and, like rclpy's RcutilsLogger, fixes the severity of each call
    site (file, line, function of the caller) on its first call and raises afterwards on another one."""

    def __init__(self):
        self.sites: dict[tuple, str] = {}
        self.lines: list[tuple[str, str]] = []

    def _log(self, severity: str, message: str) -> None:
        caller = inspect.currentframe().f_back.f_back
        site = (caller.f_code.co_filename, caller.f_lineno, caller.f_code.co_name)
        if self.sites.setdefault(site, severity) != severity:
            raise ValueError("Logger severity cannot be changed between calls.")
        self.lines.append((severity, message))

    def info(self, message: str) -> None:
        self._log("info", message)

    def warning(self, message: str) -> None:
        self._log("warning", message)

    def error(self, message: str) -> None:
        self._log("error", message)


def test_the_fake_logger_refuses_a_severity_chosen_at_run_time():
    """The pattern that killed the query node (query_node.py:45) fails with this logger too."""
    logger = RclpyLikeLogger()

    def old_style(ok: bool) -> None:
        (logger.info if ok else logger.warning)(f"query: {ok}")

    old_style(True)
    with pytest.raises(ValueError, match="severity cannot be changed"):
        old_style(False)


def test_log_outcome_alternating_outcomes():
    logger = RclpyLikeLogger()
    for ok in (True, False, True, False):
        log_outcome(logger, ok, f"outcome {ok}")
    log_outcome(logger, False, "load failed", failure="error")
    log_outcome(logger, True, "loaded", failure="error")
    assert logger.lines == [("info", "outcome True"), ("warning", "outcome False"), ("info", "outcome True"),
                            ("warning", "outcome False"), ("error", "load failed"), ("info", "loaded")]


def test_no_node_code_chooses_a_log_severity_at_run_time():
    """No call of a conditional expression (``(a if c else b)(...)``) anywhere in the ROS code."""
    for d in ROS_DIRS:
        for path in d.glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call):
                    assert not isinstance(node.func, ast.IfExp), f"{path.relative_to(ROOT)}:{node.lineno}"


def test_no_node_module_logs_with_per_call_throttling_options():
    """rclpy also fixes throttle options per call site; the nodes throttle through CallbackGuard."""
    for d in ROS_DIRS:
        for path in d.glob("*_node.py"):
            assert "throttle_duration_sec" not in path.read_text(), path.name


def test_guard_turns_exceptions_into_the_fallback_and_throttles_per_callback():
    logger, now = RclpyLikeLogger(), [0.0]
    guard = CallbackGuard(logger, period=10.0, clock=lambda: now[0])

    def boom():
        raise RuntimeError("disk full\nsecond line")

    assert guard.call("query", lambda: 42, lambda reason: -1) == 42
    assert guard.call("query", boom, lambda reason: reason) == "query failed: RuntimeError: disk full"
    for _ in range(3):  # within the period: counted, not logged
        now[0] += 1.0
        assert guard.call("query", boom, lambda reason: "answered") == "answered"
    guard.call("camera_info", boom, lambda reason: None)  # another callback has its own throttle
    now[0] += 10.0
    guard.call("query", boom, lambda reason: None)
    assert logger.lines == [("error", "query failed: RuntimeError: disk full"),
                            ("error", "camera_info failed: RuntimeError: disk full"),
                            ("error", "query failed: RuntimeError: disk full (3 more since the last report)")]


def test_wrapped_subscription_callbacks_never_raise():
    logger = RclpyLikeLogger()
    guard = CallbackGuard(logger)
    got = []
    callback = guard.wrap("joint_states", lambda msg: got.append(1 / msg))
    callback(2)
    callback(0)  # ZeroDivisionError: logged, not raised
    assert got == [0.5] and logger.lines[0][0] == "error" and "ZeroDivisionError" in logger.lines[0][1]


def test_one_goal_at_a_time_under_simultaneous_requests():
    """Twenty goal callbacks arriving together: exactly one is admitted (a check-then-lock admits several)."""
    one, barrier, admitted = OneAtATime(), threading.Barrier(20), []

    def request() -> None:
        barrier.wait()
        admitted.append(one.claim())

    threads = [threading.Thread(target=request) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert admitted.count(True) == 1 and one.busy
    released = threading.Thread(target=one.release)  # the execute callback's thread ends the goal
    released.start()
    released.join()
    assert not one.busy and one.claim()


def test_keep_spinning_survives_a_failing_callback():
    calls, reported = [], []
    script = [None, RuntimeError("callback raised"), None, ValueError("again"), None]

    def spin_once() -> None:
        step = script[len(calls)]
        calls.append(step)
        if step is not None:
            raise step

    keep_spinning(spin_once, lambda: len(calls) < len(script), reported.append)
    assert len(calls) == len(script) and [type(e) for e in reported] == [RuntimeError, ValueError]


def test_keep_spinning_ends_on_shutdown_and_ctrl_c():
    class Shutdown(Exception):
        pass

    def shut() -> None:
        raise Shutdown()

    reported = []
    keep_spinning(shut, lambda: True, reported.append, stop=(Shutdown,))
    assert reported == []

    def ctrl_c() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        keep_spinning(ctrl_c, lambda: True, reported.append)
