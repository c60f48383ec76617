"""Write the synthetic scan as a posed folder, a librealsense ``.db3`` and a ROS 2 bag.

The folder is the reference copy: a nerfstudio ``transforms.json`` folder (colour PNG,
uint16 millimetre depth PNG, OpenGL camera-to-world matrices) with m3's extensions:
``m3_objects`` (id, name, colour, centre, extent in world metres), ``m3_robot_pose`` (the
B1's stance at the table, :data:`~m3_memory.synth.scene.ROBOT_STANCE`) and per frame
``m3_label_path`` (uint8 object-id image) and ``m3_stamp`` (seconds). The ``.db3`` and
the ROS 2 bag are written from the folder as read back, so all three hold the same frames;
the bag also holds the stance as tf world -> base_link (a librealsense ``.db3`` cannot).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from m3_memory.conventions import GL_FROM_CV, depth_to_u16
from m3_memory.outputs import Staged
from m3_memory.progress import progress
from m3_memory.recording.frame import Frame
from m3_memory.recording.images import write_png
from m3_memory.robot_pose import RobotPose
from m3_memory.synth.render import SynthConfig, SyntheticScene
from m3_memory.synth.scene import ROBOT_STANCE

FOLDER, REALSENSE, ROSBAG2 = "scene", "scene_realsense.db3", "scene_rosbag2"


@dataclass
class SynthOutputs:
    """Paths of what :func:`write_synthetic` wrote."""

    folder: Path
    realsense: Path | None
    rosbag2: Path | None


def write_nerfstudio_folder(frames: Iterable[Frame], out: Path, objects: list[dict] | None = None,
                            extra: dict | None = None, progress: Callable | None = None) -> Path:
    """Frames -> a nerfstudio folder at ``out`` (written to a temporary folder, then renamed).

    All frames must share one camera. K is converted from m3's OpenCV pixel-centre
    convention to nerfstudio/COLMAP's (+0.5 px).
    """
    with Staged(out) as tmp:
        for sub in ("images", "depth", "labels"):
            (tmp / sub).mkdir(parents=True)
        entries, K, size = [], None, None
        for i, f in enumerate(progress(frames) if progress else frames):
            if K is None:
                K, size = f.K, f.size
            stem = f"frame_{i:05d}"
            write_png(tmp / "images" / f"{stem}.png", f.rgb)
            write_png(tmp / "depth" / f"{stem}.png", depth_to_u16(f.depth))
            entry = {"file_path": f"images/{stem}.png", "depth_file_path": f"depth/{stem}.png",
                     "m3_stamp": f.stamp}
            if f.T_world_cam is not None:
                entry["transform_matrix"] = (f.T_world_cam @ GL_FROM_CV).tolist()
            if f.masks and objects:
                label = np.zeros(f.size, dtype=np.uint8)
                for obj in objects:
                    label[f.masks[obj["name"]]] = obj["id"]
                write_png(tmp / "labels" / f"{stem}.png", label)
                entry["m3_label_path"] = f"labels/{stem}.png"
            entries.append(entry)
        if K is None:
            raise ValueError("no frames to write")
        meta = {"camera_model": "PINHOLE", "w": size[1], "h": size[0],
                "fl_x": K[0, 0], "fl_y": K[1, 1], "cx": K[0, 2] + 0.5, "cy": K[1, 2] + 0.5,
                "depth_unit_scale_factor": 0.001, "m3_objects": objects or [], **(extra or {}), "frames": entries}
        (tmp / "transforms.json").write_text(json.dumps(meta, indent=1))
    return Path(out)


def write_synthetic(out_dir: str | Path, cfg: SynthConfig | None = None, realsense: bool = True,
                    rosbag2: bool = True, show_progress: bool = True) -> SynthOutputs:
    """Render the synthetic scan (tabletop or room, ``cfg.preset``) into ``out_dir``: the folder, and optionally the ``.db3``
    recording and the ROS 2 bag (sqlite3) of realsense-ros topics."""
    from m3_memory.recording import open_recording

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scene = SyntheticScene(cfg)
    objects = [{"id": o.id, "name": o.name, "color": list(o.color), "center": o.center.tolist(),
                "extent": o.extent.tolist()} for o in scene.objects]

    def bar(desc: str, total: int) -> Callable:
        return lambda it: progress(it, desc, total=total, unit="frame", show=show_progress, leave=False)

    stance = RobotPose.from_xyz_yaw(*ROBOT_STANCE, source="synthetic scene stance")
    folder = write_nerfstudio_folder(scene, out_dir / FOLDER, objects,
                                     {"m3_synth_config": asdict(scene.cfg), "m3_robot_pose": stance.to_json()},
                                     bar("render scene", len(scene)))
    outputs = SynthOutputs(folder, None, None)
    if realsense:
        from m3_memory.recording.realsense import write_realsense_db3

        outputs.realsense = write_realsense_db3(bar("write .db3", len(scene))(open_recording(folder)),
                                                out_dir / REALSENSE, fps=round(scene.cfg.fps))
    if rosbag2:
        from m3_memory.recording.rosbag2 import write_ros2_bag

        target = out_dir / ROSBAG2
        if target.exists():
            shutil.rmtree(target)
        outputs.rosbag2 = write_ros2_bag(bar("write ROS 2 bag", len(scene))(open_recording(folder)), target,
                                         T_world_base=stance.T_world_base)
    return outputs
