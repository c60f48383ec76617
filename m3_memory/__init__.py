"""m3: a 3D spatial multimodal memory for robots (M3, ICLR 2025).

The whole job from Python::

    import m3_memory as m3

    m3.build_memory("scan_folder", "scene.m3", model="clip", config=m3.TrainConfig.fast())
    memory = m3.load_memory("scene.m3")
    duck = m3.find_in_memory(memory, "yellow bath duck")  # duck.point_world: [3] m, memory frame
    plan = m3.plan_grasp(memory, duck)

Names are imported on first use, so ``import m3_memory`` (and ``m3 --help``) does not wait for
torch. The core never imports rclpy; ROS 2 nodes live in ``m3_memory.ros``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from m3_memory.errors import BuildFailed, InputError, M3Error, MissingDependency, SafetyRefusal

__version__ = "0.1.0"

# name -> the module that defines it (imported when the name is first used)
_LAZY = {
    "Frame": "m3_memory.recording.frame",
    "open_recording": "m3_memory.recording",
    "TrainConfig": "m3_memory.training.config",
    "build_memory": "m3_memory.training.build",
    "Memory": "m3_memory.memory.artifact",
    "load_memory": "m3_memory.memory.artifact",
    "QueryConfig": "m3_memory.query.api",
    "QueryResult": "m3_memory.query.api",
    "find_in_memory": "m3_memory.query.api",
    "query_gaussians": "m3_memory.query.api",
    "query_text": "m3_memory.query.api",
    "Camera": "m3_memory.query.camera",
    "load_model": "m3_memory.foundation.base",
    "SynthConfig": "m3_memory.synth.render",
    "write_synthetic": "m3_memory.synth.write",
    "GraspConfig": "m3_grasp.plan",
    "plan_grasp": "m3_grasp.run",  # m3_grasp.run.plan_in_memory: from a query's answer
}
_RENAMED = {"plan_grasp": "plan_in_memory"}

__all__ = ["BuildFailed", "InputError", "M3Error", "MissingDependency", "SafetyRefusal", "__version__", *sorted(_LAZY)]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'm3_memory' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), _RENAMED.get(name, name))
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


if TYPE_CHECKING:
    from m3_grasp.plan import GraspConfig
    from m3_grasp.run import plan_in_memory as plan_grasp
    from m3_memory.foundation.base import load_model
    from m3_memory.memory.artifact import Memory, load_memory
    from m3_memory.query.api import QueryConfig, QueryResult, find_in_memory, query_gaussians, query_text
    from m3_memory.query.camera import Camera
    from m3_memory.recording import open_recording
    from m3_memory.recording.frame import Frame
    from m3_memory.synth.render import SynthConfig
    from m3_memory.synth.write import write_synthetic
    from m3_memory.training.build import build_memory
    from m3_memory.training.config import TrainConfig
