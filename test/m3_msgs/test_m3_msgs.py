"""m3_msgs' .srv / .action definitions parse with rosbags' type system, every field is documented,
and every part serialises (CDR) and reads back."""

from __future__ import annotations

import pytest

from m3_memory.ros.interfaces import INTERFACES, MSGS_DIR, PARTS, field_names, m3_typestore, message_factory, split_parts, typename

EXPECTED = {
    "m3_msgs/srv/QueryText_Request": ["text", "target_frame", "camera_frame", "camera_pose", "camera_info", "depth"],
    "m3_msgs/srv/QueryText_Response": ["success", "message", "found", "score", "target", "size", "heatmap"],
    "m3_msgs/action/BuildMemory_Goal": ["bag_path", "color_topic", "depth_topic", "camera_info_topic", "world_frame",
                                        "record_seconds", "model", "fast", "out", "overwrite"],
    "m3_msgs/action/BuildMemory_Result": ["success", "message", "memory_path", "recorded_bag", "report_json"],
    "m3_msgs/action/BuildMemory_Feedback": ["stage", "fraction", "message"],
    "m3_msgs/action/Grasp_Goal": ["text", "target", "backend"],
    "m3_msgs/action/Grasp_Result": ["success", "message", "grasp_pose", "width", "opening", "trajectory", "base_move",
                                    "report_dir"],
    "m3_msgs/action/Grasp_Feedback": ["stage", "fraction", "message"],
}


@pytest.fixture(scope="module")
def store():
    return m3_typestore()


def test_every_part_parses_with_the_expected_fields(store):
    assert {name: field_names(store, typename(name)) for name in EXPECTED} == EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_parts_serialise_and_read_back(store, name):
    msg = message_factory(store)(typename(name))
    data = store.serialize_cdr(msg, typename(name))
    assert store.deserialize_cdr(data, typename(name)).__msgtype__ == msg.__msgtype__


@pytest.mark.parametrize("rel", INTERFACES)
def test_every_field_is_documented(rel):
    """Each field has a comment right above it (or above the run of fields it belongs to)."""
    documented = False
    for line in (MSGS_DIR / rel).read_text().splitlines():
        s = line.strip()
        if not s or s == "---":
            documented = False  # a blank line or a separator ends a comment's reach
        elif s.startswith("#"):
            documented = True
        else:
            assert documented, (rel, line)


def test_split_parts_needs_the_right_number_of_parts():
    assert split_parts("string a\n---\nbool b", "srv") == ["string a", "bool b"]
    with pytest.raises(ValueError, match="3 parts"):
        split_parts("string a\n---\nbool b", "action")
    assert set(PARTS) == {"srv", "action"}
