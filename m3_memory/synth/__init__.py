"""The embedded synthetic scenes (a tabletop, a room of tables): procedural meshes, camera paths, writers."""

from m3_memory.synth.render import SynthConfig, SyntheticScene, camera_path, look_at
from m3_memory.synth.scene import ROBOT_STANCE, TABLE_TOP_Z, SceneObject, room_objects, tabletop_objects
from m3_memory.synth.write import SynthOutputs, write_synthetic

__all__ = ["ROBOT_STANCE", "TABLE_TOP_Z", "SceneObject", "SynthConfig", "SynthOutputs", "SyntheticScene", "camera_path",
           "look_at", "room_objects", "tabletop_objects", "write_synthetic"]
