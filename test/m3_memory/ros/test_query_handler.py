"""The QueryText service logic: request message -> reply -> response fields, and its bad input."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pytest
from ros_scene import DUCK_WORLD, STAMP, T_WORLD_BASE, T_WORLD_CAM, scene_tf, tf_lookup

from m3_memory.conventions import invert_T
from m3_memory.recording.tf import TfLookupError
from m3_memory.ros.convert import float_image_msg, intrinsics_of_fov, pose_stamped_msg
from m3_memory.ros.interfaces import field_names, typename
from m3_memory.ros.params import QueryParams
from m3_memory.ros.query_handler import QueryHandler, QueryReply, QueryRequest

REQUEST, RESPONSE = typename("m3_msgs/srv/QueryText_Request"), typename("m3_msgs/srv/QueryText_Response")
VIEW = intrinsics_of_fov(160, 120, 1.2)


class Recorder:
    """Wraps a message and records which of its fields are read."""

    def __init__(self, msg):
        self._msg, self.read = msg, set()

    def __getattr__(self, name):
        self.read.add(name)
        return getattr(self._msg, name)


def request(make, text="yellow bath duck", **fields):
    """A QueryText request (rosbags) with everything else left empty, as `ros2 service call` sends it."""
    return make(REQUEST, text=text, **fields)


@pytest.fixture(scope="module")
def handler(duck_memory):
    h = QueryHandler(QueryParams(memory=str(duck_memory), model="clip", default_width=160, default_height=120,
                                 default_hfov=1.2), tf_lookup(scene_tf()))
    assert h.load().startswith("loaded memory"), h.load_error
    return h


def response(store, make, reply: QueryReply):
    """The rosbags response built from exactly the reply's fields, serialised and read back."""
    msg = store.types[RESPONSE](**reply.fields(make))
    return store.deserialize_cdr(store.serialize_cdr(msg, RESPONSE), RESPONSE)


def test_request_and_reply_mirror_the_service_fields(store):
    assert [f.name for f in fields(QueryRequest)] == field_names(store, REQUEST)
    assert [f.name for f in fields(QueryReply)] == field_names(store, RESPONSE)


def test_loading_prepares_the_memory(handler):
    """What the first query would pay for is done at load: every Gaussian's unit feature is kept."""
    from m3_memory.query.memo import memo

    assert any(key[0] == "features" for key in memo(handler.memory) if isinstance(key, tuple))


def test_query_finds_the_duck_in_the_target_frame(handler, store, make):
    msg = Recorder(request(make))
    reply = handler.handle_msg(msg, None)
    assert msg.read == set(field_names(store, REQUEST))  # consumes exactly the request's fields
    assert reply.success and reply.found, reply.message
    resp = response(store, make, reply)
    assert resp.success and resp.found and resp.score > 0.9
    assert resp.target.header.frame_id == "base_link"  # the target_frame parameter
    assert (resp.target.header.stamp.sec, resp.target.header.stamp.nanosec) == (123, 456)
    p = resp.target.pose.position
    expected = invert_T(T_WORLD_BASE) @ np.r_[DUCK_WORLD, 1.0]
    assert np.allclose([p.x, p.y, p.z], expected[:3], atol=0.03)
    q = resp.target.pose.orientation
    assert np.isclose(np.linalg.norm([q.x, q.y, q.z, q.w]), 1.0)
    assert 0.01 < min(resp.size.x, resp.size.y, resp.size.z) and max(resp.size.x, resp.size.y, resp.size.z) < 0.3
    heat = resp.heatmap
    assert (heat.width, heat.height, heat.encoding, heat.step) == (160, 120, "32FC1", 640)
    assert heat.header.frame_id == "camera_color_optical_frame"
    values = np.frombuffer(bytes(heat.data), dtype="<f4").reshape(120, 160)
    assert 0 <= values.min() and values.max() <= 1 and values[60, 80] > 0.5  # the duck is in the middle of the view
    marker = reply.marker(make, "yellow bath duck")
    assert marker.action == 0 and marker.header.frame_id == "base_link" and marker.text == "yellow bath duck"
    store.serialize_cdr(marker, "visualization_msgs/msg/Marker")


def test_explicit_camera_pose_intrinsics_and_target_frame(handler, store, make):
    T_base_cam = invert_T(T_WORLD_BASE) @ T_WORLD_CAM
    info = make("sensor_msgs/msg/CameraInfo", width=VIEW.width, height=VIEW.height, k=VIEW.K.reshape(-1))
    msg = request(make, camera_pose=pose_stamped_msg(make, T_base_cam, "base_link", 0), camera_info=info,
                  target_frame="world", camera_frame="no_such_frame")  # camera_frame is unused with a camera_pose
    reply = handler.handle_msg(msg)
    assert reply.success and reply.found, reply.message
    assert reply.target.frame_id == "world" and np.allclose(reply.target.T[:3, 3], DUCK_WORLD, atol=0.03)
    assert reply.heatmap.frame_id == ""  # a virtual camera has no tf frame


def test_depth_image_lifts_the_target(handler, store, make):
    depth_m = np.full((120, 160), 0.55, dtype=np.float32)  # a wall 0.55 m in front of the camera
    mm = (depth_m * 1000).astype("<u2")
    depth = make("sensor_msgs/msg/Image", width=160, height=120, encoding="16UC1", step=320, data=mm.view(np.uint8).reshape(-1))
    reply = handler.handle_msg(request(make, depth=depth, target_frame="camera_color_optical_frame"))
    assert reply.success and reply.found, reply.message
    assert np.isclose(reply.target.T[2, 3], 0.55, atol=1e-3)


def test_text_not_in_view_is_a_successful_not_found(handler, store, make):
    up = T_WORLD_CAM @ np.diag([1.0, -1.0, -1.0, 1.0])  # the camera turned to look up, at nothing
    reply = handler.handle_msg(request(make, camera_pose=pose_stamped_msg(make, up, "world", 0)))
    assert reply.success and not reply.found and reply.target is None, reply.message
    resp = response(store, make, reply)
    assert resp.target.header.frame_id == "" and resp.size.x == 0
    assert reply.marker(make, "yellow bath duck").action == 2  # DELETE the previous target


@pytest.mark.parametrize("text", ["", "   "])
def test_empty_text(handler, store, make, text):
    reply = handler.handle_msg(request(make, text=text))
    assert not reply.success and "text is empty" in reply.message
    resp = response(store, make, reply)
    assert not resp.success and resp.heatmap.width == 0 and resp.target.header.frame_id == ""


def test_unknown_frames(handler, store, make):
    for fields_ in ({"target_frame": "no_such_frame"}, {"camera_frame": "no_such_frame"},
                    {"camera_pose": pose_stamped_msg(make, np.eye(4), "no_such_frame", 0)}):
        reply = handler.handle_msg(request(make, **fields_))
        assert not reply.success and reply.message.startswith("tf: ") and "no_such_frame" in reply.message, fields_


def test_tf_lookup_timeout(duck_memory, store, make):
    def timing_out(target, source, stamp=0):
        raise TfLookupError(f"no transform {target} <- {source} within 0.5 s (timed out)")

    h = QueryHandler(QueryParams(memory=str(duck_memory)), timing_out)
    h.load()
    reply = h.handle_msg(request(make))
    assert not reply.success and "within 0.5 s" in reply.message


@pytest.mark.parametrize("memory, problem", [("", "no memory: set the node's memory parameter"),
                                             ("/no/such/memory.m3", "does not exist")])
def test_memory_that_failed_to_load(store, make, memory, problem):
    h = QueryHandler(QueryParams(memory=memory), tf_lookup(scene_tf()))
    assert problem in h.load()
    reply = h.handle_msg(request(make))
    assert not reply.success and problem in reply.message


def test_memory_without_the_model(duck_memory, store, make):
    h = QueryHandler(QueryParams(memory=str(duck_memory), model="siglip"), tf_lookup(scene_tf()))
    assert "failed to load" in h.load() and "siglip" in h.load_error
    assert not h.handle_msg(request(make)).success


def test_bad_parameters_are_reported_at_load(duck_memory):
    h = QueryHandler(QueryParams(memory=str(duck_memory), threshold="half"), tf_lookup(scene_tf()))
    assert "threshold" in h.load()


def test_malformed_request_fields(handler, store, make):
    bad_pose = pose_stamped_msg(make, np.eye(4), "world", 0)
    bad_pose.pose.orientation.w = 0.0
    bad_info = make("sensor_msgs/msg/CameraInfo", width=160, height=120)  # k all zero
    depth_rgb = make("sensor_msgs/msg/Image", width=2, height=1, encoding="rgb8", step=6, data=np.zeros(6, np.uint8))
    depth_wrong_size = float_image_msg(make, np.ones((10, 10), np.float32), "", 0)
    for name, value, problem in (("camera_pose", bad_pose, "zero quaternion"), ("camera_info", bad_info, "pinhole k"),
                                 ("depth", depth_rgb, "16UC1 or 32FC1"), ("depth", depth_wrong_size, "120x160")):
        reply = handler.handle_msg(request(make, **{name: value}))
        assert not reply.success and problem in reply.message, (name, reply.message)


def stamped_header(make, stamp_ns: int, frame: str = ""):
    return make("std_msgs/msg/Header", stamp=make("builtin_interfaces/msg/Time", sec=stamp_ns // 10**9,
                                                   nanosec=stamp_ns % 10**9), frame_id=frame)


def test_tf_is_looked_up_at_the_stamps_of_the_pose_and_the_depth_image(duck_memory, make):
    lookup = tf_lookup(scene_tf())
    h = QueryHandler(QueryParams(memory=str(duck_memory), default_width=160, default_height=120, default_hfov=1.2), lookup)
    h.load()
    T_base_cam = invert_T(T_WORLD_BASE) @ T_WORLD_CAM
    reply = h.handle_msg(request(make, camera_pose=pose_stamped_msg(make, T_base_cam, "base_link", 42_000_000_007)))
    assert reply.success and reply.target.stamp == 42_000_000_007, reply.message
    assert lookup.calls == [("world", "base_link", 42_000_000_007), ("base_link", "world", 42_000_000_007)]

    lookup.calls.clear()
    depth = float_image_msg(make, np.full((120, 160), 0.55, np.float32), "camera_color_optical_frame", 0)
    depth.header = stamped_header(make, 43_500_000_000, "camera_color_optical_frame")
    reply = h.handle_msg(request(make, depth=depth))
    assert reply.success and reply.target.stamp == 43_500_000_000, reply.message
    assert lookup.calls == [("world", "camera_color_optical_frame", 43_500_000_000), ("base_link", "world", 43_500_000_000)]

    lookup.calls.clear()
    assert h.handle_msg(request(make)).success  # neither: the latest transforms
    assert [c[2] for c in lookup.calls] == [0, STAMP]  # the target at the camera pose's time


@pytest.fixture(scope="module")
def map_memory(duck_memory, tmp_path_factory):
    """The duck memory as a new build writes it: in REP-105's map frame."""
    from dataclasses import replace

    from m3_memory.memory.artifact import load_memory, save_memory

    return save_memory(tmp_path_factory.mktemp("map") / "duck_map.m3", replace(load_memory(duck_memory), scene_frame="map"))


def map_tf():
    from m3_memory.recording.tf import TfBuffer

    tf = TfBuffer()
    tf.add("map", "base_link", T_WORLD_BASE)
    tf.add("map", "camera_color_optical_frame", T_WORLD_CAM)
    return tf


def test_the_memory_says_which_tf_frame_it_lives_in(map_memory, make):
    lookup = tf_lookup(map_tf())
    h = QueryHandler(QueryParams(memory=str(map_memory), default_width=160, default_height=120, default_hfov=1.2), lookup)
    assert h.load().endswith("frame map)")
    reply = h.handle_msg(request(make))
    assert reply.success and reply.found, reply.message
    assert lookup.calls[0][:2] == ("map", "camera_color_optical_frame")
    h.update(replace_params(h.params, world_frame="world"))  # the parameter overrides the memory's frame
    reply = h.handle_msg(request(make))
    assert not reply.success and reply.message.startswith("tf: ") and "world" in reply.message


def replace_params(params, **changes):
    from m3_memory.ros.params import changed

    return changed(params, changes)


def test_fixture_clip_by_its_registry_name(duck_memory, make):
    """A memory built with clip-fixture records the model as clip; asking for clip-fixture finds it."""
    h = QueryHandler(QueryParams(memory=str(duck_memory), model="clip-fixture", default_width=160, default_height=120,
                                 default_hfov=1.2), tf_lookup(scene_tf()))
    assert h.load().startswith("loaded memory"), h.load_error
    reply = h.handle_msg(request(make))
    assert reply.success and reply.found, reply.message


def test_memory_model_names():
    from types import SimpleNamespace

    from m3_memory.errors import InputError
    from m3_memory.ros.query_handler import memory_model

    entry = SimpleNamespace(name="clip", checkpoint="m3-fixture-clip:m3_fixture_clip.safetensors@abc")
    real = SimpleNamespace(name="clip", checkpoint="ViT-L-14-336:openai")
    assert memory_model(SimpleNamespace(models=[entry]), "clip") == "clip"
    assert memory_model(SimpleNamespace(models=[entry]), "clip-fixture") == "clip"
    with pytest.raises(InputError, match="models: clip"):
        memory_model(SimpleNamespace(models=[real]), "clip-fixture")  # real CLIP is not the fixture
    with pytest.raises(InputError, match="siglip"):
        memory_model(SimpleNamespace(models=[real]), "siglip")


def test_parameter_changes_apply_and_a_memory_that_fails_to_load_is_refused(duck_memory, map_memory, make, tmp_path):
    h = QueryHandler(QueryParams(memory=str(duck_memory), default_width=160, default_height=120, default_hfov=1.2),
                     tf_lookup(scene_tf()))
    h.load()
    h.update(replace_params(h.params, target_frame="camera_color_optical_frame"))
    reply = h.handle_msg(request(make))
    assert reply.success and reply.target.frame_id == "camera_color_optical_frame", reply.message
    with pytest.raises(Exception, match="missing.m3: failed to load"):
        h.update(replace_params(h.params, memory=str(tmp_path / "missing.m3")))
    assert h.params.memory == str(duck_memory) and h.handle_msg(request(make)).found  # the old memory still answers
    assert "frame map" in h.update(replace_params(h.params, memory=str(map_memory)))  # reloaded
    assert h.memory.scene_frame == "map" and h.world_frame() == "map"
