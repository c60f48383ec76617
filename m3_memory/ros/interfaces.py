"""m3_msgs as rosbags types, without a ROS install.

rosbags parses ``.msg`` text only, so each ``.srv`` / ``.action`` file is split at its ``---``
lines and the parts are registered under the names rosidl gives them
(``m3_msgs/srv/QueryText_Request``, ``m3_msgs/action/Grasp_Goal`` ...), as rosbags spells them
(:func:`typename`: it files services under ``srv/msg/``). The classes carry the
same field names as rclpy's, so ROS-free code and its tests can build, serialise and check m3
messages. :func:`message_factory` makes messages the way rclpy constructors do (unset fields
take their zero values), which is how :mod:`m3_memory.ros.convert` builds them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

MSGS_DIR = Path(__file__).resolve().parents[2] / "m3_msgs"  # the interface package in a source checkout
PARTS = {"srv": ("Request", "Response"), "action": ("Goal", "Result", "Feedback")}
INTERFACES = ("srv/QueryText.srv", "action/BuildMemory.action", "action/Grasp.action")


def split_parts(text: str, kind: str) -> list[str]:
    """The ``.msg`` texts of a ``.srv`` (request, response) or ``.action`` (goal, result, feedback)."""
    parts, current = [], []
    for line in text.splitlines():
        if line.strip() == "---":
            parts.append("\n".join(current))
            current = []
        else:
            current.append(line)
    parts.append("\n".join(current))
    if len(parts) != len(PARTS[kind]):
        raise ValueError(f"a .{kind} file has {len(PARTS[kind])} parts separated by '---', found {len(parts)}")
    return parts


def typename(rosidl_name: str) -> str:
    """rosbags' key for a rosidl type name (``m3_msgs/srv/QueryText_Request`` -> ``m3_msgs/srv/msg/QueryText_Request``)."""
    from rosbags.typesys.msg import normalize_msgtype

    return normalize_msgtype(rosidl_name)


def interface_types(msgs_dir: Path = MSGS_DIR) -> dict[str, Any]:
    """rosbags type definitions of every part of m3_msgs' interfaces, by :func:`typename`."""
    from rosbags.typesys import get_types_from_msg

    types: dict[str, Any] = {}
    for rel in INTERFACES:
        kind, name = rel.split("/")[0], Path(rel).stem
        for suffix, text in zip(PARTS[kind], split_parts((msgs_dir / rel).read_text(), kind)):
            types.update(get_types_from_msg(text, f"m3_msgs/{kind}/{name}_{suffix}"))
    return types


def m3_typestore(msgs_dir: Path = MSGS_DIR):
    """A fresh rosbags typestore of ROS 2 Humble's standard messages plus m3_msgs."""
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    store.register(interface_types(msgs_dir))
    return store


def field_names(store, typename: str) -> list[str]:
    """Field names of a message type, in definition order."""
    return [name for name, _ in store.fielddefs[typename][1]]


def _zero(store, spec) -> Any:
    from rosbags.typesys.store import Nodetype

    kind, detail = spec
    if kind == Nodetype.NAME:
        return _message(store, detail, {})
    if kind == Nodetype.BASE:
        base = detail[0]
        return "" if base == "string" else False if base == "bool" else 0.0 if base.startswith("float") else 0
    (sub_kind, sub), length = detail
    if sub_kind == Nodetype.BASE and sub[0] != "string":
        return np.zeros(length if kind == Nodetype.ARRAY else 0, dtype=np.dtype(sub[0].replace("byte", "uint8")
                                                                                .replace("char", "uint8")))
    return [_zero(store, (sub_kind, sub)) for _ in range(length if kind == Nodetype.ARRAY else 0)]


def _message(store, typename: str, fields: dict[str, Any]):
    known = field_names(store, typename)
    unknown = set(fields) - set(known)
    if unknown:
        raise TypeError(f"{typename} has no field(s) {', '.join(sorted(unknown))}")
    defs = dict(store.fielddefs[typename][1])
    return store.types[typename](**{name: fields[name] if name in fields else _zero(store, defs[name]) for name in known})


def message_factory(store) -> Callable[..., Any]:
    """``make(typename, **fields)``: a rosbags message with unset fields at their zero values."""
    return lambda typename, **fields: _message(store, typename, fields)
