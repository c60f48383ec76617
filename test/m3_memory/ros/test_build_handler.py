"""The BuildMemory action logic: goal -> (live recording) -> build -> result, and its bad input."""

from __future__ import annotations

import json
from dataclasses import fields

import pytest

from m3_memory.recording import open_recording
from m3_memory.recording.compare import compare_recordings
from m3_memory.ros.build_handler import BagRecorder, BuildGoal, BuildJob, BuildResult, StageFeedback, record_live
from m3_memory.ros.interfaces import field_names, typename
from m3_memory.ros.params import MappingParams

GOAL, RESULT, FEEDBACK = (typename(f"m3_msgs/action/BuildMemory_{part}") for part in ("Goal", "Result", "Feedback"))


class Log:
    """Collects feedback; ``stop_at`` makes should_stop() true once that stage has reported."""

    def __init__(self, stop_at: str | None = None):
        self.items: list[StageFeedback] = []
        self.stop_at = stop_at

    def __call__(self, fb: StageFeedback) -> None:
        self.items.append(fb)

    def should_stop(self) -> bool:
        return self.stop_at is not None and any(fb.stage == self.stop_at for fb in self.items)

    def stages(self) -> list[str]:
        return list(dict.fromkeys(fb.stage for fb in self.items))


def no_subscriptions(topics, write):
    raise AssertionError("a goal with a bag_path records nothing")


def job(tmp_path, **goal) -> BuildJob:
    return BuildJob(BuildGoal(**goal), MappingParams(output_dir=str(tmp_path / "memories"), model="clip-fixture",
                                                     world_frame="world"))  # the synthetic bag's tf frame


def test_goal_result_feedback_mirror_the_action_fields(store, make):
    assert [f.name for f in fields(BuildGoal)] == field_names(store, GOAL)
    assert [f.name for f in fields(BuildResult)] == field_names(store, RESULT)
    assert [f.name for f in fields(StageFeedback)] == field_names(store, FEEDBACK)
    for cls, name, value in ((BuildResult, RESULT, BuildResult(True, "ok", "/m.m3", "", "{}")),
                             (StageFeedback, FEEDBACK, StageFeedback("train", 1.5, "clipped to 1"))):
        msg = store.types[name](**value.fields(make))  # exactly the message's fields
        back = store.deserialize_cdr(store.serialize_cdr(msg, name), name)
        assert [getattr(back, f) for f in field_names(store, name)] == [getattr(msg, f) for f in field_names(store, name)]
    assert StageFeedback("train", 1.5, "").fields(make)["fraction"] == 1.0


def test_goal_from_message_reads_every_field(make):
    msg = make(GOAL, bag_path="/scan", color_topic="/c", record_seconds=3.0, model="clip-fixture", fast=True, out="x.m3")
    goal = BuildGoal.from_msg(msg)
    assert goal == BuildGoal(bag_path="/scan", color_topic="/c", record_seconds=3.0, model="clip-fixture", fast=True, out="x.m3")


def test_empty_goal_fields_take_the_parameters(tmp_path):
    j = job(tmp_path, bag_path="/data/scan_bag", depth_topic="/d")
    assert j.topics["depth"] == "/d" and j.topics["color"] == MappingParams().color_topic
    assert j.model == "clip-fixture" and j.record_seconds == 30.0 and not j.live
    assert j.out == tmp_path / "memories" / "scan_bag.m3"
    assert job(tmp_path, bag_path="/b", out="/abs/m.m3").out.as_posix() == "/abs/m.m3"
    live = BuildJob(BuildGoal(), MappingParams(output_dir=str(tmp_path)), now=lambda: 0.0)
    assert live.live and live.bag.parent == tmp_path and live.bag.name.startswith("scan-")
    assert live.out == tmp_path / (live.bag.name + ".m3")


def test_bag_path_that_does_not_exist(tmp_path):
    log = Log()
    result = job(tmp_path, bag_path=str(tmp_path / "missing_bag")).execute(no_subscriptions, log, log.should_stop)
    assert not result.success and "missing_bag: bag_path does not exist" in result.message
    assert not (tmp_path / "memories").exists()


def test_topics_missing_from_the_bag(tmp_path, synth):
    log = Log()
    result = job(tmp_path, bag_path=str(synth.rosbag2), color_topic="/camera/nope").execute(no_subscriptions, log,
                                                                                            log.should_stop)
    assert not result.success and "/camera/nope not in the bag" in result.message, result.message
    assert log.stages() == ["check"]


def test_memory_that_exists_is_kept_without_overwrite(tmp_path, synth):
    out = tmp_path / "there.m3"
    out.mkdir()
    result = job(tmp_path, bag_path=str(synth.rosbag2), out=str(out)).execute(no_subscriptions, Log(), lambda: False)
    assert not result.success and "set overwrite" in result.message and out.is_dir()


@pytest.mark.slow
def test_cancel_mid_build_writes_no_memory(tmp_path, synth):
    log = Log(stop_at="train")
    j = job(tmp_path, bag_path=str(synth.rosbag2), fast=True)
    result = j.execute(no_subscriptions, log, log.should_stop)
    assert not result.success and result.message.startswith("canceled"), result.message
    assert log.stages()[:2] == ["check", "read"] and "train" in log.stages()
    assert not j.out.exists() and not any(p.name.startswith(f".{j.out.name}") for p in j.out.parent.iterdir())


def test_cancel_before_the_build(tmp_path, synth):
    log = Log(stop_at="check")
    result = job(tmp_path, bag_path=str(synth.rosbag2)).execute(no_subscriptions, log, log.should_stop)
    assert not result.success and "canceled before the build" in result.message


@pytest.mark.slow
def test_build_from_a_bag(tmp_path, synth, monkeypatch):
    from m3_memory.training import build
    from m3_memory.training.config import TrainConfig

    real = build.build_memory
    monkeypatch.setattr(build, "build_memory", lambda *a, **kw: real(*a, config=TrainConfig.fast(iterations=2), **kw))
    log = Log()
    j = job(tmp_path, bag_path=str(synth.rosbag2), fast=True)
    result = j.execute(no_subscriptions, log, log.should_stop)
    assert result.success, result.message
    assert result.memory_path == str(j.out.resolve()) and (j.out / "meta.json").is_file() and result.recorded_bag == ""
    assert json.loads(result.report_json)["iterations"] > 0
    assert log.items[-1].stage == "done" and log.items[-1].fraction == 1.0
    from m3_memory.memory.artifact import load_memory

    assert load_memory(j.out).scene_frame == "world"  # REP-105: the memory records the tf frame its poses were in


def replay(bag):
    """A fake ``subscribe`` that hands every message of ``bag`` to the recorder at once (raw CDR, as
    rclpy's raw subscriptions do), and the topics it was asked for."""
    from rosbags.rosbag2 import Reader

    asked = {}

    def subscribe(topics, write):
        asked.update(topics)
        with Reader(bag) as reader:
            for conn, stamp, data in reader.messages():
                if conn.topic in topics:
                    assert topics[conn.topic] == conn.msgtype
                    write(conn.topic, stamp, data)
        return lambda: asked.update(unsubscribed=True)

    return subscribe, asked


def test_live_recording_then_check(tmp_path, synth):
    """A live goal records the camera topics and /tf into a bag that reads back like the original."""
    subscribe, asked = replay(synth.rosbag2)
    j = BuildJob(BuildGoal(record_seconds=0.2), MappingParams(output_dir=str(tmp_path)))
    assert j.record(subscribe, Log(), lambda: False) is None
    assert asked.pop("unsubscribed") and set(asked) == {*j.required_topics(), j.topics["depth_info"], "/tf", "/tf_static"}
    diff = compare_recordings(open_recording(synth.rosbag2), open_recording(j.bag))
    assert diff["frames_reference"] == diff["frames_other"] > 0
    assert diff["rgb"] == diff["depth_m"] == diff["pose"] == diff["stamp_s"] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [j.bag.name]


def test_live_recording_with_silent_camera_keeps_nothing(tmp_path):
    j = BuildJob(BuildGoal(record_seconds=0.1), MappingParams(output_dir=str(tmp_path)))
    result = j.execute(lambda topics, write: (lambda: None), Log(), lambda: False)
    assert not result.success and "no messages received" in result.message and j.required_topics()[0] in result.message
    assert list(tmp_path.iterdir()) == []


def test_cancel_while_recording_keeps_nothing(tmp_path, synth):
    subscribe, _ = replay(synth.rosbag2)
    log = Log(stop_at="record")
    j = BuildJob(BuildGoal(record_seconds=60.0), MappingParams(output_dir=str(tmp_path)))
    result = j.execute(subscribe, log, log.should_stop)
    assert not result.success and "canceled while recording" in result.message
    assert list(tmp_path.iterdir()) == []


def test_record_live_paces_with_feedback(tmp_path):
    now = [0.0]
    recorder = BagRecorder(tmp_path / "bag", {"/tf": "tf2_msgs/msg/TFMessage"})
    log = Log()
    assert record_live(recorder, 2.0, log, lambda: False, period=0.5, clock=lambda: now[0],
                       sleep=lambda s: now.__setitem__(0, now[0] + s))
    assert [fb.fraction for fb in log.items] == [0.0, 0.25, 0.5, 0.75, 1.0]
    with pytest.raises(Exception, match="no messages received"):
        recorder.close(["/tf"])
    assert list(tmp_path.iterdir()) == []


def test_recorder_written_from_callback_threads(tmp_path, synth):
    """Subscription callbacks run on the executor's threads, not where the recorder was made: four
    threads write at once (rosbags' sqlite3 refused writes from another thread than its opener's),
    and the bag reads back like the source."""
    import threading

    from rosbags.rosbag2 import Reader

    with Reader(synth.rosbag2) as reader:
        topics = {c.topic: c.msgtype for c in reader.connections}
        messages = [(c.topic, stamp, bytes(data)) for c, stamp, data in reader.messages()]
    recorder = BagRecorder(tmp_path / "bag", topics)
    by_thread = [[m for m in messages if hash(m[0]) % 4 == k] for k in range(4)]  # one topic stays in one thread, in order
    threads = [threading.Thread(target=lambda part=part: [recorder.write(*m) for m in part]) for part in by_thread]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert recorder.close(list(topics)) == tmp_path / "bag"
    recorder.write("/tf", 1, b"late")  # after close: ignored
    with Reader(tmp_path / "bag") as reader:
        assert sorted((c.topic, stamp, bytes(data)) for c, stamp, data in reader.messages()) == sorted(messages)
    diff = compare_recordings(open_recording(synth.rosbag2), open_recording(tmp_path / "bag"))
    assert diff["frames_reference"] == diff["frames_other"] > 0 and diff["rgb"] == diff["depth_m"] == diff["pose"] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bag"]


def test_recorder_that_cannot_write_says_so(tmp_path):
    recorder = BagRecorder(tmp_path / "bag", {"/tf": "tf2_msgs/msg/TFMessage"})
    recorder.write("/unknown_topic", 1, b"x")  # the writer thread fails on it: KeyError
    with pytest.raises(Exception, match="writing the bag failed"):
        recorder.close([])
    assert list(tmp_path.iterdir()) == []
    recorder.abort()  # a second stop is harmless


def test_recording_aborts_when_feedback_fails(tmp_path, synth):
    """An error while recording (here: publishing feedback) stops the writer and keeps nothing."""
    subscribe, _ = replay(synth.rosbag2)

    def feedback(fb):
        raise RuntimeError("goal handle gone")

    j = BuildJob(BuildGoal(record_seconds=5.0), MappingParams(output_dir=str(tmp_path)))
    with pytest.raises(RuntimeError):
        j.record(subscribe, feedback, lambda: False)
    assert list(tmp_path.iterdir()) == []
