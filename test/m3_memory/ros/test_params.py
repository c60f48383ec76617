"""Node parameters: read-only ones refuse changes, the others are checked before they apply."""

from __future__ import annotations

import pytest

from m3_grasp.ros.grasp_handler import GraspParams
from m3_memory.errors import InputError
from m3_memory.ros.params import MappingParams, QueryParams, changed, read_only


def test_parameters_read_at_start_are_read_only():
    assert read_only(QueryParams) == {"camera_info_topic"}
    assert read_only(GraspParams) == {"real_hardware", "trajectory_action", "gripper_action", "urdf", "robot_config"}
    assert read_only(MappingParams) == set()  # every goal reads them afresh


def test_changes_give_new_parameters_and_leave_the_old_ones():
    old = QueryParams(memory="a.m3")
    new = changed(old, {"threshold": "0.6", "min_score": 0, "target_frame": "odom"})
    assert (new.threshold, new.min_score, new.target_frame) == ("0.6", 0.0, "odom") and type(new.min_score) is float
    assert (old.threshold, old.min_score) == ("otsu", -1.0)


@pytest.mark.parametrize("params, change, problem", [
    (QueryParams(), {"camera_info_topic": "/other/camera_info"}, "read only"),
    (QueryParams(), {"threshold": "half"}, "must be 'otsu' or a number"),
    (QueryParams(), {"method": "dot"}, "relevancy, cosine"),
    (QueryParams(), {"render_scale": 0.0}, "(0, 1]"),
    (QueryParams(), {"tf_timeout": "1"}, "must be a float"),
    (QueryParams(), {"no_such": 1}, "not a parameter"),
    (MappingParams(), {"poses": "gps"}, "auto, tf, odometry, none"),
    (MappingParams(), {"record_seconds": -1.0}, "must be > 0"),
    (GraspParams(), {"backend": "teleport"}, "unknown backend"),
    (GraspParams(), {"speed_scale": 0.0}, "must be > 0"),
    (GraspParams(), {"real_hardware": True}, "read only"),
])
def test_bad_changes_are_refused_with_the_reason(params, change, problem):
    with pytest.raises(InputError, match=problem.replace("(", r"\(").replace("]", r"\]")):
        changed(params, change)


def test_rep105_defaults():
    """New memories live in map; the query and grasp nodes take the frame the memory records."""
    assert MappingParams().world_frame == "map"
    assert QueryParams().world_frame == "" and GraspParams().world_frame == ""


def test_device_parameter_is_checked():
    from m3_memory.ros.params import MappingParams, QueryParams

    for cls in (MappingParams, QueryParams):
        assert cls().device == "auto"
        cls(device="cpu").check()
        with pytest.raises(InputError, match="device tpu: unknown device"):
            cls(device="tpu").check()
