"""ROS 2 bags (sqlite3, mcap) of realsense-ros topics: reading and writing, via rosbags.

Reading makes two passes over the bag. The first collects ``/tf``, ``/tf_static`` and the
camera infos (small) into a :class:`TfBuffer`. The second streams the colour and depth
images, pairs them by header stamp and looks up each frame's pose ``T_world_cam`` as
``world_frame`` <- the colour image's optical frame. Depth that is not aligned to colour
(another frame id or another size) is registered into the colour camera with the depth
intrinsics and the depth-to-colour extrinsics from tf. When tf also connects the robot's
``base_frame`` to ``world_frame``, :meth:`Ros2BagRecording.robot_pose` says where the robot stood.

rosbags opens a bag folder (with ``metadata.yaml``) and also a bare ``.db3`` or ``.mcap``
file, so all three are accepted.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from m3_memory.conventions import OPTICAL_FRAME, WORLD_FRAME, depth_to_u16, invert_T, make_T
from m3_memory.errors import InputError
from m3_memory.outputs import Staged
from m3_memory.recording.base import Recording
from m3_memory.recording.frame import Frame
from m3_memory.recording.realsense import POSE_MODES
from m3_memory.recording.rosmsg import (
    deserialize,
    header,
    pose_of,
    serialize,
    stamp_seconds,
    tf_message,
    transform_msg,
    typestore,
)
from m3_memory.recording.tf import TfBuffer, TfConnectivityError, TfExtrapolationError, TfLookupError
from m3_memory.robot_pose import BASE_FRAME, RobotPose

# camera_link (REP-103: x forward, y left, z up) <- optical frame (x right, y down, z forward);
# as xyzw quaternion (-0.5, 0.5, -0.5, 0.5), what realsense-ros publishes.
T_LINK_OPTICAL = make_T(np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]), [0.0, 0.0, 0.0])
IMAGE, CAMERA_INFO, TF_MESSAGE = "sensor_msgs/msg/Image", "sensor_msgs/msg/CameraInfo", "tf2_msgs/msg/TFMessage"
STALE_S = 1.0  # an image this much older than the newest one read will find no partner any more


@dataclass
class RealSenseTopics:
    """Topic names of a realsense-ros (4.x) recording, the frame poses are given in, and the
    robot's base frame.

    depth_info is used only when the depth topic is not aligned to colour (e.g.
    ``/camera/camera/depth/image_rect_raw``). world_frame absent from the tf tree gives
    frames without a pose (``T_world_cam = None``); base_frame absent or not connected to
    world_frame gives no robot pose.
    """

    color: str = "/camera/camera/color/image_raw"
    depth: str = "/camera/camera/aligned_depth_to_color/image_raw"
    color_info: str = "/camera/camera/color/camera_info"
    depth_info: str = "/camera/camera/depth/camera_info"
    tf: str = "/tf"
    tf_static: str = "/tf_static"
    world_frame: str = WORLD_FRAME
    base_frame: str = BASE_FRAME


def detect(path: Path) -> bool:
    """A rosbag2 folder (metadata.yaml), a ``.mcap`` file, or a ``.db3`` without librealsense topics."""
    if path.is_dir():
        return (path / "metadata.yaml").is_file()
    if path.suffix == ".mcap":
        return True
    if path.suffix == ".db3":
        from m3_memory.recording.realsense import detect as is_librealsense

        return not is_librealsense(path)
    return False


_ENCODINGS = {"rgb8": (np.uint8, 3), "bgr8": (np.uint8, 3), "rgba8": (np.uint8, 4), "bgra8": (np.uint8, 4),
              "mono8": (np.uint8, 1), "16uc1": (np.uint16, 1), "mono16": (np.uint16, 1), "32fc1": (np.float32, 1)}


def decode_image(msg, where: str) -> np.ndarray:
    """sensor_msgs/Image -> colour uint8 RGB [H, W, 3], or depth float32 [H, W] metres
    (16UC1/mono16 are millimetres, 32FC1 metres; 0 and non-finite = invalid)."""
    enc = msg.encoding.lower()
    if enc not in _ENCODINGS:
        raise InputError(where, f"image encoding {msg.encoding!r} not supported (supported: {', '.join(_ENCODINGS)})")
    dtype, ch = _ENCODINGS[enc]
    dt = np.dtype(dtype).newbyteorder(">" if msg.is_bigendian else "<")
    row = msg.width * ch * dt.itemsize
    data = np.asarray(msg.data, dtype=np.uint8)
    if msg.width == 0 or msg.height == 0 or msg.step < row or data.size < msg.step * msg.height:
        raise InputError(where, f"image data ({data.size} bytes, step {msg.step}) does not hold "
                         f"{msg.width}x{msg.height} {msg.encoding}")
    a = data[: msg.step * msg.height].reshape(msg.height, msg.step)[:, :row].copy().view(dt)
    a = a.reshape(msg.height, msg.width, ch).astype(dtype)  # [H, W, ch], native byte order
    if enc in ("16uc1", "mono16"):
        return a[:, :, 0].astype(np.float32) / np.float32(1000.0)
    if enc == "32fc1":
        return np.nan_to_num(a[:, :, 0], nan=0.0, posinf=0.0, neginf=0.0)
    if ch == 1:
        return np.repeat(a, 3, axis=2)
    rgb = a[:, :, :3]
    return np.ascontiguousarray(rgb[:, :, ::-1] if enc.startswith("bgr") else rgb)


def register_depth(depth: np.ndarray, K_d: np.ndarray, K_c: np.ndarray, T_c_d: np.ndarray,
                   size: tuple[int, int]) -> np.ndarray:
    """Depth [Hd, Wd] (float32 metres, depth camera) -> [H, W] float32 metres in the colour camera.

    K_d, K_c: intrinsics [3, 3] (pixels) of the depth and colour cameras. T_c_d [4, 4]:
    colour optical frame <- depth optical frame (metres). size: colour (H, W).
    Each valid depth pixel is forward-projected into the colour camera and its footprint
    (the square between the projections of its corners) filled with its depth, so a
    lower-resolution depth image leaves no holes; where footprints overlap the nearest
    depth wins (a z-buffer, as librealsense's ``rs.align`` does). 0 = no depth.
    """
    h, w = size
    v, u = np.nonzero(depth > 0)
    z = depth[v, u].astype(np.float64)  # [M]
    corners = []
    for du, dv in ((-0.5, -0.5), (0.5, 0.5)):
        p = np.stack([(u + du - K_d[0, 2]) / K_d[0, 0] * z, (v + dv - K_d[1, 2]) / K_d[1, 1] * z, z], axis=1)  # [M, 3]
        q = p @ T_c_d[:3, :3].T + T_c_d[:3, 3]  # [M, 3] colour camera
        with np.errstate(divide="ignore", invalid="ignore"):
            corners.append((q[:, 0] / q[:, 2] * K_c[0, 0] + K_c[0, 2], q[:, 1] / q[:, 2] * K_c[1, 1] + K_c[1, 2], q[:, 2]))
    (ua, va, za), (ub, vb, zb) = corners
    front = (za > 1e-6) & (zb > 1e-6)
    # colour pixel centres (integer coordinates) inside each footprint: columns u0..u1, rows v0..v1
    u0 = np.clip(np.ceil(np.minimum(ua, ub)[front]), 0, w).astype(np.int64)
    u1 = np.clip(np.floor(np.maximum(ua, ub)[front]), -1, w - 1).astype(np.int64)
    v0 = np.clip(np.ceil(np.minimum(va, vb)[front]), 0, h).astype(np.int64)
    v1 = np.clip(np.floor(np.maximum(va, vb)[front]), -1, h - 1).astype(np.int64)
    zc = (0.5 * (za + zb))[front]
    best = np.full(h * w, np.inf)  # [H * W] z-buffer
    for dy in range(int((v1 - v0).max(initial=-1)) + 1):
        for dx in range(int((u1 - u0).max(initial=-1)) + 1):
            ok = (v0 + dy <= v1) & (u0 + dx <= u1)
            np.minimum.at(best, (v0[ok] + dy) * w + u0[ok] + dx, zc[ok])
    best[~np.isfinite(best)] = 0.0
    return best.reshape(h, w).astype(np.float32)


def _frame_id(name: str) -> str:
    """tf2 ignores a leading slash in frame ids (a ROS 1 habit); so does m3."""
    return name.lstrip("/")


class Ros2BagRecording(Recording):
    """Frames of a ROS 2 bag of realsense-ros topics (a bag folder, or a bare .db3 / .mcap).

    topics: :class:`RealSenseTopics` or a dict of some of its fields. max_dt: largest
    colour/depth header-stamp difference in seconds for a kept pair; unpaired images are
    dropped and counted in ``stats``. poses: ``auto`` (tf when it connects world_frame to
    the colour optical frame, else None), ``tf`` (required), ``odometry`` (RGB-D odometry,
    world = first camera), ``none``. With tf poses, a frame whose stamp lies outside the tf
    data is dropped and counted.
    """

    format_name = "rosbag2"

    def __init__(self, path: str | Path, topics: RealSenseTopics | dict | None = None, max_dt: float = 0.005,
                 poses: str = "auto"):
        super().__init__(path)
        if isinstance(topics, dict):
            known = {f.name for f in fields(RealSenseTopics)}
            unknown = set(topics) - known
            if unknown:
                raise InputError(", ".join(sorted(unknown)), f"unknown topic option; known: {', '.join(sorted(known))}")
            topics = RealSenseTopics(**topics)
        if poses not in POSE_MODES:
            raise InputError(poses, f"unknown pose mode; use one of {', '.join(POSE_MODES)}")
        if not max_dt > 0:
            raise InputError(f"max_dt={max_dt}", "must be a positive number of seconds")
        self.topics = topics or RealSenseTopics()
        self.max_dt = float(max_dt)
        self.poses_mode = poses
        self.tf = TfBuffer()
        self.K_color: np.ndarray | None = None  # [3, 3]
        self.K_depth: np.ndarray | None = None  # [3, 3]
        self.color_info_size: tuple[int, int] | None = None  # (H, W) camera_info says
        t = self.topics
        with self._reader() as reader:
            self._check_topics({c.topic: c.msgtype for c in reader.connections})
            wanted = [c for c in reader.connections if c.topic in (t.tf, t.tf_static, t.color_info, t.depth_info)]
            for conn, _, raw in self._messages(reader, wanted):
                msg = self._decode(raw, conn)
                if conn.topic in (t.tf, t.tf_static):
                    for tf in msg.transforms:
                        self.tf.add(_frame_id(tf.header.frame_id), _frame_id(tf.child_frame_id), pose_of(tf),
                                    None if conn.topic == t.tf_static else stamp_seconds(tf.header))
                elif conn.topic == t.color_info and self.K_color is None:
                    self.K_color = np.array(msg.k, dtype=np.float64).reshape(3, 3)
                    self.color_info_size = (msg.height, msg.width)
                elif conn.topic == t.depth_info and self.K_depth is None:
                    self.K_depth = np.array(msg.k, dtype=np.float64).reshape(3, 3)
        if self.K_color is None:
            raise InputError(self.path, f"topic {t.color_info} has no messages")
        if poses == "tf" and t.world_frame not in self.tf.frames():
            frames = ", ".join(sorted(self.tf.frames())) or "none"
            raise InputError(self.path, f"world frame {t.world_frame!r} is not in the tf tree (frames: {frames}); "
                             "use poses='odometry' or 'none', or name the world frame in topics")

    def _check_topics(self, present: dict[str, str]) -> None:
        """InputError naming the missing or mistyped topics, listing those the bag has."""
        t = self.topics
        missing = [name for name in (t.color, t.depth, t.color_info) if name not in present]
        if missing:
            have = ", ".join(sorted(present)) or "no topics"
            raise InputError(self.path, f"topic(s) {', '.join(missing)} not in the bag (it has: {have})")
        expected = ((t.color, IMAGE), (t.depth, IMAGE), (t.color_info, CAMERA_INFO), (t.depth_info, CAMERA_INFO),
                    (t.tf, TF_MESSAGE), (t.tf_static, TF_MESSAGE))
        for name, msgtype in expected:
            if name in present and present[name] != msgtype:
                raise InputError(self.path, f"topic {name} holds {present[name]}; m3 reads {msgtype} there")

    @contextmanager
    def _reader(self):
        from rosbags.rosbag2 import Reader

        try:
            reader = Reader(self.path)
            reader.open()
        except Exception as err:  # rosbags and sqlite raise several types for damaged bags
            raise InputError(self.path, "cannot open the ROS 2 bag: corrupt, truncated or not a bag "
                             f"({type(err).__name__}: {err})") from None
        try:
            yield reader
        finally:
            reader.close()

    def _messages(self, reader, connections: list) -> Iterator[tuple]:
        """(connection, bag time ns, raw bytes) in bag time order; damage becomes InputError."""
        try:
            yield from reader.messages(connections=connections)
        except Exception as err:  # truncated storage surfaces while iterating
            raise InputError(self.path, f"corrupt or truncated ROS 2 bag ({type(err).__name__}: {err})") from None

    def _decode(self, raw: bytes, conn):
        try:
            return deserialize(raw, conn.msgtype)
        except Exception as err:  # malformed CDR raises assorted errors
            raise InputError(self.path, f"corrupt {conn.msgtype} message on {conn.topic} ({type(err).__name__})") from None

    def _pairs(self) -> Iterator[tuple]:
        """(colour, depth) Image messages whose header stamps differ by at most max_dt."""
        t = self.topics
        unpaired = f"no colour/depth partner within max_dt = {self.max_dt * 1000:.1f} ms"
        pending: dict[str, deque] = {t.color: deque(), t.depth: deque()}
        with self._reader() as reader:
            conns = [c for c in reader.connections if c.topic in pending]
            for conn, _, raw in self._messages(reader, conns):
                msg = self._decode(raw, conn)
                stamp = stamp_seconds(msg.header)
                others = pending[t.depth if conn.topic == t.color else t.color]
                match = min(others, key=lambda m: abs(stamp_seconds(m.header) - stamp), default=None)
                if match is not None and abs(stamp_seconds(match.header) - stamp) <= self.max_dt:
                    others.remove(match)
                    yield (msg, match) if conn.topic == t.color else (match, msg)
                else:
                    pending[conn.topic].append(msg)
                for queue in pending.values():
                    while queue and stamp_seconds(queue[0].header) < stamp - STALE_S:
                        queue.popleft()
                        self.stats.drop(unpaired)
        for _ in range(sum(len(q) for q in pending.values())):
            self.stats.drop(unpaired)

    def _pose(self, optical_frame: str, stamp: float, where: str) -> tuple[bool, np.ndarray | None]:
        """(keep the frame, T_world_cam [4, 4] or None) for the colour optical frame at ``stamp``."""
        if self.poses_mode not in ("auto", "tf"):
            return True, None
        try:
            return True, self.tf.lookup(self.topics.world_frame, optical_frame, stamp)
        except TfConnectivityError as err:
            if self.poses_mode == "tf":
                raise InputError(where, f"no camera pose: {err}") from None
            return True, None
        except TfExtrapolationError:
            self.stats.drop(f"no pose: stamp outside the tf data from {self.topics.world_frame!r}")
            return False, None

    @property
    def tf_frame(self) -> str:
        """The tf frame the camera poses are looked up in (``topics.world_frame``); odometry poses
        are in no tf frame: the default."""
        return self.topics.world_frame if self.poses_mode in ("auto", "tf") else super().tf_frame

    def robot_pose(self, stamp: float) -> RobotPose | None:
        """tf ``world_frame <- base_frame`` at ``stamp`` seconds; None when tf does not connect
        them or the frames' poses do not come from tf (odometry, none). A base frame whose
        transforms end before (or start after) ``stamp`` is an :class:`InputError`."""
        t = self.topics
        if self.poses_mode not in ("auto", "tf") or t.base_frame not in self.tf.frames():
            return None
        try:
            T = self.tf.lookup(t.world_frame, t.base_frame, stamp)  # [4, 4]
        except TfConnectivityError:
            return None
        except TfExtrapolationError as err:
            raise InputError(self.path, f"no robot pose at {stamp:.3f} s: {err}; name it with --robot-pose") from None
        return RobotPose(T, f"tf {t.world_frame}->{t.base_frame} at {stamp:.3f} s in {self.path}", t.base_frame)

    def _depth_in_color(self, depth: np.ndarray, depth_frame: str, color_frame: str, size: tuple[int, int],
                        stamp: float, where: str) -> np.ndarray:
        """Depth [Hd, Wd] metres of another camera -> [H, W] metres registered to colour."""
        try:
            T_c_d = self.tf.lookup(color_frame, depth_frame, stamp)  # [4, 4]
        except TfLookupError as err:
            raise InputError(where, f"depth ({depth_frame}, {depth.shape[1]}x{depth.shape[0]}) is not aligned to colour "
                             f"({color_frame}, {size[1]}x{size[0]}) and tf has no extrinsics between them ({err})") from None
        if self.K_depth is None:
            raise InputError(where, f"depth is not aligned to colour and the bag has no {self.topics.depth_info} "
                             "camera_info to register it with")
        return register_depth(depth, self.K_depth, self.K_color, T_c_d, size)

    def _raw_frames(self) -> Iterator[Frame]:
        for index, (color_msg, depth_msg) in enumerate(self._pairs()):
            where = f"{self.path} frame {index}"
            cf, df = _frame_id(color_msg.header.frame_id), _frame_id(depth_msg.header.frame_id)
            stamp = stamp_seconds(color_msg.header)
            keep, T_world_cam = self._pose(cf, stamp, where)
            if not keep:
                continue
            rgb, depth = decode_image(color_msg, where), decode_image(depth_msg, where)
            if rgb.ndim != 3 or depth.ndim != 2:
                raise InputError(where, f"{self.topics.color} must hold colour and {self.topics.depth} depth "
                                 f"(got {color_msg.encoding} and {depth_msg.encoding})")
            if self.color_info_size not in (None, (0, 0), rgb.shape[:2]):
                raise InputError(where, f"{self.topics.color_info} is for {self.color_info_size[1]}x"
                                 f"{self.color_info_size[0]} images but colour is {rgb.shape[1]}x{rgb.shape[0]}")
            if df != cf or depth.shape != rgb.shape[:2]:
                depth = self._depth_in_color(depth, df, cf, rgb.shape[:2], stamp, where)
            yield Frame(rgb, depth, self.K_color.copy(), T_world_cam, stamp, name=f"frame {index}")

    def _frames(self) -> Iterator[Frame]:
        frames = self._raw_frames()
        if self.poses_mode == "odometry":
            from m3_memory.recording.odometry import estimate_poses

            frames = estimate_poses(frames)
        yield from frames


def _latched_qos():
    """The QoS realsense-ros offers on /tf_static (reliable, transient local, depth 1), so
    ``ros2 bag play`` republishes it to late subscribers."""
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    unset = QosTime(0, 0)
    return Qos(QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL, unset, unset,
               QosLiveliness.AUTOMATIC, unset, False)


def write_ros2_bag(frames: Iterable[Frame], path: str | Path, storage: str = "sqlite3",
                   topics: RealSenseTopics | None = None, camera_frame: str = "camera_link",
                   T_world_base: np.ndarray | None = None) -> Path:
    """Write frames as realsense-ros would publish them; returns the bag folder ``path``.

    Per frame: colour (``rgb8``) and depth aligned to colour (``16UC1`` millimetres), both in
    ``camera_color_optical_frame``; the colour camera_info (k, p = [K | 0], plumb_bob with
    zero distortion); and, for a posed frame, ``/tf`` world_frame -> ``camera_frame`` such
    that world_frame <- optical frame is ``frame.T_world_cam``. Once: ``/tf_static``
    ``camera_frame`` -> optical frame (REP-103 body axes to optical axes). With
    ``T_world_base`` [4, 4] (a robot standing still, metres), each frame's ``/tf`` also holds
    world_frame -> ``topics.base_frame``, as a robot's localisation publishes it. Bag times are
    the frame stamps (ns). storage: ``sqlite3`` or ``mcap``. Written into a temporary
    folder beside ``path`` and renamed into place when complete.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer

    plugins = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}
    if storage not in plugins:
        raise InputError(storage, f"unknown rosbag2 storage; use {' or '.join(plugins)}")
    path = Path(path)
    if path.exists():
        raise InputError(path, "already exists; the ROS 2 bag writer will not overwrite it")
    topics = topics or RealSenseTopics()
    store = typestore()
    T = store.types
    path.parent.mkdir(parents=True, exist_ok=True)
    with Staged(path, replace=False) as tmp:
        with Writer(tmp, version=8, storage_plugin=plugins[storage]) as writer:
            conn = {name: writer.add_connection(topic, msgtype, typestore=store, offered_qos_profiles=qos)
                    for name, topic, msgtype, qos in (
                        ("color", topics.color, IMAGE, ()), ("depth", topics.depth, IMAGE, ()),
                        ("info", topics.color_info, CAMERA_INFO, ()), ("tf", topics.tf, TF_MESSAGE, ()),
                        ("tf_static", topics.tf_static, TF_MESSAGE, (_latched_qos(),)))}

            def put(name: str, msg, msgtype: str, stamp: float) -> None:
                writer.write(conn[name], round(stamp * 1e9), serialize(msg, msgtype))

            T_optical_link = invert_T(T_LINK_OPTICAL)
            count = 0
            for count, f in enumerate(frames, start=1):
                f.validate(str(path))
                if count == 1:
                    static = transform_msg(T_LINK_OPTICAL, f.stamp, camera_frame, OPTICAL_FRAME)
                    put("tf_static", tf_message([static]), TF_MESSAGE, f.stamp)
                h, w = f.size
                hdr = header(f.stamp, OPTICAL_FRAME)
                put("color", T[IMAGE](header=hdr, height=h, width=w, encoding="rgb8", is_bigendian=0, step=w * 3,
                                      data=np.ascontiguousarray(f.rgb).reshape(-1)), IMAGE, f.stamp)
                mm = depth_to_u16(f.depth)  # [H, W] realsense-ros publishes 16UC1 millimetres
                put("depth", T[IMAGE](header=hdr, height=h, width=w, encoding="16UC1", is_bigendian=0, step=w * 2,
                                      data=mm.astype("<u2").view(np.uint8).reshape(-1)), IMAGE, f.stamp)
                P = np.concatenate([f.K, np.zeros((3, 1))], axis=1)  # [3, 4]
                put("info", T[CAMERA_INFO](
                    header=hdr, height=h, width=w, distortion_model="plumb_bob", d=np.zeros(5),
                    k=f.K.reshape(-1).astype(np.float64), r=np.eye(3).reshape(-1), p=P.reshape(-1),
                    binning_x=0, binning_y=0,
                    roi=T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                              do_rectify=False)), CAMERA_INFO, f.stamp)
                dynamic = []
                if f.T_world_cam is not None:
                    dynamic.append(transform_msg(f.T_world_cam @ T_optical_link, f.stamp, topics.world_frame,
                                                 camera_frame))
                if T_world_base is not None:
                    dynamic.append(transform_msg(T_world_base, f.stamp, topics.world_frame, topics.base_frame))
                if dynamic:
                    put("tf", tf_message(dynamic), TF_MESSAGE, f.stamp)
            if count == 0:
                raise InputError(path, "no frames to write")
    return path
