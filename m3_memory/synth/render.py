"""Posed RGB-D frames of the synthetic scenes (tabletop, room), ray-cast with open3d's RaycastingScene."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import open3d as o3d

from m3_memory.conventions import intrinsics_matrix, make_T
from m3_memory.recording.frame import Frame
from m3_memory.synth.scene import TABLE_TOP_Z, Part, SceneObject, room_objects, room_tables, tabletop_objects

LIGHT_DIR = np.array([0.3, 0.2, 1.0]) / np.linalg.norm([0.3, 0.2, 1.0])
SKY_RGB = np.array([0.80, 0.86, 0.93])


@dataclass
class SynthConfig:
    """The synthetic scan. Sizes in pixels, distances in metres, angles in degrees.

    The camera circles the table centre (a centripetal scan, as in the paper's robot
    demo) at ``radius`` and ``height`` above the table top, looking at ``look_at_z`` above
    it; radius and height vary slightly along the path, as a hand-held scan would.

    preset "room": ``tables`` tables with objects (:func:`m3_memory.synth.scene.room_objects`);
    the camera circles each table in turn (``arc`` degrees per table) and walks on to the next,
    one long continuous path (use hundreds of frames: :meth:`room`).
    """

    width: int = 320
    height: int = 240
    fov_x: float = 60.0
    n_frames: int = 48
    radius: float = 0.75
    cam_height: float = 0.45
    look_at_z: float = 0.05
    arc: float = 360.0
    fps: float = 30.0
    seed: int = 0
    preset: str = "tabletop"  # "tabletop" or "room"
    tables: int = 4  # room: how many tables

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"unknown synthetic scene preset {self.preset!r}; known: {', '.join(PRESETS)}")

    @classmethod
    def room(cls, **overrides) -> "SynthConfig":
        """The room preset: four tables, 300 frames (75 per table)."""
        return cls(**{"preset": "room", "n_frames": 300, **overrides})


PRESETS = ("tabletop", "room")


def look_at(eye: np.ndarray, target: np.ndarray, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """T_world_cam [4, 4] of an OpenCV camera at ``eye`` looking at ``target`` (world, metres)."""
    z = target - eye
    z = z / np.linalg.norm(z)
    x = np.cross(z, up)
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    return make_T(np.stack([x, y, z], axis=1), eye)


def camera_path(cfg: SynthConfig) -> list[np.ndarray]:
    """T_world_cam [4, 4] for each frame: the centripetal scan of the table (tabletop), or of
    each table in turn (room).

    Room: with T tables and s = T i / n_frames, the camera circles the table centre ``c(s)`` at
    ``arc * s`` degrees; between tables k and k + 1 (s in [k, k + 1)) the centre moves from one
    to the other along a smoothstep, so it lingers at each table and the path stays continuous.
    """
    centres = room_tables(cfg.tables) if cfg.preset == "room" else np.zeros((1, 2))
    poses = []
    for i in range(cfg.n_frames):
        s = i / cfg.n_frames
        walk = s * len(centres)
        k, u = int(walk), walk - int(walk)
        w = u * u * (3 - 2 * u) if len(centres) > 1 else 0.0
        cx, cy = centres[k] * (1 - w) + centres[(k + 1) % len(centres)] * w
        a = np.deg2rad(cfg.arc) * walk
        r = cfg.radius * (1 + 0.08 * np.sin(2 * np.pi * s * 3))
        h = TABLE_TOP_Z + cfg.cam_height * (1 + 0.15 * np.sin(2 * np.pi * s * 2))
        target = np.array([cx, cy, TABLE_TOP_Z + cfg.look_at_z])
        poses.append(look_at(np.array([cx + r * np.cos(a), cy + r * np.sin(a), h]), target))
    return poses


class SyntheticScene:
    """A synthetic scene (tabletop or room) and its scan. Iterating yields :class:`Frame` objects (float32
    depth in metres, exact; masks per object name), rendered on demand."""

    def __init__(self, cfg: SynthConfig | None = None):
        self.cfg = cfg or SynthConfig()
        self.objects, background = (room_objects(self.cfg.seed, self.cfg.tables) if self.cfg.preset == "room" else
                                    tabletop_objects(self.cfg.seed))
        self.parts: list[Part] = []
        labels: list[int] = []
        for obj in self.objects:
            self.parts += obj.parts
            labels += [obj.id] * len(obj.parts)
        self.parts += background
        labels += [0] * len(background)
        self.part_label = np.array(labels, dtype=np.uint8)
        self.scene = o3d.t.geometry.RaycastingScene()
        for part in self.parts:
            self.scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(part.mesh))
        fx = self.cfg.width / 2 / np.tan(np.deg2rad(self.cfg.fov_x) / 2)
        self.K = intrinsics_matrix(fx, fx, (self.cfg.width - 1) / 2, (self.cfg.height - 1) / 2)
        self.poses = camera_path(self.cfg)

    @property
    def object_names(self) -> list[str]:
        return [o.name for o in self.objects]

    def object(self, name: str) -> SceneObject:
        return next(o for o in self.objects if o.name == name)

    def __len__(self) -> int:
        return len(self.poses)

    def __iter__(self) -> Iterator[Frame]:
        for i in range(len(self)):
            yield self.render(i)

    def render(self, index: int) -> Frame:
        """Frame ``index`` of the scan."""
        T = self.poses[index]
        rgb, depth, label = self.render_at(T, self.K, self.cfg.width, self.cfg.height)
        masks = {o.name: label == o.id for o in self.objects}
        return Frame(rgb=rgb, depth=depth, K=self.K.copy(), T_world_cam=T.copy(), stamp=index / self.cfg.fps,
                     masks=masks, name=f"frame {index}")

    def render_at(self, T_world_cam: np.ndarray, K: np.ndarray, width: int, height: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Render any camera: rgb uint8 [H, W, 3], depth float32 [H, W] metres (0 = nothing
        hit), label uint8 [H, W] (object id, 0 = background)."""
        v, u = np.mgrid[0:height, 0:width].astype(np.float64)
        d_cam = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], axis=-1)
        d_world = d_cam.reshape(-1, 3) @ T_world_cam[:3, :3].T
        origin = np.broadcast_to(T_world_cam[:3, 3], d_world.shape)
        rays = o3d.core.Tensor(np.concatenate([origin, d_world], axis=1).astype(np.float32))
        hit = self.scene.cast_rays(rays)
        t = hit["t_hit"].numpy().astype(np.float64)
        gid = hit["geometry_ids"].numpy()
        normals = hit["primitive_normals"].numpy().astype(np.float64)
        ok = np.isfinite(t)
        colors = np.tile(SKY_RGB, (t.size, 1))
        label = np.zeros(t.size, dtype=np.uint8)
        points = origin + d_world * np.where(ok, t, 0.0)[:, None]
        lambert = 0.45 + 0.55 * np.abs(normals @ LIGHT_DIR)
        for g in np.unique(gid[ok]):
            sel = ok & (gid == g)
            colors[sel] = self.parts[g].shade(points[sel]) * lambert[sel, None]
            label[sel] = self.part_label[g]
        rgb = np.clip(np.rint(colors * 255), 0, 255).astype(np.uint8).reshape(height, width, 3)
        depth = np.where(ok, t, 0.0).astype(np.float32).reshape(height, width)  # ray z = 1: t is depth
        return rgb, depth, label.reshape(height, width)
