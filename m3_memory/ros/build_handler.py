"""The BuildMemory action without ROS: goal -> (live recording) -> ``build_memory`` -> result.

A :class:`BuildJob` resolves a goal against the node's parameters (empty fields take the
parameter), checks the recording before the long build (it exists; a ROS 2 bag has the colour,
depth and camera_info topics), and calls :func:`m3_memory.training.build.build_memory` with
feedback and a stop flag. A goal without ``bag_path`` first records the live topics into a ROS 2
bag (:class:`BagRecorder`, fed serialized messages by the node's subscriptions;
:func:`record_live` paces it). Cancelling stops the recording (the partial bag is deleted) or
the build (``build_memory`` keeps its checkpoint and writes no memory). Every failure becomes a
result with ``success = False`` and a one-line message.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from m3_memory.errors import InputError, M3Error
from m3_memory.outputs import Staged
from m3_memory.recording import detect_format, open_recording
from m3_memory.recording.rosbag2 import CAMERA_INFO, IMAGE, TF_MESSAGE, _latched_qos
from m3_memory.recording.rosmsg import typestore
from m3_memory.ros.convert import Make
from m3_memory.ros.params import MappingParams

TF_TOPIC, TF_STATIC_TOPIC = "/tf", "/tf_static"


@dataclass
class BuildGoal:
    """m3_msgs/action/BuildMemory goal, field by field ("" and 0 = the node's parameter)."""

    bag_path: str = ""
    color_topic: str = ""
    depth_topic: str = ""
    camera_info_topic: str = ""
    world_frame: str = ""
    record_seconds: float = 0.0
    model: str = ""
    fast: bool = False
    out: str = ""
    overwrite: bool = False

    @classmethod
    def from_msg(cls, msg) -> BuildGoal:
        """Read a BuildMemory goal message (rclpy or rosbags)."""
        return cls(bag_path=msg.bag_path, color_topic=msg.color_topic, depth_topic=msg.depth_topic,
                   camera_info_topic=msg.camera_info_topic, world_frame=msg.world_frame,
                   record_seconds=float(msg.record_seconds), model=msg.model, fast=bool(msg.fast), out=msg.out,
                   overwrite=bool(msg.overwrite))


@dataclass
class StageFeedback:
    """Feedback of m3_msgs' actions (BuildMemory, Grasp): the stage running, its progress 0..1, a message."""

    stage: str
    fraction: float
    message: str

    def fields(self, make: Make) -> dict:
        """Every field of the feedback message (``make`` is unused: all fields are primitives)."""
        return {"stage": self.stage, "fraction": float(min(max(self.fraction, 0.0), 1.0)), "message": self.message}


@dataclass
class BuildResult:
    """m3_msgs/action/BuildMemory result, field by field."""

    success: bool
    message: str
    memory_path: str = ""
    recorded_bag: str = ""
    report_json: str = ""

    def fields(self, make: Make) -> dict:
        """Every field of the result message (``make`` is unused: all fields are primitives)."""
        return {"success": bool(self.success), "message": self.message, "memory_path": self.memory_path,
                "recorded_bag": self.recorded_bag, "report_json": self.report_json}


Feedback = Callable[[StageFeedback], None]
ShouldStop = Callable[[], bool]
Write = Callable[[str, int, bytes], None]
Subscribe = Callable[[dict[str, str], Write], Callable[[], None]]
"""``subscribe(topics, write) -> unsubscribe``: the node subscribes to ``topics`` (topic -> message
type) and calls ``write(topic, receive time ns, serialized message)`` for each message."""


class BagRecorder:
    """A ROS 2 bag written from serialized (CDR) messages, as rclpy hands them to raw subscriptions.

    topics: topic -> message type (``sensor_msgs/msg/Image`` ...). One writer thread owns the bag
    (rosbags' sqlite3 connection may only be used by the thread that opened it); :meth:`write`,
    called from subscription callbacks on any executor thread, only puts the message on a queue.
    The bag is written into a temporary folder beside ``path`` and renamed into place by
    :meth:`close` once the queue is drained; :meth:`abort` deletes it. Messages written after
    close/abort are ignored.
    """

    def __init__(self, path: str | Path, topics: dict[str, str]):
        self.path = Path(path)
        if self.path.exists():
            raise InputError(self.path, "already exists; the recorder will not overwrite it")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.staged = Staged(self.path, replace=False)
        self.topics = dict(topics)
        self.counts = dict.fromkeys(topics, 0)  # messages written per topic
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.closed = False
        self.error: BaseException | None = None  # what stopped the writer thread
        opened = threading.Event()
        self.thread = threading.Thread(target=self._writer, args=(opened,), name=f"bag writer {self.path.name}", daemon=True)
        self.thread.start()
        opened.wait()
        if self.error is not None:
            self.thread.join()
            self.staged.discard()
            raise InputError(self.path, f"cannot write a bag there: {self.error!r}")

    def _writer(self, opened: threading.Event) -> None:
        """The writer thread: open the bag, write queued messages until the None that ends it, close."""
        from rosbags.rosbag2 import Writer

        try:
            writer = Writer(self.staged.tmp, version=8)
            writer.open()
            store = typestore()
            connections = {topic: writer.add_connection(topic, msgtype, typestore=store, offered_qos_profiles=(
                [_latched_qos()] if topic == TF_STATIC_TOPIC else [])) for topic, msgtype in self.topics.items()}
        except Exception as err:  # noqa: BLE001 - reported by the constructor
            self.error = err
            opened.set()
            return
        opened.set()
        try:
            while (item := self.queue.get()) is not None:
                topic, stamp_ns, data = item
                if self.error is None:
                    writer.write(connections[topic], stamp_ns, data)
                    self.counts[topic] += 1
        except Exception as err:  # noqa: BLE001 - reported by close()
            self.error = err
            while self.queue.get() is not None:  # drain, so that close() finds the end
                pass
        finally:
            writer.close()

    def write(self, topic: str, stamp_ns: int, data: bytes) -> None:
        """Queue one serialized message received at ``stamp_ns`` (any thread; ignored after close/abort)."""
        with self.lock:
            if not self.closed:
                self.queue.put((topic, int(stamp_ns), bytes(data)))

    def _stop(self) -> bool:
        """End the writer thread after what is queued; False when it was already stopped."""
        with self.lock:
            if self.closed:
                return False
            self.closed = True
            self.queue.put(None)
        self.thread.join()
        return True

    def close(self, required: list[str]) -> Path:
        """Write what is queued, finish the bag and move it into place; InputError (and nothing kept)
        when a ``required`` topic got no message or the writer failed."""
        self._stop()
        silent = [t for t in required if self.counts[t] == 0]
        if self.error is not None or silent:
            self.staged.discard()
            if self.error is not None:
                raise InputError(self.path, f"writing the bag failed: {self.error!r}")
            raise InputError(", ".join(silent), "no messages received while recording (is the camera driver running? "
                             "check with ros2 topic hz)")
        return self.staged.commit()

    def abort(self) -> None:
        """Stop and delete everything recorded."""
        self._stop()
        self.staged.discard()

    def summary(self) -> str:
        """Messages written so far per topic, in one line."""
        return ", ".join(f"{topic} {n}" for topic, n in dict(self.counts).items())


def record_live(recorder: BagRecorder, seconds: float, feedback: Feedback, should_stop: ShouldStop,
                period: float = 0.5, clock: Callable[[], float] = time.monotonic,
                sleep: Callable[[float], None] = time.sleep) -> bool:
    """Let the recorder run for ``seconds`` (subscriptions feed it meanwhile), with feedback every
    ``period`` seconds. Returns False when stopped early (the caller aborts the recorder)."""
    start = clock()
    while (elapsed := clock() - start) < seconds:
        if should_stop():
            return False
        feedback(StageFeedback("record", elapsed / seconds, f"recording {elapsed:.0f}/{seconds:.0f} s: {recorder.summary()}"))
        sleep(min(period, seconds - elapsed))
    feedback(StageFeedback("record", 1.0, f"recorded {seconds:.0f} s: {recorder.summary()}"))
    return not should_stop()


class BuildJob:
    """One BuildMemory goal resolved against the mapping node's parameters."""

    def __init__(self, goal: BuildGoal, params: MappingParams, now: Callable[[], float] = time.time):
        self.goal, self.params = goal, params
        self.topics = {"color": goal.color_topic or params.color_topic, "depth": goal.depth_topic or params.depth_topic,
                       "color_info": goal.camera_info_topic or params.camera_info_topic,
                       "depth_info": params.depth_info_topic, "world_frame": goal.world_frame or params.world_frame}
        self.model = goal.model or params.model
        self.fast = goal.fast or params.fast
        self.record_seconds = goal.record_seconds or params.record_seconds
        self.live = not goal.bag_path
        output_dir = Path(params.output_dir).expanduser()
        if self.live:
            self.bag = output_dir / time.strftime("scan-%Y%m%d-%H%M%S", time.localtime(now()))
        else:
            self.bag = Path(goal.bag_path).expanduser()
        out = Path(goal.out).expanduser() if goal.out else Path(self.bag.name).with_suffix(".m3")
        self.out = out if out.is_absolute() else output_dir / out

    def live_topics(self) -> dict[str, str]:
        """Topics a live recording subscribes to, with their message types."""
        t = self.topics
        return {t["color"]: IMAGE, t["depth"]: IMAGE, t["color_info"]: CAMERA_INFO, t["depth_info"]: CAMERA_INFO,
                TF_TOPIC: TF_MESSAGE, TF_STATIC_TOPIC: TF_MESSAGE}

    def required_topics(self) -> list[str]:
        """Topics a live recording must have received something on."""
        return [self.topics["color"], self.topics["depth"], self.topics["color_info"]]

    def recording_options(self) -> dict:
        """Reader options for the recording's format (topics only for ROS 2 bags)."""
        fmt = detect_format(self.bag)
        if fmt == "rosbag2":
            topics = {**self.topics, "tf": TF_TOPIC, "tf_static": TF_STATIC_TOPIC}
            return {"topics": topics, "max_dt": self.params.max_dt, "poses": self.params.poses}
        if fmt == "realsense":
            return {"max_dt": self.params.max_dt, "poses": self.params.poses}
        return {}

    def execute(self, subscribe: Subscribe, feedback: Feedback, should_stop: ShouldStop) -> BuildResult:
        """The whole goal: record first when it is live, then build. Never raises."""
        if self.live:
            failed = self.record(subscribe, feedback, should_stop)
            if failed is not None:
                return failed
        return self.run(feedback, should_stop)

    def record(self, subscribe: Subscribe, feedback: Feedback, should_stop: ShouldStop) -> BuildResult | None:
        """Record the live topics into ``self.bag`` for record_seconds; a failed result (nothing
        kept) when stopped or when the camera topics stayed silent, else None."""
        try:
            recorder = BagRecorder(self.bag, self.live_topics())
        except InputError as err:
            return BuildResult(False, str(err))
        completed = False
        try:
            unsubscribe = subscribe(self.live_topics(), recorder.write)
            try:
                completed = record_live(recorder, self.record_seconds, feedback, should_stop)
            finally:
                unsubscribe()
        finally:
            if not completed:  # canceled, or an error on the way: nothing kept
                recorder.abort()
        if not completed:
            return BuildResult(False, "canceled while recording; nothing kept")
        try:
            recorder.close(self.required_topics())
        except InputError as err:
            return BuildResult(False, str(err))
        return None

    def run(self, feedback: Feedback, should_stop: ShouldStop) -> BuildResult:
        """Check the recording and build the memory. Never raises."""
        recorded_bag = str(self.bag.resolve()) if self.live else ""
        try:
            return self._run(feedback, should_stop, recorded_bag)
        except M3Error as err:
            return BuildResult(False, str(err), recorded_bag=recorded_bag)
        except Exception as err:  # noqa: BLE001 - the action answers, the node stays up
            return BuildResult(False, f"build failed: {err!r}", recorded_bag=recorded_bag)

    def _run(self, feedback: Feedback, should_stop: ShouldStop, recorded_bag: str) -> BuildResult:
        feedback(StageFeedback("check", 0.0, f"opening {self.bag}"))
        if not self.bag.exists():
            raise InputError(self.bag, "bag_path does not exist")
        if self.out.exists() and not self.goal.overwrite:
            raise InputError(self.out, "exists; set overwrite to replace it")
        options = self.recording_options()
        open_recording(self.bag, **options)  # checks the format and, for a ROS 2 bag, its topics
        feedback(StageFeedback("check", 1.0, f"{self.bag} is readable"))
        if should_stop():
            return BuildResult(False, "canceled before the build started; no memory written", recorded_bag=recorded_bag)

        from m3_memory.training.build import BuildStopped, build_memory

        def progress(stage: str, fraction: float, message: str) -> None:
            feedback(StageFeedback(stage, fraction, message))

        self.out.parent.mkdir(parents=True, exist_ok=True)
        try:
            report = build_memory(self.bag, self.out, model=self.model, weights=self.params.weights or None, fast=self.fast,
                                  overwrite=self.goal.overwrite, progress=progress, should_stop=should_stop,
                                  show_progress=False, device=self.params.device, **options)
        except BuildStopped as err:
            return BuildResult(False, f"canceled: {err}; no memory written", recorded_bag=recorded_bag)
        return BuildResult(True, f"memory written to {report.out}", str(Path(report.out).resolve()), recorded_bag,
                           json.dumps(asdict(report), default=str))
