"""The QueryText service without ROS: request message -> :class:`QueryReply` -> response fields.

The query node loads the memory (:meth:`QueryHandler.load`; again when its memory, model or
weights parameter changes: :meth:`QueryHandler.update`), then answers each request: the camera
comes from the request or tf, the memory is rendered there and asked the text
(:func:`m3_memory.query.api.query_text`), and the target is expressed in the requested frame.
tf is looked up at the stamp of the camera pose the request gives, or of its depth image (the
latest transform when neither is given). The memory's coordinates are in the tf frame it records
(REP-105 ``map`` for new memories) unless the world_frame parameter names another. Every failure
(empty text, a memory that did not load, an unknown frame, a tf lookup that timed out, a bad
camera_info or depth image, an error inside the query) becomes a reply with ``success = False``
and a one-line message; nothing raises into the node.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from m3_memory.conventions import make_T
from m3_memory.device import resolve_device
from m3_memory.errors import InputError, M3Error
from m3_memory.recording.tf import TfLookupError
from m3_memory.ros.convert import (
    Intrinsics,
    Lookup,
    Make,
    StampedImage,
    StampedPose,
    depth_of_image,
    float_image_msg,
    intrinsics_of_fov,
    intrinsics_of_info,
    pose_stamped_msg,
    stamp_ns,
    stamped_pose_of,
    target_marker_msg,
    vector3_msg,
)
from m3_memory.ros.params import QueryParams, threshold_of

if TYPE_CHECKING:  # imported where a query runs
    from m3_memory.query.api import QueryConfig

RELOAD = ("memory", "model", "weights")  # parameters whose change loads the memory again
FIXTURE_MODEL = "clip-fixture"  # the registry name of the fixture CLIP; memories record it as "clip"


def memory_model(memory, requested: str) -> str:
    """The name under which ``memory`` holds the features of the model the user calls ``requested``:
    the same name, or for the fixture CLIP (built as ``clip-fixture``) the entry its checkpoint
    identifies. InputError listing the memory's models when it has none of that model."""
    from m3_memory.foundation.fixture import ARCH

    names = [m.name for m in memory.models]
    if requested in names:
        return requested
    if requested == FIXTURE_MODEL:
        fixture = [m.name for m in memory.models if m.checkpoint.startswith(ARCH + ":")]
        if fixture:
            return fixture[0]
    raise InputError(requested, f"not in this memory (models: {', '.join(names)})")


@dataclass
class Loaded:
    """A memory ready to answer: the memory, the name of its model entry, that model's text encoder."""

    memory: object
    model: str
    text_model: object


@dataclass
class QueryRequest:
    """m3_msgs/srv/QueryText request, field by field; None = not given."""

    text: str
    target_frame: str = ""
    camera_frame: str = ""
    camera_pose: StampedPose | None = None  # pose of the optical camera frame in camera_pose.frame_id
    camera_info: Intrinsics | None = None
    depth: StampedImage | None = None  # [H, W] float32 metres, registered to the view, and its stamp

    @classmethod
    def from_msg(cls, msg) -> QueryRequest:
        """Read a QueryText request message (rclpy or rosbags); InputError for a malformed field."""
        pose = stamped_pose_of(msg.camera_pose, "camera_pose")
        values = depth_of_image(msg.depth, "depth")
        depth = None if values is None else StampedImage(values, msg.depth.header.frame_id, stamp_ns(msg.depth.header.stamp))
        return cls(text=msg.text, target_frame=msg.target_frame.lstrip("/"), camera_frame=msg.camera_frame.lstrip("/"),
                   camera_pose=pose, camera_info=intrinsics_of_info(msg.camera_info, "camera_info"), depth=depth)


@dataclass
class QueryReply:
    """m3_msgs/srv/QueryText response, field by field; None = left empty in the message."""

    success: bool
    message: str
    found: bool = False
    score: float = 0.0
    target: StampedPose | None = None  # T_targetframe_target: position = target point, rotation = box axes
    size: np.ndarray = field(default_factory=lambda: np.zeros(3))  # box edge lengths, metres
    heatmap: StampedImage | None = None  # [H, W] float32 in [0, 1]

    def fields(self, make: Make) -> dict:
        """Every field of the response message, built with ``make``."""
        target, heatmap = self.target, self.heatmap
        stamp = target.stamp if target else heatmap.stamp if heatmap else 0
        return {"success": bool(self.success), "message": self.message, "found": bool(self.found),
                "score": float(self.score),
                "target": pose_stamped_msg(make, target.T if target else None, target.frame_id if target else "", stamp),
                "size": vector3_msg(make, self.size),
                "heatmap": float_image_msg(make, heatmap.values if heatmap else None, heatmap.frame_id if heatmap else "",
                                           stamp)}

    def marker(self, make: Make, text: str):
        """visualization_msgs/Marker of the target labelled ``text`` (DELETE when there is none)."""
        target = self.target
        if target is None:
            return target_marker_msg(make, None, self.size, "", 0, text)
        return target_marker_msg(make, target.T, self.size, target.frame_id, target.stamp, text)


def failure(message: str) -> QueryReply:
    return QueryReply(success=False, message=message)


class QueryHandler:
    """Answers QueryText requests from one memory, with tf given as a :data:`Lookup`. Thread-safe:
    requests may be answered while the parameters change."""

    def __init__(self, params: QueryParams, lookup: Lookup):
        self.params, self.lookup = params, lookup
        self.loaded: Loaded | None = None
        self.load_error = "the memory has not been loaded"
        self.lock = threading.Lock()

    @property
    def memory(self):
        loaded = self.loaded
        return loaded.memory if loaded else None

    def world_frame(self) -> str:
        """The tf frame of the memory's coordinates: the world_frame parameter, else the memory's
        own (meta.json scene_frame); '' without a memory."""
        loaded = self.loaded
        return self.params.world_frame or (loaded.memory.scene_frame if loaded else "")

    def load(self) -> str:
        """Load the memory and its text encoder; returns a one-line status. A failure is kept and
        given as the message of every later request (the node keeps running)."""
        try:
            loaded = _load(self.params)
        except M3Error as err:
            with self.lock:
                self.loaded, self.load_error = None, str(err)
            return self.load_error
        with self.lock:
            self.loaded, self.load_error = loaded, ""
        return self.status()

    def status(self) -> str:
        """One line: the memory answering (its size, model and frame), or why there is none."""
        loaded = self.loaded
        if loaded is None:
            return self.load_error
        return (f"loaded memory {self.params.memory} ({len(loaded.memory.gaussians)} Gaussians, model {self.params.model}, "
                f"frame {self.world_frame()})")

    def update(self, params: QueryParams) -> str:
        """Take changed parameters; a new memory, model or weights loads the memory first, and
        when that fails the change is refused (InputError) and the old memory keeps answering.
        Returns a one-line status."""
        if all(getattr(params, k) == getattr(self.params, k) for k in RELOAD):
            _config(params)  # the query settings are usable
            with self.lock:
                self.params = params
            return self.status()
        loaded = _load(params)
        with self.lock:
            self.params, self.loaded, self.load_error = params, loaded, ""
        return self.status()

    def handle_msg(self, msg, live_intrinsics: Intrinsics | None = None) -> QueryReply:
        """A QueryText request message -> reply (see :meth:`handle`)."""
        try:
            request = QueryRequest.from_msg(msg)
        except InputError as err:
            return failure(str(err))
        return self.handle(request, live_intrinsics)

    def handle(self, req: QueryRequest, live_intrinsics: Intrinsics | None = None) -> QueryReply:
        """Answer one request. Intrinsics: the request's, else ``live_intrinsics`` (the node's
        camera_info topic), else the default_* parameters."""
        with self.lock:
            p, loaded, load_error = self.params, self.loaded, self.load_error
        text = req.text.strip()
        if not text:
            return failure("text is empty: say what to find, e.g. 'yellow bath duck'")
        if loaded is None:
            return failure(load_error)
        world = p.world_frame or loaded.memory.scene_frame
        target_frame = req.target_frame or p.target_frame
        view = req.camera_info or live_intrinsics or intrinsics_of_fov(p.default_width, p.default_height, p.default_hfov)
        try:
            if req.camera_pose is not None:  # at the pose's stamp (0: the latest tf)
                T_world_ref, stamp = self.lookup(world, req.camera_pose.frame_id, req.camera_pose.stamp)
                T_world_cam, camera_frame = T_world_ref @ req.camera_pose.T, ""
                stamp = req.camera_pose.stamp or stamp
            else:  # where the camera was when the depth image was taken, else the latest
                camera_frame = req.camera_frame or p.camera_frame
                T_world_cam, stamp = self.lookup(world, camera_frame, req.depth.stamp if req.depth is not None else 0)
            T_target_world, _ = self.lookup(target_frame, world, stamp)
        except TfLookupError as err:
            return failure(f"tf: {err}")
        try:
            depth = req.depth.values if req.depth is not None else None
            return self._query(p, loaded, text, view, T_world_cam, depth, T_target_world, target_frame, camera_frame, stamp)
        except M3Error as err:
            return failure(str(err))
        except Exception as err:  # noqa: BLE001 - the service answers, the node stays up
            return failure(f"query failed: {err!r}")

    def _query(self, p: QueryParams, loaded: Loaded, text: str, view: Intrinsics, T_world_cam: np.ndarray,
               depth: np.ndarray | None, T_target_world: np.ndarray, target_frame: str, camera_frame: str,
               stamp: int) -> QueryReply:
        from m3_memory.query.api import Camera, query_text

        camera = Camera(view.K, view.width, view.height, T_world_cam)
        result = query_text(loaded.memory, text, camera, depth=depth, config=_config(p, loaded.model),
                            text_model=loaded.text_model)
        heatmap = StampedImage(np.asarray(result.heatmap, dtype=np.float32), camera_frame, stamp)
        if not result.found:
            return QueryReply(True, result.message, False, result.score, heatmap=heatmap)
        R = result.box.R if result.box is not None else np.eye(3)
        T = T_target_world @ make_T(R, result.point_world)
        size = result.box.extent if result.box is not None else np.zeros(3)
        x, y, z = T[:3, 3]
        return QueryReply(True, f"{result.message}; target at ({x:.3f}, {y:.3f}, {z:.3f}) m in {target_frame}", True,
                          result.score, StampedPose(T, target_frame, stamp), np.asarray(size, dtype=np.float64), heatmap)


def _config(p: QueryParams, model: str = ""):
    """QueryConfig of the parameters (``model``: the memory's entry name); InputError for a bad value."""
    from m3_memory.query.api import QueryConfig

    p.check()
    return QueryConfig(model=model or p.model, method=p.method, min_score=p.min_score if p.min_score >= 0 else None,
                       threshold=threshold_of(p.threshold), render_scale=p.render_scale,
                       device=str(resolve_device(p.device)))


def load_for_queries(path: str, requested: str, weights: str, device: str = "cpu",
                     config: Callable[[str], QueryConfig] | None = None, also: Callable[[object], object] | None = None
                     ) -> tuple:
    """(memory, its model entry name, text encoder, ``also(memory)``) of the memory at ``path``,
    prepared for queries with ``config(model name)`` (so the first request is as fast as the
    next). Whatever fails is one InputError naming ``path`` ("failed to load: ..."): a node
    reports it per request and keeps running. The query and grasp nodes load through it."""
    from m3_memory.memory.artifact import load_memory
    from m3_memory.query.api import QueryConfig, prepare, text_model_for

    if not path:
        raise InputError("memory", "no memory: set the node's memory parameter to a *.m3 path")
    try:
        memory = load_memory(path)
        model = memory_model(memory, requested)
        text_model = text_model_for(memory, model, weights or None, str(resolve_device(device)))
        prepare(memory, config(model) if config else QueryConfig(model=model))
        extra = also(memory) if also else None
    except Exception as err:  # noqa: BLE001 - any failure here is reported per request, never crashes the node
        raise InputError(path, f"failed to load: {err if isinstance(err, M3Error) else repr(err)}") from None
    return memory, model, text_model, extra


def _load(p: QueryParams) -> Loaded:
    """The memory of ``p.memory`` with the text encoder of ``p.model``; InputError saying why not."""
    memory, model, text_model, _ = load_for_queries(p.memory, p.model, p.weights, p.device, lambda m: _config(p, m))
    return Loaded(memory, model, text_model)
