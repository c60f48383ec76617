"""The QueryText service without ROS: request message -> :class:`QueryReply` -> response fields.

The query node loads the memory once (:meth:`QueryHandler.load`), then answers each request:
the camera comes from the request or tf, the memory is rendered there and asked the text
(:func:`m3_memory.query.api.query_text`), and the target is expressed in the requested frame.
Every failure (empty text, a memory that did not load, an unknown frame, a tf lookup that timed
out, a bad camera_info or depth image, an error inside the query) becomes a reply with
``success = False`` and a one-line message; nothing raises into the node.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from m3_memory.conventions import make_T
from m3_memory.errors import InputError
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
    matrix_of_pose,
    pose_stamped_msg,
    stamp_ns,
    target_marker_msg,
    vector3_msg,
)
from m3_memory.ros.params import QueryParams


@dataclass
class QueryRequest:
    """m3_msgs/srv/QueryText request, field by field; None = not given."""

    text: str
    target_frame: str = ""
    camera_frame: str = ""
    camera_pose: StampedPose | None = None  # pose of the optical camera frame in camera_pose.frame_id
    camera_info: Intrinsics | None = None
    depth: np.ndarray | None = None  # [H, W] float32 metres, registered to the view

    @classmethod
    def from_msg(cls, msg) -> QueryRequest:
        """Read a QueryText request message (rclpy or rosbags); InputError for a malformed field."""
        pose = None
        if msg.camera_pose.header.frame_id:
            pose = StampedPose(matrix_of_pose(msg.camera_pose.pose, "camera_pose"), msg.camera_pose.header.frame_id.lstrip("/"),
                               stamp_ns(msg.camera_pose.header.stamp))
        return cls(text=msg.text, target_frame=msg.target_frame.lstrip("/"), camera_frame=msg.camera_frame.lstrip("/"),
                   camera_pose=pose, camera_info=intrinsics_of_info(msg.camera_info, "camera_info"),
                   depth=depth_of_image(msg.depth, "depth"))


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
    """Answers QueryText requests from one memory, with tf given as a :data:`Lookup`."""

    def __init__(self, params: QueryParams, lookup: Lookup):
        self.params, self.lookup = params, lookup
        self.memory = self.text_model = None
        self.load_error = "the memory has not been loaded"

    def load(self) -> str:
        """Load the memory and its text encoder; returns a one-line status. A failure is kept and
        given as the message of every later request (the node keeps running)."""
        from m3_memory.memory.artifact import load_memory

        if not self.params.memory:
            self.load_error = "no memory: set the node's memory parameter to a *.m3 path"
            return self.load_error
        try:
            from m3_memory.query.api import text_model_for

            self._config()
            memory = load_memory(self.params.memory)
            self.text_model = text_model_for(memory, self.params.model, self.params.weights or None)
        except Exception as err:  # noqa: BLE001 - any failure here is reported per request, never crashes the node
            self.memory = None
            self.load_error = f"memory {self.params.memory} failed to load: {err if isinstance(err, InputError) else repr(err)}"
            return self.load_error
        self.memory, self.load_error = memory, ""
        return f"loaded memory {self.params.memory} ({len(memory.gaussians)} Gaussians, model {self.params.model})"

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
        p = self.params
        text = req.text.strip()
        if not text:
            return failure("text is empty: say what to find, e.g. 'yellow bath duck'")
        if self.memory is None:
            return failure(self.load_error)
        target_frame = req.target_frame or p.target_frame
        view = req.camera_info or live_intrinsics or intrinsics_of_fov(p.default_width, p.default_height, p.default_hfov)
        try:
            if req.camera_pose is not None:
                T_world_ref, stamp = self.lookup(p.world_frame, req.camera_pose.frame_id)
                T_world_cam, camera_frame = T_world_ref @ req.camera_pose.T, ""
            else:
                camera_frame = req.camera_frame or p.camera_frame
                T_world_cam, stamp = self.lookup(p.world_frame, camera_frame)
            T_target_world, _ = self.lookup(target_frame, p.world_frame)
        except TfLookupError as err:
            return failure(f"tf: {err}")
        try:
            return self._query(text, view, T_world_cam, req.depth, T_target_world, target_frame, camera_frame, stamp)
        except InputError as err:
            return failure(str(err))
        except Exception as err:  # noqa: BLE001 - the service answers, the node stays up
            return failure(f"query failed: {err!r}")

    def _config(self):
        from m3_memory.query.api import QueryConfig

        p = self.params
        try:
            threshold = p.threshold if p.threshold == "otsu" else float(p.threshold)
        except ValueError:
            raise InputError(f"threshold={p.threshold}", "must be 'otsu' or a number") from None
        return QueryConfig(model=p.model, method=p.method, min_score=p.min_score if p.min_score >= 0 else None,
                           threshold=threshold, render_scale=p.render_scale)

    def _query(self, text: str, view: Intrinsics, T_world_cam: np.ndarray, depth: np.ndarray | None,
               T_target_world: np.ndarray, target_frame: str, camera_frame: str, stamp: int) -> QueryReply:
        from m3_memory.query.api import Camera, query_text

        camera = Camera(view.K, view.width, view.height, T_world_cam)
        result = query_text(self.memory, text, camera, depth=depth, config=self._config(), text_model=self.text_model)
        heatmap = StampedImage(np.asarray(result.heatmap, dtype=np.float32), camera_frame, stamp)
        if not result.found:
            return QueryReply(True, result.message, False, result.score, heatmap=heatmap)
        R = result.box.R if result.box is not None else np.eye(3)
        T = T_target_world @ make_T(R, result.point_world)
        size = result.box.extent if result.box is not None else np.zeros(3)
        x, y, z = T[:3, 3]
        return QueryReply(True, f"{result.message}; target at ({x:.3f}, {y:.3f}, {z:.3f}) m in {target_frame}", True,
                          result.score, StampedPose(T, target_frame, stamp), np.asarray(size, dtype=np.float64), heatmap)
