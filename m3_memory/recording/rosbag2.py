"""ROS 2 bags (sqlite3, mcap) of realsense-ros topics: reading and writing, via rosbags.

Reading makes two passes: the first collects ``/tf``, ``/tf_static`` and the camera infos
(small); the second streams colour and depth images, pairs them by header stamp and
looks up each frame's pose ``T_world_cam`` as ``world_frame`` <- colour optical frame in
the tf tree (None when the tree does not connect them). Depth that is not aligned to
colour is registered into the colour camera with the depth intrinsics and the
depth-to-colour extrinsics from tf.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from m3_memory.conventions import depth_to_u16, invert_T, make_T
from m3_memory.errors import InputError
from m3_memory.recording.base import Recording
from m3_memory.recording.frame import Frame
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
from m3_memory.recording.tf import TfBuffer, TfLookupError

# camera_link (x forward, y left, z up, REP-103) <- optical frame (x right, y down, z forward)
T_LINK_OPTICAL = make_T(np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]), [0.0, 0.0, 0.0])
OPTICAL_FRAME = "camera_color_optical_frame"


@dataclass
class RealSenseTopics:
    """Topic names of a realsense-ros (4.x) recording and the frame poses are given in."""

    color: str = "/camera/camera/color/image_raw"
    depth: str = "/camera/camera/aligned_depth_to_color/image_raw"
    color_info: str = "/camera/camera/color/camera_info"
    depth_info: str = "/camera/camera/depth/camera_info"  # used only when depth is not aligned
    tf: str = "/tf"
    tf_static: str = "/tf_static"
    world_frame: str = "world"


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


def _image(msg, where: str) -> np.ndarray:
    """sensor_msgs/Image -> rgb uint8 [H, W, 3] or depth float32 [H, W] metres."""
    enc = msg.encoding.lower()
    kinds = {"rgb8": (np.uint8, 3), "bgr8": (np.uint8, 3), "rgba8": (np.uint8, 4), "bgra8": (np.uint8, 4),
             "mono8": (np.uint8, 1), "16uc1": (np.uint16, 1), "mono16": (np.uint16, 1), "32fc1": (np.float32, 1)}
    if enc not in kinds:
        raise InputError(where, f"image encoding {msg.encoding!r} not supported ({', '.join(kinds)})")
    dtype, ch = kinds[enc]
    dt = np.dtype(dtype).newbyteorder(">" if msg.is_bigendian else "<")
    row = msg.width * ch * dt.itemsize
    data = np.asarray(msg.data, dtype=np.uint8)
    if msg.step < row or data.size < msg.step * msg.height:
        raise InputError(where, f"image data too short for {msg.width}x{msg.height} {msg.encoding}")
    a = data[: msg.step * msg.height].reshape(msg.height, msg.step)[:, :row].copy().view(dt)
    a = a.reshape(msg.height, msg.width, ch).astype(dtype)
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
    """Depth [Hd, Wd] (metres, depth camera) -> [H, W] metres in the colour camera.

    Each valid depth pixel is moved into the colour camera with ``T_c_d`` (colour <- depth)
    and its footprint (the projections of its corners) is filled with its depth, so a
    lower-resolution depth image leaves no holes; where footprints overlap the nearest
    wins (as librealsense's ``rs.align`` does).
    """
    h, w = size
    v, u = np.nonzero(depth > 0)
    z = depth[v, u].astype(np.float64)
    corners = []
    for du, dv in ((-0.5, -0.5), (0.5, 0.5)):
        p = np.stack([(u + du - K_d[0, 2]) / K_d[0, 0] * z, (v + dv - K_d[1, 2]) / K_d[1, 1] * z, z], axis=1)
        q = p @ T_c_d[:3, :3].T + T_c_d[:3, 3]
        corners.append((q[:, 0] / q[:, 2] * K_c[0, 0] + K_c[0, 2], q[:, 1] / q[:, 2] * K_c[1, 1] + K_c[1, 2], q[:, 2]))
    (ua, va, za), (ub, vb, zb) = corners
    front = (za > 1e-6) & (zb > 1e-6)
    # colour pixel centres (integer coordinates) inside each footprint
    u0 = np.clip(np.ceil(np.minimum(ua, ub)), 0, w).astype(np.int64)[front]
    u1 = np.clip(np.floor(np.maximum(ua, ub)), -1, w - 1).astype(np.int64)[front]
    v0 = np.clip(np.ceil(np.minimum(va, vb)), 0, h).astype(np.int64)[front]
    v1 = np.clip(np.floor(np.maximum(va, vb)), -1, h - 1).astype(np.int64)[front]
    zc = (0.5 * (za + zb))[front]
    best = np.full(h * w, np.inf)
    for dy in range(int((v1 - v0).max(initial=-1)) + 1):
        for dx in range(int((u1 - u0).max(initial=-1)) + 1):
            ok = (v0 + dy <= v1) & (u0 + dx <= u1)
            np.minimum.at(best, (v0[ok] + dy) * w + u0[ok] + dx, zc[ok])
    best[~np.isfinite(best)] = 0.0
    return best.reshape(h, w).astype(np.float32)


class Ros2BagRecording(Recording):
    """Frames of a ROS 2 bag of realsense-ros topics.

    topics: :class:`RealSenseTopics` or a dict of its fields. max_dt: largest colour/depth
    header-stamp difference in seconds for a kept pair.
    """

    format_name = "rosbag2"

    def __init__(self, path: str | Path, topics: RealSenseTopics | dict | None = None, max_dt: float = 0.005):
        super().__init__(path)
        if isinstance(topics, dict):
            known = {f.name for f in fields(RealSenseTopics)}
            unknown = set(topics) - known
            if unknown:
                raise InputError(", ".join(sorted(unknown)), f"unknown topic option; known: {', '.join(sorted(known))}")
            topics = RealSenseTopics(**topics)
        self.topics = topics or RealSenseTopics()
        self.max_dt = float(max_dt)
        t = self.topics
        with self._reader() as reader:
            present = {c.topic: c.msgtype for c in reader.connections}
            for name in (t.color, t.depth, t.color_info):
                if name not in present:
                    raise InputError(self.path, f"topic {name} not in the bag (it has: {', '.join(sorted(present))})")
            for name in (t.color, t.depth):
                if present[name] != "sensor_msgs/msg/Image":
                    raise InputError(self.path, f"topic {name} is {present[name]}; m3 reads sensor_msgs/msg/Image")
            self.tf = TfBuffer()
            self.K_color = self.K_depth = None
            wanted = [c for c in reader.connections if c.topic in (t.tf, t.tf_static, t.color_info, t.depth_info)]
            for conn, _, raw in self._messages(reader, wanted):
                msg = deserialize(raw, conn.msgtype)
                if conn.topic in (t.tf, t.tf_static):
                    for tf in msg.transforms:
                        self.tf.add(tf.header.frame_id, tf.child_frame_id, pose_of(tf),
                                    None if conn.topic == t.tf_static else stamp_seconds(tf.header))
                elif conn.topic == t.color_info and self.K_color is None:
                    self.K_color = np.array(msg.k, dtype=np.float64).reshape(3, 3)
                elif conn.topic == t.depth_info and self.K_depth is None:
                    self.K_depth = np.array(msg.k, dtype=np.float64).reshape(3, 3)
        if self.K_color is None:
            raise InputError(self.path, f"topic {t.color_info} has no messages")

    @contextmanager
    def _reader(self):
        from rosbags.rosbag2 import Reader

        try:
            reader = Reader(self.path)
            reader.open()
        except Exception as err:  # rosbags raises several types for damaged bags
            raise InputError(self.path, f"cannot open the ROS 2 bag ({type(err).__name__}: {err})") from None
        try:
            yield reader
        finally:
            reader.close()

    def _messages(self, reader, connections):
        try:
            yield from reader.messages(connections=connections)
        except Exception as err:  # truncated storage surfaces while iterating
            raise InputError(self.path, f"corrupt or truncated ROS 2 bag ({type(err).__name__}: {err})") from None

    def _pose(self, frame_id: str, stamp: float) -> np.ndarray | None:
        try:
            return self.tf.lookup(self.topics.world_frame, frame_id, stamp)
        except TfLookupError:
            return None

    def _frame(self, color_msg, depth_msg, index: int) -> Frame:
        where = f"{self.path} frame {index}"
        rgb = _image(color_msg, where)
        depth = _image(depth_msg, where)
        if rgb.ndim != 3 or depth.ndim != 2:
            raise InputError(where, "colour topic holds depth or depth topic holds colour")
        cf, df = color_msg.header.frame_id, depth_msg.header.frame_id
        stamp = stamp_seconds(color_msg.header)
        if df != cf or depth.shape != rgb.shape[:2]:
            try:
                T_c_d = self.tf.lookup(cf, df, stamp)
            except TfLookupError as err:
                raise InputError(where, f"depth ({df}) is not aligned to colour ({cf}) and tf has no extrinsics "
                                 f"between them ({err})") from None
            if self.K_depth is None:
                raise InputError(where, f"depth is not aligned to colour and {self.topics.depth_info} is missing")
            depth = register_depth(depth, self.K_depth, self.K_color, T_c_d, rgb.shape[:2])
        return Frame(rgb, depth, self.K_color.copy(), self._pose(cf, stamp), stamp, name=f"frame {index}")

    def _frames(self) -> Iterator[Frame]:
        t = self.topics
        pending = {t.color: deque(), t.depth: deque()}
        index = 0
        with self._reader() as reader:
            conns = [c for c in reader.connections if c.topic in pending]
            for conn, _, raw in self._messages(reader, conns):
                msg = deserialize(raw, conn.msgtype)
                other = pending[t.depth if conn.topic == t.color else t.color]
                stamp = stamp_seconds(msg.header)
                match = min(other, key=lambda m: abs(stamp_seconds(m.header) - stamp), default=None)
                if match is not None and abs(stamp_seconds(match.header) - stamp) <= self.max_dt:
                    other.remove(match)
                    color, depth = (msg, match) if conn.topic == t.color else (match, msg)
                    yield self._frame(color, depth, index)
                    index += 1
                else:
                    pending[conn.topic].append(msg)
                for queue in pending.values():  # anything 1 s older than now will never be matched
                    while queue and stamp_seconds(queue[0].header) < stamp - 1.0:
                        queue.popleft()
                        self.stats.drop(f"no colour/depth partner within max_dt = {self.max_dt * 1000:.1f} ms")
        for _ in range(sum(len(q) for q in pending.values())):
            self.stats.drop(f"no colour/depth partner within max_dt = {self.max_dt * 1000:.1f} ms")


def write_ros2_bag(frames: Iterable[Frame], path: str | Path, storage: str = "sqlite3",
                   topics: RealSenseTopics | None = None, camera_frame: str = "camera_link") -> Path:
    """Write frames as realsense-ros would publish them: colour (rgb8), depth aligned to
    colour (16UC1 millimetres), colour camera_info, ``/tf_static`` camera_link -> colour
    optical frame, and ``/tf`` world -> camera_link per posed frame. ``storage``: sqlite3
    or mcap. Written to a temporary folder and renamed into place when complete."""
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
    work = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    tmp = work / path.name
    try:
        with Writer(tmp, version=8, storage_plugin=plugins[storage]) as writer:
            conn = {name: writer.add_connection(topic, msgtype, typestore=store) for name, topic, msgtype in (
                ("color", topics.color, "sensor_msgs/msg/Image"), ("depth", topics.depth, "sensor_msgs/msg/Image"),
                ("info", topics.color_info, "sensor_msgs/msg/CameraInfo"),
                ("tf", topics.tf, "tf2_msgs/msg/TFMessage"), ("tf_static", topics.tf_static, "tf2_msgs/msg/TFMessage"))}

            def put(name: str, msg, msgtype: str, stamp: float) -> None:
                writer.write(conn[name], round(stamp * 1e9), serialize(msg, msgtype))

            T_optical_link = invert_T(T_LINK_OPTICAL)
            count = 0
            for count, f in enumerate(frames, start=1):
                if count == 1:
                    static = transform_msg(T_LINK_OPTICAL, f.stamp, camera_frame, OPTICAL_FRAME)
                    put("tf_static", tf_message([static]), "tf2_msgs/msg/TFMessage", f.stamp)
                h, w = f.size
                hdr = header(f.stamp, OPTICAL_FRAME)
                put("color", T["sensor_msgs/msg/Image"](header=hdr, height=h, width=w, encoding="rgb8",
                                                        is_bigendian=0, step=w * 3, data=f.rgb.reshape(-1)),
                    "sensor_msgs/msg/Image", f.stamp)
                mm = depth_to_u16(f.depth)  # realsense-ros publishes 16UC1 millimetres
                put("depth", T["sensor_msgs/msg/Image"](header=hdr, height=h, width=w, encoding="16UC1",
                                                        is_bigendian=0, step=w * 2,
                                                        data=mm.astype("<u2").view(np.uint8).reshape(-1)),
                    "sensor_msgs/msg/Image", f.stamp)
                K = f.K
                P = np.concatenate([K, np.zeros((3, 1))], axis=1)
                put("info", T["sensor_msgs/msg/CameraInfo"](
                    header=hdr, height=h, width=w, distortion_model="plumb_bob", d=np.zeros(5),
                    k=K.reshape(-1).astype(np.float64), r=np.eye(3).reshape(-1), p=P.reshape(-1),
                    binning_x=0, binning_y=0,
                    roi=T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                              do_rectify=False)),
                    "sensor_msgs/msg/CameraInfo", f.stamp)
                if f.T_world_cam is not None:
                    tf = transform_msg(f.T_world_cam @ T_optical_link, f.stamp, topics.world_frame, camera_frame)
                    put("tf", tf_message([tf]), "tf2_msgs/msg/TFMessage", f.stamp)
            if count == 0:
                raise InputError(path, "no frames to write")
        os.replace(tmp, path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return path
