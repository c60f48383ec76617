"""librealsense recordings (``.bag`` ROS1 v2 layout, ``.db3``): reading and writing.

Reading goes through pyrealsense2 playback in non-real-time mode, so no frame is skipped
because the reader was slow; depth is aligned to colour with ``rs.align``; colour/depth
pairs whose timestamps differ by more than ``max_dt`` are dropped (and counted).

librealsense recordings carry no camera trajectory. m3 adds one as an extension: a
``/tf`` topic (``tf2_msgs/msg/TFMessage``, ``world`` -> ``camera_color_optical_frame``,
stamped like the colour frames) written into the ``.db3`` after librealsense closes it.
librealsense's playback ignores the topic; :class:`RealSenseRecording` reads it when
present. Recordings without it get ``T_world_cam = None``, or RGB-D odometry with
``poses="odometry"``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from m3_memory.conventions import OPTICAL_FRAME, WORLD_FRAME, depth_to_u16
from m3_memory.errors import InputError, missing_dependency
from m3_memory.outputs import Staged
from m3_memory.recording.base import Recording
from m3_memory.recording.frame import Frame
from m3_memory.recording.rosmsg import deserialize, pose_of, serialize, tf_message, transform_msg

ROSBAG1_MAGIC = b"#ROSBAG V2.0\n"
DEPTH_UNITS = 0.001  # metres per z16 unit in recordings m3 writes
POSE_MODES = ("auto", "tf", "odometry", "none")


def _rs():
    try:
        import pyrealsense2 as rs
    except ImportError as err:  # pragma: no cover - depends on the platform's wheel
        raise missing_dependency(err, "reading librealsense recordings (.bag, .db3; on Linux it also needs the "
                                 "libusb-1.0-0 system library)", "pyrealsense2") from None
    return rs


def _db3_topics(path: Path) -> list[str]:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [row[0] for row in con.execute("SELECT name FROM topics")]
    finally:
        con.close()


def detect(path: Path) -> bool:
    """A ``.bag`` file (ROS1 v2) or a ``.db3`` file holding librealsense's ``/device_0`` topics."""
    if not path.is_file():
        return False
    if path.suffix == ".bag":
        return True
    if path.suffix == ".db3":
        try:
            return any(t.startswith("/device_0/") for t in _db3_topics(path))
        except sqlite3.DatabaseError:
            return True  # unreadable: let the reader report what is wrong with it
    return False


def read_tf_poses(path: Path) -> dict[int, np.ndarray]:
    """m3's ``/tf`` extension of a ``.db3``: stamp (ns) -> T_world_cam [4, 4]; {} if absent."""
    if path.suffix != ".db3":
        return {}
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT m.data FROM messages m JOIN topics t ON m.topic_id = t.id "
                           "WHERE t.name = '/tf' AND t.type = 'tf2_msgs/msg/TFMessage'").fetchall()
    finally:
        con.close()
    poses: dict[int, np.ndarray] = {}
    for (data,) in rows:
        for tf in deserialize(data, "tf2_msgs/msg/TFMessage").transforms:
            if tf.header.frame_id == WORLD_FRAME and tf.child_frame_id == OPTICAL_FRAME:
                poses[tf.header.stamp.sec * 1_000_000_000 + tf.header.stamp.nanosec] = pose_of(tf)
    return poses


class RealSenseRecording(Recording):
    """Frames of a librealsense recording.

    max_dt: largest colour/depth timestamp difference in seconds for a kept pair
    (None: half the colour frame period). poses: ``auto`` (m3's /tf if present, else None),
    ``tf`` (required), ``odometry`` (RGB-D odometry, world = first camera), ``none``.
    """

    format_name = "realsense"

    def __init__(self, path: str | Path, max_dt: float | None = None, poses: str = "auto"):
        super().__init__(path)
        if poses not in POSE_MODES:
            raise InputError(poses, f"unknown pose mode; use one of {', '.join(POSE_MODES)}")
        self._check_container()
        self.poses_mode = poses
        self._tf = read_tf_poses(self.path) if poses in ("auto", "tf") else {}
        if poses == "tf" and not self._tf:
            raise InputError(self.path, "has no /tf camera trajectory; use poses='odometry' or 'none'")
        rs = _rs()
        pipe, cfg = rs.pipeline(), rs.config()
        cfg.enable_device_from_file(str(self.path), repeat_playback=False)
        try:
            profile = cfg.resolve(pipe)
        except RuntimeError as err:
            raise InputError(self.path, f"librealsense cannot open the recording ({err})") from None
        streams = {s.stream_type(): s for s in profile.get_streams()}
        names = ", ".join(str(t).split(".")[-1] for t in streams) or "none"
        for kind in (rs.stream.color, rs.stream.depth):
            if kind not in streams:
                raise InputError(self.path, f"has no {str(kind).split('.')[-1]} stream (streams: {names})")
        color = streams[rs.stream.color].as_video_stream_profile()
        self.fps = float(color.fps()) or 30.0
        self.max_dt = 0.5 / self.fps if max_dt is None else float(max_dt)
        self.duration = profile.get_device().as_playback().get_duration().total_seconds()
        self.depth_scale = profile.get_device().first_depth_sensor().get_depth_scale()
        self.registered = _already_registered(streams[rs.stream.depth].as_video_stream_profile(), color)

    def _check_container(self) -> None:
        if self.path.suffix == ".bag":
            with open(self.path, "rb") as f:
                if f.read(len(ROSBAG1_MAGIC)) != ROSBAG1_MAGIC:
                    raise InputError(self.path, "not a ROS1 v2 bag (bad header); file is corrupt or not a recording")
        elif self.path.suffix == ".db3":
            try:
                topics = _db3_topics(self.path)
            except sqlite3.DatabaseError as err:
                raise InputError(self.path, f"corrupt or truncated .db3 ({err})") from None
            if not any(t.startswith("/device_0/") for t in topics):
                raise InputError(self.path, "is a ROS 2 bag without librealsense /device_0 topics; "
                                 "read it with the rosbag2 format")
        else:
            raise InputError(self.path, "librealsense recordings end in .bag or .db3")

    def _pose(self, stamp_ns: int) -> np.ndarray | None:
        if not self._tf:
            return None
        nearest = min(self._tf, key=lambda s: abs(s - stamp_ns))
        if abs(nearest - stamp_ns) > 1_000_000:  # 1 ms
            return None
        return self._tf[nearest].copy()

    def _frames(self) -> Iterator[Frame]:
        frames = self._raw_frames()
        if self.poses_mode == "odometry":
            from m3_memory.recording.odometry import estimate_poses

            frames = estimate_poses(frames)
        yield from frames

    def _raw_frames(self) -> Iterator[Frame]:
        rs = _rs()
        pipe, cfg = rs.pipeline(), rs.config()
        cfg.enable_device_from_file(str(self.path), repeat_playback=False)
        profile = cfg.resolve(pipe)
        playback = profile.get_device().as_playback()
        playback.set_real_time(False)
        align = rs.align(rs.stream.color)
        pipe.start(cfg)
        last_color = None
        worst_dt, dt_drops = 0.0, 0
        try:
            for frameset in playback_framesets(lambda: pipe.try_wait_for_frames(50), playback.current_status,
                                               rs.playback_status):
                color, depth = frameset.get_color_frame(), frameset.get_depth_frame()
                if not color or not depth:
                    self.stats.drop("colour or depth missing in frameset")
                    continue
                if color.get_frame_number() == last_color:
                    continue  # the syncer re-sent a colour frame with the next depth frame
                dt = abs(color.get_timestamp() - depth.get_timestamp()) / 1000.0
                if dt > self.max_dt:
                    worst_dt, dt_drops = max(worst_dt, dt), dt_drops + 1
                    continue
                last_color = color.get_frame_number()
                if not self.registered:
                    frameset = align.process(frameset)
                    color, depth = frameset.get_color_frame(), frameset.get_depth_frame()
                rgb = _to_rgb(rs, color)
                depth_m = (np.asanyarray(depth.get_data()).astype(np.float32) * np.float32(self.depth_scale))
                intr = color.profile.as_video_stream_profile().get_intrinsics()
                K = np.array([[intr.fx, 0, intr.ppx], [0, intr.fy, intr.ppy], [0, 0, 1]], dtype=np.float64)
                stamp_ms = color.get_timestamp()
                yield Frame(rgb=rgb, depth=depth_m, K=K, T_world_cam=self._pose(round(stamp_ms * 1e6)),
                            stamp=stamp_ms / 1000.0, name=f"frame {color.get_frame_number()}")
        finally:
            pipe.stop()
            if dt_drops:
                self.stats.dropped[f"colour/depth timestamps differ by more than max_dt = {self.max_dt * 1000:.1f} ms "
                                   f"(up to {worst_dt * 1000:.1f} ms; raise --max-dt to keep them)"] = dt_drops


def playback_framesets(wait: Callable[[], tuple[bool, object]], status: Callable[[], object], statuses,
                       stall_s: float = 10.0, poll_s: float = 0.05) -> Iterator[object]:
    """Framesets of a non-real-time librealsense playback until it ends.

    ``wait()`` is one ``try_wait_for_frames`` of ``poll_s`` seconds and ``status()`` the
    playback status (``statuses`` holds the enum). Playback reads "stopped" until its thread
    starts, so "stopped" ends only a recording that has been seen playing or has given a
    frame: a first wait that times out on a loaded machine must not end it with no frames.
    ``stall_s`` seconds without a frame end a stalled file.
    """
    waited, started = 0.0, False
    while waited < stall_s:
        ok, frameset = wait()
        if ok:
            waited, started = 0.0, True
            yield frameset
            continue
        now = status()
        if now == statuses.stopped and started:
            return
        started |= now == statuses.playing
        waited += poll_s


def _already_registered(depth, color) -> bool:
    """True when depth already lies in the colour camera (same intrinsics, identity extrinsics):
    ``rs.align`` would then only resample it, smearing depth edges by a pixel."""
    di, ci = depth.get_intrinsics(), color.get_intrinsics()
    same_k = (di.width, di.height, di.fx, di.fy, di.ppx, di.ppy) == (ci.width, ci.height, ci.fx, ci.fy, ci.ppx, ci.ppy)
    try:
        ext = depth.get_extrinsics_to(color)
    except RuntimeError:
        return False
    identity = np.allclose(np.reshape(ext.rotation, (3, 3)), np.eye(3)) and np.allclose(ext.translation, 0.0)
    return same_k and identity


def _to_rgb(rs, color) -> np.ndarray:
    """Colour frame -> uint8 [H, W, 3] RGB copy."""
    fmt = color.profile.format()
    data = np.asanyarray(color.get_data())
    if fmt == rs.format.rgb8:
        return data.copy()
    if fmt == rs.format.bgr8:
        return data[:, :, ::-1].copy()
    if fmt in (rs.format.rgba8, rs.format.bgra8):
        rgb = data[:, :, :3]
        return (rgb if fmt == rs.format.rgba8 else rgb[:, :, ::-1]).copy()
    raise InputError("colour stream", f"unsupported colour format {fmt}; record rgb8 or bgr8")


def write_realsense_db3(frames: Iterable[Frame], path: str | Path, fps: int = 30) -> Path:
    """Write frames as a librealsense ``.db3`` recording (``software_device`` + ``recorder``).

    Depth is stored as z16 in millimetres (already registered to colour: identity
    depth-to-colour extrinsics, the colour intrinsics for both streams); frame timestamps
    are ``frame.stamp`` in milliseconds. Poses, when frames have them, go into m3's
    ``/tf`` extension. Written beside ``path`` and renamed into place when complete.
    """
    rs = _rs()
    path = Path(path)
    poses: list[tuple[int, np.ndarray]] = []
    with Staged(path) as tmp:  # librealsense creates the file itself
        device = sensors = None
        for i, frame in enumerate(frames):
            if device is None:
                device, sensors, recorder = _software_device(rs, tmp, frame, fps)
                size, K = frame.size, frame.K
            elif frame.size != size or not np.allclose(frame.K, K):
                raise InputError(path, f"{frame.name or f'frame {i}'} has another size or intrinsics than the first "
                                 "frame; a recording holds one camera")
            ns = round(frame.stamp * 1e9)
            for (sensor, prof, bpp), pixels in zip(sensors, (np.ascontiguousarray(frame.rgb),
                                                             depth_to_u16(frame.depth, 1.0 / DEPTH_UNITS))):
                sf = rs.software_video_frame()
                sf.pixels = pixels
                sf.bpp = bpp
                sf.stride = pixels.shape[1] * bpp
                sf.timestamp = ns / 1e6
                sf.domain = rs.timestamp_domain.hardware_clock
                sf.frame_number = i
                sf.profile = prof
                sensor.on_video_frame(sf)
            if frame.T_world_cam is not None:
                poses.append((ns, frame.T_world_cam))
        if device is None:
            raise InputError(path, "no frames to write")
        for sensor, _, _ in sensors:
            sensor.stop()
            sensor.close()
        del recorder, sensors, device  # the recorder writes and closes the file on destruction
        if poses:
            _append_tf(tmp, poses)
    return path


def _software_device(rs, path: Path, first: Frame, fps: int):
    h, w = first.size
    intr = rs.intrinsics()
    intr.width, intr.height = w, h
    intr.fx, intr.fy, intr.ppx, intr.ppy = (float(first.K[0, 0]), float(first.K[1, 1]),
                                           float(first.K[0, 2]), float(first.K[1, 2]))
    intr.model = rs.distortion.none
    intr.coeffs = [0.0] * 5
    device = rs.software_device()
    made = []
    for uid, (name, kind, fmt, bpp) in enumerate((("Color", rs.stream.color, rs.format.rgb8, 3),
                                                  ("Depth", rs.stream.depth, rs.format.z16, 2))):
        sensor = device.add_sensor(name)
        vs = rs.video_stream()
        vs.type, vs.index, vs.uid = kind, 0, uid
        vs.width, vs.height, vs.fps, vs.bpp, vs.fmt = w, h, fps, bpp, fmt
        vs.intrinsics = intr
        prof = sensor.add_video_stream(vs).as_video_stream_profile()
        if kind == rs.stream.depth:
            sensor.add_read_only_option(rs.option.depth_units, DEPTH_UNITS)
        made.append((sensor, prof, bpp))
    identity = rs.extrinsics()
    identity.rotation = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    identity.translation = [0.0, 0.0, 0.0]
    made[1][1].register_extrinsics_to(made[0][1], identity)
    recorder = rs.recorder(str(path), device, False)  # no compression: lossless round trip
    for sensor, prof, _ in made:
        sensor.open(prof)
        sensor.start(lambda f: None)
    return device, made, recorder


def _append_tf(path: Path, poses: list[tuple[int, np.ndarray]]) -> None:
    """Append m3's ``/tf`` topic (world -> colour optical frame per stamp) to a ``.db3``."""
    con = sqlite3.connect(path)
    try:
        cur = con.cursor()
        cur.execute("INSERT INTO topics(name, type, serialization_format, offered_qos_profiles) "
                    "VALUES ('/tf', 'tf2_msgs/msg/TFMessage', 'cdr', '')")
        topic_id = cur.lastrowid
        for ns, pose in poses:
            msg = tf_message([transform_msg(pose, ns / 1e9, WORLD_FRAME, OPTICAL_FRAME)])
            cur.execute("INSERT INTO messages(topic_id, timestamp, data) VALUES (?, ?, ?)",
                        (topic_id, ns, serialize(msg, "tf2_msgs/msg/TFMessage")))
        con.commit()
    finally:
        con.close()
