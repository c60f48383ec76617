import numpy as np
import pytest
from transforms3d.euler import euler2mat

from m3_memory.conventions import make_T
from m3_memory.errors import InputError
from m3_memory.recording import Frame, detect_format, open_recording
from m3_memory.recording.compare import compare_recordings
from m3_memory.recording.rosbag2 import T_LINK_OPTICAL, RealSenseTopics, Ros2BagRecording, register_depth, write_ros2_bag
from m3_memory.recording.rosmsg import header, serialize, tf_message, transform_msg, typestore

K = np.array([[60.0, 0, 31.5], [0, 60.0, 23.5], [0, 0, 1]])
TOPICS = RealSenseTopics()


def frames(n=6, poses=True):
    rng = np.random.default_rng(0)
    return [Frame(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8),
                  rng.uniform(0.2, 4, (48, 64)).astype(np.float32), K,
                  make_T(euler2mat(0.1 * i, -0.2, 0.05 * i), [0.1 * i, 0.5, 1.0]) if poses else None, 1.0 + i / 15)
            for i in range(n)]


# --- hand-made bags, as another publisher would record them ---------------------------------

def image_msg(stamp, frame, array, encoding):
    a = np.ascontiguousarray(array)
    h, w = a.shape[:2]
    return typestore().types["sensor_msgs/msg/Image"](
        header=header(stamp, frame), height=h, width=w, encoding=encoding, is_bigendian=0,
        step=a.nbytes // h, data=a.view(np.uint8).reshape(-1))


def info_msg(stamp, frame, k, h, w):
    T = typestore().types
    return T["sensor_msgs/msg/CameraInfo"](
        header=header(stamp, frame), height=h, width=w, distortion_model="plumb_bob", d=np.zeros(5),
        k=k.reshape(-1), r=np.eye(3).reshape(-1), p=np.zeros(12), binning_x=0, binning_y=0,
        roi=T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))


def write_bag(path, messages):
    """messages: (topic, msgtype, message, stamp seconds), written with rosbags directly."""
    from rosbags.rosbag2 import Writer

    with Writer(path, version=8) as w:
        conns = {}
        for topic, msgtype, msg, stamp in sorted(messages, key=lambda m: m[3]):
            if topic not in conns:
                conns[topic] = w.add_connection(topic, msgtype, typestore=typestore())
            w.write(conns[topic], round(stamp * 1e9), serialize(msg, msgtype))
    return path


def aligned_pair(stamp, rgb=None, depth=None):
    rgb = np.zeros((48, 64, 3), np.uint8) if rgb is None else rgb
    depth = np.full((48, 64), 1000, np.uint16) if depth is None else depth
    return [(TOPICS.color, "sensor_msgs/msg/Image", image_msg(stamp, "cam", rgb, "rgb8"), stamp),
            (TOPICS.depth, "sensor_msgs/msg/Image", image_msg(stamp, "cam", depth, "16UC1"), stamp)]


INFO = (TOPICS.color_info, "sensor_msgs/msg/CameraInfo", info_msg(1.0, "cam", K, 48, 64), 1.0)


# --- round trips ------------------------------------------------------------------------------

@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_round_trip(tmp_path, storage):
    src = frames()
    path = write_ros2_bag(src, tmp_path / "bag", storage=storage)
    assert detect_format(path) == "rosbag2"
    rec = open_recording(path)
    assert isinstance(rec, Ros2BagRecording)
    back = list(rec)
    assert len(back) == len(src) and rec.stats.dropped == {}
    for i, (a, b) in enumerate(zip(src, back)):
        np.testing.assert_array_equal(b.rgb, a.rgb)
        np.testing.assert_allclose(b.depth, a.depth, atol=0.5e-3 + 1e-6)  # millimetre rounding
        np.testing.assert_allclose(b.T_world_cam, a.T_world_cam, atol=1e-9)
        np.testing.assert_array_equal(b.K, K)
        assert b.stamp == pytest.approx(a.stamp, abs=1e-9) and b.name == f"frame {i}"


def test_written_bag_is_what_realsense_ros_publishes(tmp_path):
    from rosbags.interfaces import QosDurability
    from rosbags.rosbag2 import Reader

    path = write_ros2_bag(frames(2), tmp_path / "bag")
    with Reader(path) as reader:
        by_topic = {c.topic: c for c in reader.connections}
        assert by_topic["/tf_static"].ext.offered_qos_profiles[0].durability == QosDurability.TRANSIENT_LOCAL
        msgs = {}
        for conn, _, raw in reader.messages():
            msgs.setdefault(conn.topic, []).append(typestore().deserialize_cdr(raw, conn.msgtype))
    (static,) = msgs["/tf_static"][0].transforms
    assert (static.header.frame_id, static.child_frame_id) == ("camera_link", "camera_color_optical_frame")
    r = static.transform.rotation
    np.testing.assert_allclose([r.x, r.y, r.z, r.w], [-0.5, 0.5, -0.5, 0.5], atol=1e-12)
    assert [m.transforms[0].header.frame_id for m in msgs["/tf"]] == ["world", "world"]
    color, depth = msgs[TOPICS.color][0], msgs[TOPICS.depth][0]
    assert (color.encoding, depth.encoding) == ("rgb8", "16UC1")
    assert color.header.frame_id == depth.header.frame_id == "camera_color_optical_frame"
    info = msgs[TOPICS.color_info][0]
    np.testing.assert_array_equal(info.k.reshape(3, 3), K)
    np.testing.assert_array_equal(info.p.reshape(3, 4)[:, :3], K)
    assert (info.width, info.height, info.distortion_model) == (64, 48, "plumb_bob")


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_bare_storage_file_and_custom_topics(tmp_path, storage):
    topics = RealSenseTopics(color="/cam/rgb", depth="/cam/depth", color_info="/cam/info", world_frame="map")
    write_ros2_bag(frames(3), tmp_path / "bag", storage=storage, topics=topics)
    (bare,) = [p for p in (tmp_path / "bag").iterdir() if p.suffix in (".db3", ".mcap")]
    bare = bare.rename(tmp_path / bare.name)  # no metadata.yaml beside it
    assert detect_format(bare) == "rosbag2"
    with pytest.raises(InputError, match="/camera/camera/color/image_raw.* not in the bag .it has: .*/cam/rgb"):
        open_recording(bare)
    back = list(open_recording(bare, topics={"color": "/cam/rgb", "depth": "/cam/depth", "color_info": "/cam/info",
                                             "world_frame": "map"}))
    assert len(back) == 3 and all(f.T_world_cam is not None for f in back)


def test_synthetic_bag_matches_folder(synth):
    diff = compare_recordings(open_recording(synth.folder), open_recording(synth.rosbag2))
    assert diff["frames_reference"] == diff["frames_other"] == 10
    assert diff["rgb"] == 0 and diff["depth_m"] <= 1e-3 and diff["pose"] <= 1e-6 and diff["stamp_s"] <= 1e-6


# --- poses and pairing ------------------------------------------------------------------------

def test_pose_modes(tmp_path):
    write_ros2_bag(frames(2), tmp_path / "bag")
    assert all(f.T_world_cam is None for f in Ros2BagRecording(tmp_path / "bag", topics={"world_frame": "odom"}))
    assert all(f.T_world_cam is None for f in Ros2BagRecording(tmp_path / "bag", poses="none"))
    with pytest.raises(InputError, match="world frame 'odom' is not in the tf tree .frames: camera_color_optical_frame"):
        Ros2BagRecording(tmp_path / "bag", topics={"world_frame": "odom"}, poses="tf")
    with pytest.raises(InputError, match="unknown pose mode"):
        Ros2BagRecording(tmp_path / "bag", poses="gps")


def test_frames_outside_the_tf_data_are_dropped(tmp_path):
    T_w_link = make_T(np.eye(3), [1.0, 2.0, 3.0])
    msgs = [INFO, (TOPICS.tf_static, "tf2_msgs/msg/TFMessage",
                   tf_message([transform_msg(T_LINK_OPTICAL, 1.0, "camera_link", "cam")]), 1.0)]
    for s in (0.9, 1.0, 1.1):
        msgs.append((TOPICS.tf, "tf2_msgs/msg/TFMessage", tf_message([transform_msg(T_w_link, s, "world", "camera_link")]), s))
    for s in (1.0, 1.05, 2.0):
        msgs += aligned_pair(s)
    rec = open_recording(write_bag(tmp_path / "bag", msgs))
    back = list(rec)
    assert [f.stamp for f in back] == pytest.approx([1.0, 1.05])
    np.testing.assert_allclose(back[1].T_world_cam, T_w_link @ T_LINK_OPTICAL, atol=1e-12)
    assert list(rec.stats.dropped.values()) == [1] and "no pose" in next(iter(rec.stats.dropped))


# --- robot pose ----------------------------------------------------------------------------

def robot_bag(path, base_parent="odom"):
    """A robot's bag: world -> odom (static), odom -> base_link moving along x at 0.9..1.1 s,
    world -> camera_link; frames at 1.0 and 1.05 s. base_parent other than odom: a separate tree."""
    tf = "tf2_msgs/msg/TFMessage"
    T_w_odom, T_w_link = make_T(euler2mat(0, 0, 0.5), [1.0, 2.0, 0.0]), make_T(np.eye(3), [0.0, 0.0, 1.0])
    msgs = [INFO, (TOPICS.tf_static, tf, tf_message([transform_msg(T_LINK_OPTICAL, 1.0, "camera_link", "cam"),
                                                     transform_msg(T_w_odom, 1.0, "world", "odom")]), 1.0)]
    for s in (0.9, 1.0, 1.1):
        T_odom_base = make_T(euler2mat(0, 0, s), [s, 0.0, 0.55])
        msgs.append((TOPICS.tf, tf, tf_message([transform_msg(T_w_link, s, "world", "camera_link"),
                                                transform_msg(T_odom_base, s, base_parent, "/base_link")]), s))
    for s in (1.0, 1.05):
        msgs += aligned_pair(s)
    return write_bag(path, msgs), T_w_odom


def test_robot_pose_from_tf_at_a_stamp(tmp_path):
    path, T_w_odom = robot_bag(tmp_path / "bag")
    rec = open_recording(path)
    last = list(rec)[-1].stamp
    pose = rec.robot_pose(last)
    expected = T_w_odom @ make_T(euler2mat(0, 0, 1.05), [1.05, 0.0, 0.55])  # interpolated between 1.0 and 1.1 s
    np.testing.assert_allclose(pose.T_world_base, expected, atol=1e-9)
    assert pose.frame == "base_link" and pose.source == f"tf world->base_link at 1.050 s in {path}"
    with pytest.raises(InputError, match="no robot pose at 2.000 s: .*outside its data.*--robot-pose"):
        rec.robot_pose(2.0)
    assert open_recording(path, poses="odometry").robot_pose(last) is None  # world = first camera, not tf's world
    assert open_recording(path, poses="none").robot_pose(last) is None
    assert open_recording(path, topics={"base_frame": "trunk"}).robot_pose(last) is None


def test_no_robot_pose_when_tf_does_not_connect_base_link(tmp_path):
    path, _ = robot_bag(tmp_path / "bag", base_parent="elsewhere")
    assert open_recording(path).robot_pose(1.05) is None
    write_ros2_bag(frames(2), tmp_path / "plain")
    assert open_recording(tmp_path / "plain").robot_pose(frames(2)[-1].stamp) is None


def test_written_bag_carries_a_standing_robot(tmp_path):
    T_w_base = make_T(euler2mat(0, 0, -np.pi / 2), [0.05, 0.83, 0.55])
    src = frames(3)
    rec = open_recording(write_ros2_bag(src, tmp_path / "bag", T_world_base=T_w_base))
    back = list(rec)
    np.testing.assert_allclose(rec.robot_pose(back[-1].stamp).T_world_base, T_w_base, atol=1e-12)
    for a, b in zip(src, back):  # the camera poses are unchanged by the extra transform
        np.testing.assert_allclose(b.T_world_cam, a.T_world_cam, atol=1e-9)


def test_pairing_by_header_stamp(tmp_path):
    colour = [m for s in (1.0, 1.033, 1.066) for m in aligned_pair(s)[:1]]
    depth = [aligned_pair(s)[1] for s in (1.003, 1.070)]  # 3 ms and 4 ms late; none for 1.033
    rec = open_recording(write_bag(tmp_path / "bag", [INFO] + colour + depth))
    assert [f.stamp for f in rec] == pytest.approx([1.0, 1.066])
    assert rec.stats.yielded == 2 and sum(rec.stats.dropped.values()) == 1
    assert [f.stamp for f in Ros2BagRecording(tmp_path / "bag", max_dt=0.002)] == []


# --- depth registration -----------------------------------------------------------------------

def test_register_depth_plane():
    # a fronto-parallel plane 2 m away seen by a depth camera 5 cm to the colour camera's left
    Kd = np.array([[50.0, 0, 39.5], [0, 50.0, 29.5], [0, 0, 1]])
    depth = np.full((60, 80), 2.0, np.float32)
    out = register_depth(depth, Kd, K, make_T(np.eye(3), [-0.05, 0, 0]), (48, 64))
    assert (out > 0).mean() > 0.8
    np.testing.assert_allclose(out[out > 0], 2.0, atol=1e-6)


def test_register_depth_moves_a_near_square_by_parallax():
    Kd = np.array([[50.0, 0, 39.5], [0, 50.0, 29.5], [0, 0, 1]])
    depth = np.full((60, 80), 2.0, np.float32)
    depth[20:30, 30:40] = 1.0  # centre pixel (34.5, 24.5): X = Y = -0.1 m at 1 m
    out = register_depth(depth, Kd, K, make_T(np.eye(3), [-0.05, 0, 0]), (48, 64))
    v, u = np.nonzero(np.isclose(out, 1.0))
    # expected centre: u = 60 * (-0.1 - 0.05) + 31.5 = 22.5, v = 60 * -0.1 + 23.5 = 17.5; 12 px wide
    assert abs(u.mean() - 22.5) < 0.5 and abs(v.mean() - 17.5) < 0.5
    assert 10 <= np.ptp(u) + 1 <= 13


def plane_depth(Kc, n, d, size):
    """Depth [H, W] of the plane n . X = d (camera frame) seen through intrinsics Kc."""
    v, u = np.mgrid[0:size[0], 0:size[1]]
    rays = np.stack([(u - Kc[0, 2]) / Kc[0, 0], (v - Kc[1, 2]) / Kc[1, 1], np.ones(size)], axis=-1)
    return d / (rays @ n)


def test_unaligned_depth_registered_through_tf(tmp_path):
    # realsense-ros layout: camera_link -> colour and depth optical frames, the colour camera 6 cm
    # to the right of the depth camera and slightly rotated; a tilted plane about 1.5 m away
    Kd = np.array([[80.0, 0, 39.5], [0, 80.0, 29.5], [0, 0, 1]])
    T_link_c = make_T(euler2mat(0.0, 0.02, 0.01) @ T_LINK_OPTICAL[:3, :3], [0.0, -0.06, 0.0])
    T_link_d = T_LINK_OPTICAL
    T_c_d = np.linalg.inv(T_link_c) @ T_link_d
    n_c = np.array([0.15, -0.1, 1.0]) / np.linalg.norm([0.15, -0.1, 1.0])
    d_c = 1.5
    n_d, d_d = T_c_d[:3, :3].T @ n_c, d_c - n_c @ T_c_d[:3, 3]  # the plane in the depth frame
    depth = plane_depth(Kd, n_d, d_d, (60, 80)).astype(np.float32)
    truth = plane_depth(K, n_c, d_c, (48, 64))
    bgr = np.zeros((48, 64, 3), np.uint8)
    bgr[..., 0] = 200  # blue
    topics = RealSenseTopics(depth="/camera/camera/depth/image_rect_raw")
    static = tf_message([transform_msg(T_link_c, 1.0, "camera_link", "camera_color_optical_frame"),
                         transform_msg(T_link_d, 1.0, "camera_link", "camera_depth_optical_frame")])
    path = write_bag(tmp_path / "bag", [
        (topics.tf_static, "tf2_msgs/msg/TFMessage", static, 1.0),
        (topics.color_info, "sensor_msgs/msg/CameraInfo", info_msg(1.0, "camera_color_optical_frame", K, 48, 64), 1.0),
        (topics.depth_info, "sensor_msgs/msg/CameraInfo", info_msg(1.0, "camera_depth_optical_frame", Kd, 60, 80), 1.0),
        (topics.color, "sensor_msgs/msg/Image", image_msg(1.0, "camera_color_optical_frame", bgr, "bgr8"), 1.0),
        (topics.depth, "sensor_msgs/msg/Image", image_msg(1.0, "/camera_depth_optical_frame", depth, "32FC1"), 1.0)])
    (f,) = list(open_recording(path, topics={"depth": topics.depth}))
    assert f.depth.shape == (48, 64) and f.T_world_cam is None
    assert (f.rgb[..., 2] == 200).all() and (f.rgb[..., :2] == 0).all()
    valid = f.depth > 0
    assert valid.mean() > 0.8
    err = np.abs(f.depth - truth)[valid]
    assert err.max() < 0.005 and np.median(err) < 0.002
    # the extrinsics matter: depth pasted unregistered (same pixel grid) is several times worse
    naive = plane_depth(K, n_d, d_d, (48, 64))
    assert np.median(np.abs(naive - truth)) > 4 * np.median(err)

    # the same bag without /tf_static: the depth cannot be registered
    bare = write_bag(tmp_path / "no_tf", [m for m in [
        (topics.color_info, "sensor_msgs/msg/CameraInfo", info_msg(1.0, "camera_color_optical_frame", K, 48, 64), 1.0),
        (topics.depth_info, "sensor_msgs/msg/CameraInfo", info_msg(1.0, "camera_depth_optical_frame", Kd, 60, 80), 1.0),
        (topics.color, "sensor_msgs/msg/Image", image_msg(1.0, "camera_color_optical_frame", bgr, "bgr8"), 1.0),
        (topics.depth, "sensor_msgs/msg/Image", image_msg(1.0, "camera_depth_optical_frame", depth, "32FC1"), 1.0)]])
    with pytest.raises(InputError, match=f"^{bare}.*not aligned to colour.*no extrinsics"):
        list(open_recording(bare, topics={"depth": topics.depth}))


# --- bad input --------------------------------------------------------------------------------

def test_missing_topics_and_bad_paths(tmp_path):
    write_ros2_bag(frames(2), tmp_path / "bag")
    with pytest.raises(InputError, match=r"/nope not in the bag \(it has: .*/camera/camera/color/image_raw"):
        open_recording(tmp_path / "bag", topics={"depth": "/nope"})
    with pytest.raises(InputError, match="does not exist"):
        open_recording(tmp_path / "nothing")
    with pytest.raises(InputError, match="unknown topic option"):
        open_recording(tmp_path / "bag", topics={"colour": "/x"})
    with pytest.raises(InputError, match="holds sensor_msgs/msg/CameraInfo"):
        open_recording(tmp_path / "bag", topics={"color": TOPICS.color_info})


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_truncated_bag(tmp_path, storage):
    write_ros2_bag(frames(8), tmp_path / "bag", storage=storage)
    (data,) = [p for p in (tmp_path / "bag").iterdir() if p.suffix in (".db3", ".mcap")]
    cut = tmp_path / f"cut{data.suffix}"
    cut.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    with pytest.raises(InputError, match=f"^{cut}: .*(corrupt|truncated|cannot open)") as err:
        list(open_recording(cut))
    assert "\n" not in str(err.value)
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])  # the same inside a bag folder
    with pytest.raises(InputError, match=f"^{tmp_path / 'bag'}: "):
        list(open_recording(tmp_path / "bag"))


def test_broken_metadata(tmp_path):
    write_ros2_bag(frames(1), tmp_path / "bag")
    (tmp_path / "bag" / "metadata.yaml").write_text("rosbag2_bagfile_information: [oops")
    with pytest.raises(InputError, match="cannot open the ROS 2 bag"):
        open_recording(tmp_path / "bag")


def test_writer_refuses_to_overwrite_and_leaves_nothing_on_failure(tmp_path):
    write_ros2_bag(frames(1), tmp_path / "bag")
    with pytest.raises(InputError, match="already exists"):
        write_ros2_bag(frames(1), tmp_path / "bag")

    def crashing():
        yield from frames(2)
        raise RuntimeError("renderer died")

    with pytest.raises(RuntimeError, match="renderer died"):
        write_ros2_bag(crashing(), tmp_path / "out" / "crashed")
    with pytest.raises(InputError, match="no frames to write"):
        write_ros2_bag([], tmp_path / "out" / "empty")
    assert list((tmp_path / "out").iterdir()) == []
    with pytest.raises(InputError, match="unknown rosbag2 storage"):
        write_ros2_bag(frames(1), tmp_path / "x", storage="bag")
