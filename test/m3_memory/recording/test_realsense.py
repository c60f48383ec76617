import numpy as np
import pytest

from m3_memory.conventions import make_T
from m3_memory.errors import InputError
from m3_memory.recording import Frame, detect_format, open_recording
from m3_memory.recording.compare import compare_recordings
from m3_memory.recording.realsense import RealSenseRecording, write_realsense_db3

K = np.array([[50.0, 0, 31.5], [0, 50.0, 23.5], [0, 0, 1]])


def random_frames(n, poses=True, seed=0):
    rng = np.random.default_rng(seed)
    return [Frame(rgb=rng.integers(0, 256, (48, 64, 3), dtype=np.uint8),
                  depth=np.round(rng.uniform(0.2, 4.0, (48, 64)), 3).astype(np.float32),
                  K=K, T_world_cam=make_T(np.eye(3), [i * 0.1, 0, 0]) if poses else None, stamp=2.0 + i / 30)
            for i in range(n)]


@pytest.fixture(scope="module")
def d435(realdata):
    return realdata / "librealsense_d435_bag" / "single_depth_color_640x480.bag"


def test_d435_bag_intrinsics_and_depth_scale(d435):
    rec = open_recording(d435)
    assert isinstance(rec, RealSenseRecording)
    assert rec.depth_scale == pytest.approx(0.001, rel=1e-6)
    # one colour frame and two depth frames; the only pair is 268 ms apart
    assert list(rec) == []
    assert sum(rec.stats.dropped.values()) == 1
    rec = open_recording(d435, max_dt=0.5)
    frames = list(rec)
    assert len(frames) == 1
    f = frames[0]
    np.testing.assert_allclose(f.K[[0, 1, 0, 1], [0, 1, 2, 2]], [613.204, 613.419, 319.939, 239.183], atol=1e-3)
    assert f.depth.shape == (480, 640) and f.rgb.shape == (480, 640, 3)  # depth aligned to colour
    valid = f.depth[f.depth > 0]
    assert valid.size > 0.5 * f.depth.size and 0.3 < np.median(valid) < 5.0
    assert f.T_world_cam is None


def test_db3_round_trip_is_exact(tmp_path):
    frames = random_frames(12)
    path = write_realsense_db3(frames, tmp_path / "r.db3")
    assert detect_format(path) == "realsense"
    back = list(open_recording(path))
    assert len(back) == len(frames)
    for a, b in zip(frames, back):
        np.testing.assert_array_equal(a.rgb, b.rgb)
        assert np.abs(a.depth - b.depth).max() <= 1e-6 + 1e-7 * a.depth.max()
        np.testing.assert_allclose(b.T_world_cam, a.T_world_cam, atol=1e-9)
        assert b.stamp == pytest.approx(a.stamp, abs=1e-9)
        np.testing.assert_allclose(b.K, K, atol=1e-5)


def test_db3_without_poses_and_pose_modes(tmp_path):
    path = write_realsense_db3(random_frames(3, poses=False), tmp_path / "r.db3")
    assert all(f.T_world_cam is None for f in open_recording(path))
    with pytest.raises(InputError, match="no /tf"):
        open_recording(path, poses="tf")
    with pytest.raises(InputError, match="unknown pose mode"):
        open_recording(path, poses="magic")


def test_synthetic_db3_matches_folder(synth):
    diff = compare_recordings(open_recording(synth.folder), open_recording(synth.realsense))
    assert diff["frames_reference"] == diff["frames_other"] == 10
    assert diff["rgb"] == 0 and diff["depth_m"] <= 1e-3 and diff["pose"] <= 1e-6 and diff["stamp_s"] <= 1e-6


def test_truncated_db3(tmp_path):
    path = write_realsense_db3(random_frames(5), tmp_path / "r.db3")
    cut = tmp_path / "cut.db3"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    with pytest.raises(InputError, match="cut.db3"):
        list(open_recording(cut))


def test_truncated_and_corrupt_bag(tmp_path, d435):
    cut = tmp_path / "cut.bag"
    cut.write_bytes(d435.read_bytes()[:400_000])
    with pytest.raises(InputError, match="cut.bag"):
        list(open_recording(cut))
    junk = tmp_path / "junk.bag"
    junk.write_bytes(b"not a bag at all" * 10)
    with pytest.raises(InputError, match="bad header"):
        open_recording(junk)


def test_recording_without_depth_stream(tmp_path):
    import pyrealsense2 as rs

    path = tmp_path / "colour_only.db3"
    dev = rs.software_device()
    sensor = dev.add_sensor("Color")
    vs = rs.video_stream()
    vs.type, vs.index, vs.uid, vs.width, vs.height, vs.fps, vs.bpp, vs.fmt = (
        rs.stream.color, 0, 0, 64, 48, 30, 3, rs.format.rgb8)
    intr = rs.intrinsics()
    intr.width, intr.height, intr.fx, intr.fy, intr.ppx, intr.ppy = 64, 48, 50, 50, 32, 24
    vs.intrinsics = intr
    prof = sensor.add_video_stream(vs)
    rec = rs.recorder(str(path), dev, False)
    sensor.open(prof)
    sensor.start(lambda f: None)
    f = rs.software_video_frame()
    f.pixels, f.bpp, f.stride, f.timestamp, f.frame_number = np.zeros((48, 64, 3), np.uint8), 3, 64 * 3, 0.0, 0
    f.domain, f.profile = rs.timestamp_domain.hardware_clock, prof.as_video_stream_profile()
    sensor.on_video_frame(f)
    sensor.stop()
    sensor.close()
    del rec
    with pytest.raises(InputError, match="no depth stream"):
        open_recording(path)


@pytest.mark.slow
def test_odometry_poses_for_a_recording_without_trajectory(tmp_path):
    from dataclasses import replace

    from m3_memory.conventions import invert_T
    from m3_memory.synth import SynthConfig, SyntheticScene

    scene = SyntheticScene(SynthConfig(width=160, height=120, n_frames=48))
    truth = [scene.render(i) for i in range(6)]
    path = write_realsense_db3([replace(f, T_world_cam=None) for f in truth], tmp_path / "plain.db3")
    assert all(f.T_world_cam is None for f in open_recording(path))
    est = list(open_recording(path, poses="odometry"))
    assert len(est) == len(truth)
    np.testing.assert_allclose(est[0].T_world_cam, np.eye(4), atol=1e-12)  # world = first camera
    for e, t in zip(est[1:], truth[1:]):
        T_c0_ct = invert_T(truth[0].T_world_cam) @ t.T_world_cam
        assert np.linalg.norm(e.T_world_cam[:3, 3] - T_c0_ct[:3, 3]) < 0.02  # metres, over ~0.5 m of travel



class Status:
    stopped, playing = "stopped", "playing"


def scripted_playback(script):
    """wait/status callables that play ``script``: 'x' a wait that times out while playback reads
    stopped, 'p' a timed-out wait while playing, 'f' a frameset, then the end (stopped)."""
    steps, now = iter(script), {"status": Status.stopped}

    def wait():
        step = next(steps, "end")
        now["status"] = {"x": Status.stopped, "p": Status.playing, "f": Status.playing}.get(step, Status.stopped)
        return (step == "f", step if step == "f" else None)

    return wait, lambda: now["status"]


@pytest.mark.parametrize("script, frames", [("xxffpff", 4), ("ffff", 4), ("xpx", 0)])
def test_playback_that_starts_late_keeps_every_frame(script, frames):
    """Playback reads "stopped" until its thread runs: timed-out waits before that (a loaded
    machine) must not end the recording; "stopped" after playing or a frame ends it."""
    from m3_memory.recording.realsense import playback_framesets

    wait, status = scripted_playback(script)
    assert len(list(playback_framesets(wait, status, Status, stall_s=1.0))) == frames


def test_playback_that_never_starts_gives_up():
    from m3_memory.recording.realsense import playback_framesets

    assert list(playback_framesets(lambda: (False, None), lambda: Status.stopped, Status, stall_s=0.2)) == []


def test_without_pyrealsense2_it_names_the_extra(monkeypatch):
    import sys

    from m3_memory.errors import MissingDependency
    from m3_memory.recording import realsense

    monkeypatch.setitem(sys.modules, "pyrealsense2", None)  # import raises ImportError
    with pytest.raises(MissingDependency, match=r"pip install 'm3_memory\[realsense\]'"):
        realsense._rs()
