"""The memory: principal scene components, Gaussian memory attention, the *.m3 artifact."""

from m3_memory.memory.artifact import Gaussians, Memory, ModelEntry, load_memory, save_memory
from m3_memory.memory.attention import MemoryBank, memory_attention
from m3_memory.memory.psc import DEFAULT_THRESHOLDS, principal_scene_components, psc_fast, psc_reference
from m3_memory.robot_pose import RobotPose

__all__ = ["DEFAULT_THRESHOLDS", "Gaussians", "Memory", "MemoryBank", "ModelEntry", "load_memory", "memory_attention",
           "principal_scene_components", "psc_fast", "psc_reference", "RobotPose", "save_memory"]
