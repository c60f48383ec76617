import numpy as np
import pytest
from transforms3d.euler import euler2mat

from m3_memory.conventions import make_T
from m3_memory.errors import InputError
from m3_memory.recording import Frame, detect_format, open_recording
from m3_memory.recording.compare import compare_recordings
from m3_memory.recording.rosbag2 import RealSenseTopics, Ros2BagRecording, register_depth, write_ros2_bag

K = np.array([[60.0, 0, 31.5], [0, 60.0, 23.5], [0, 0, 1]])


def frames(n=6, poses=True):
    rng = np.random.default_rng(0)
    return [Frame(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8),
                  np.round(rng.uniform(0.2, 4, (48, 64)), 3).astype(np.float32), K,
                  make_T(euler2mat(0.1 * i, -0.2, 0.05 * i), [0.1 * i, 0.5, 1.0]) if poses else None, 1.0 + i / 15)
            for i in range(n)]


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_round_trip(tmp_path, storage):
    src = frames()
    path = write_ros2_bag(src, tmp_path / "bag", storage=storage)
    assert detect_format(path) == "rosbag2"
    back = list(open_recording(path))
    assert len(back) == len(src)
    for a, b in zip(src, back):
        np.testing.assert_array_equal(a.rgb, b.rgb)
        np.testing.assert_allclose(b.depth, a.depth, atol=1e-6)
        np.testing.assert_allclose(b.T_world_cam, a.T_world_cam, atol=1e-9)
        np.testing.assert_array_equal(b.K, K)
        assert b.stamp == pytest.approx(a.stamp, abs=1e-9)


def test_bare_storage_file_and_custom_topics(tmp_path):
    topics = RealSenseTopics(color="/cam/rgb", depth="/cam/depth", color_info="/cam/info", world_frame="map")
    write_ros2_bag(frames(3), tmp_path / "bag", storage="mcap", topics=topics)
    mcap = next((tmp_path / "bag").glob("*.mcap"))
    with pytest.raises(InputError, match="/camera/camera/color/image_raw not in the bag"):
        open_recording(mcap)
    back = list(open_recording(mcap, topics={"color": "/cam/rgb", "depth": "/cam/depth", "color_info": "/cam/info",
                                             "world_frame": "map"}))
    assert len(back) == 3 and back[0].T_world_cam is not None


def test_world_frame_absent_gives_no_pose(tmp_path):
    write_ros2_bag(frames(2), tmp_path / "bag")
    assert all(f.T_world_cam is None for f in Ros2BagRecording(tmp_path / "bag", topics={"world_frame": "odom"}))


def test_synthetic_bag_matches_folder(synth):
    diff = compare_recordings(open_recording(synth.folder), open_recording(synth.rosbag2))
    assert diff["frames_reference"] == diff["frames_other"] == 10
    assert diff["rgb"] == 0 and diff["depth_m"] <= 1e-3 and diff["pose"] <= 1e-6 and diff["stamp_s"] <= 1e-6


def test_register_depth_plane():
    # a fronto-parallel plane 2 m away seen by a depth camera 5 cm to the colour camera's left
    Kd = np.array([[50.0, 0, 39.5], [0, 50.0, 29.5], [0, 0, 1]])
    depth = np.full((60, 80), 2.0, np.float32)
    T_c_d = make_T(np.eye(3), [-0.05, 0, 0])
    out = register_depth(depth, Kd, K, T_c_d, (48, 64))
    assert (out > 0).mean() > 0.8
    np.testing.assert_allclose(out[out > 0], 2.0, atol=1e-6)


def test_unaligned_depth_via_tf(tmp_path):
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    T = store.types
    path = tmp_path / "bag"
    def hdr(frame):
        return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=1, nanosec=0),
                                                     frame_id=frame)
    Kd = np.array([[40.0, 0, 19.5], [0, 40.0, 14.5], [0, 0, 1]])
    ident = T["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0)
    with Writer(path, version=8) as w:
        topics = RealSenseTopics(depth="/camera/camera/depth/image_rect_raw")
        conns = {t: w.add_connection(t, m, typestore=store) for t, m in (
            (topics.color, "sensor_msgs/msg/Image"), (topics.depth, "sensor_msgs/msg/Image"),
            (topics.color_info, "sensor_msgs/msg/CameraInfo"), (topics.depth_info, "sensor_msgs/msg/CameraInfo"),
            (topics.tf_static, "tf2_msgs/msg/TFMessage"))}

        def put(topic, msg, msgtype):
            w.write(conns[topic], 1_000_000_000, bytes(store.serialize_cdr(msg, msgtype)))

        def info(frame, k, h, wd):
            return T["sensor_msgs/msg/CameraInfo"](
                header=hdr(frame), height=h, width=wd, distortion_model="plumb_bob", d=np.zeros(5), k=k.reshape(-1),
                r=np.eye(3).reshape(-1), p=np.zeros(12), binning_x=0, binning_y=0,
                roi=T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))

        tf = T["geometry_msgs/msg/TransformStamped"](
            header=hdr("color_optical"), child_frame_id="depth_optical",
            transform=T["geometry_msgs/msg/Transform"](translation=T["geometry_msgs/msg/Vector3"](x=0.015, y=0.0, z=0.0),
                                                       rotation=ident))
        put(topics.tf_static, T["tf2_msgs/msg/TFMessage"](transforms=[tf]), "tf2_msgs/msg/TFMessage")
        put(topics.color_info, info("color_optical", K, 48, 64), "sensor_msgs/msg/CameraInfo")
        put(topics.depth_info, info("depth_optical", Kd, 30, 40), "sensor_msgs/msg/CameraInfo")
        put(topics.color, T["sensor_msgs/msg/Image"](header=hdr("color_optical"), height=48, width=64, encoding="bgr8",
                                                     is_bigendian=0, step=192, data=np.zeros(48 * 192, np.uint8)),
            "sensor_msgs/msg/Image")
        put(topics.depth, T["sensor_msgs/msg/Image"](
            header=hdr("depth_optical"), height=30, width=40, encoding="32FC1", is_bigendian=0, step=160,
            data=np.full((30, 40), 1.5, "<f4").view(np.uint8).reshape(-1)), "sensor_msgs/msg/Image")
    rec = open_recording(path, topics={"depth": "/camera/camera/depth/image_rect_raw"})
    (f,) = list(rec)
    assert f.depth.shape == (48, 64)
    np.testing.assert_allclose(f.depth[f.depth > 0], 1.5, atol=1e-6)
    # only the plane's footprint is filled: the depth camera's narrower view covers the middle
    assert f.depth[24, 32] > 0 and f.depth[0, 0] == 0


def test_missing_topics_and_bad_paths(tmp_path):
    write_ros2_bag(frames(2), tmp_path / "bag")
    with pytest.raises(InputError, match="it has:.*/camera/camera/color/image_raw"):
        open_recording(tmp_path / "bag", topics={"depth": "/nope"})
    with pytest.raises(InputError, match="does not exist"):
        open_recording(tmp_path / "nothing")
    with pytest.raises(InputError, match="unknown topic option"):
        open_recording(tmp_path / "bag", topics={"colour": "/x"})


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_truncated_bag(tmp_path, storage):
    write_ros2_bag(frames(8), tmp_path / "bag", storage=storage)
    data = next(p for p in (tmp_path / "bag").iterdir() if p.suffix in (".db3", ".mcap"))
    cut = tmp_path / f"cut{data.suffix}"
    cut.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    with pytest.raises(InputError, match=cut.name):
        list(open_recording(cut))


def test_writer_refuses_to_overwrite(tmp_path):
    write_ros2_bag(frames(1), tmp_path / "bag")
    with pytest.raises(InputError, match="already exists"):
        write_ros2_bag(frames(1), tmp_path / "bag")


def test_register_depth_moves_a_near_square_by_parallax():
    Kd = np.array([[50.0, 0, 39.5], [0, 50.0, 29.5], [0, 0, 1]])
    depth = np.full((60, 80), 2.0, np.float32)
    depth[20:30, 30:40] = 1.0  # centre pixel (34.5, 24.5): X = Y = -0.1 m at 1 m
    out = register_depth(depth, Kd, K, make_T(np.eye(3), [-0.05, 0, 0]), (48, 64))
    v, u = np.nonzero(np.isclose(out, 1.0))
    # expected centre: u = 60 * (-0.1 - 0.05) + 31.5 = 22.5, v = 60 * -0.1 + 23.5 = 17.5; 12 px wide
    assert abs(u.mean() - 22.5) < 0.5 and abs(v.mean() - 17.5) < 0.5
    assert 10 <= np.ptp(u) + 1 <= 13
