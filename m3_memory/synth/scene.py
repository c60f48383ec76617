"""Procedural scenes: a tabletop (a table on a floor and several named, coloured objects) and a
room (several such tables, each with its own objects, inside four walls).

World frame: metres, z up, origin on the floor below the (first) table centre. The scene is
built from open3d meshes, each of one base colour modulated at render time by a
procedural texture (so views carry trackable detail), and is deterministic for a seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import open3d as o3d

TABLE_TOP_Z = 0.75  # metres, height of the table surface

ROBOT_STANCE = (0.05, 0.83, 0.55, -np.pi / 2)
"""Where the B1 stands at the table: base_link (trunk centre) at (x, y, z) metres in the
world frame with heading yaw radians, as ``m3 build --robot-pose x,y,z,yaw`` takes it. At the
table's +y long edge (y = 0.40), facing -y, trunk 0.55 m above the floor (config/robot.yaml
base_height); the Z1 base (0.3455 m ahead of base_link) is then 0.08 m outside the edge and
0.46 m from the duck. The synthetic recordings carry it (:func:`m3_memory.synth.write_synthetic`)."""


@dataclass
class Part:
    """One mesh (world coordinates) of uniform base colour, textured at render time by a
    procedural pattern of the surface point: ``rgb * (1 + strength * pattern(p))``."""

    mesh: o3d.geometry.TriangleMesh
    rgb: tuple[float, float, float]
    texture: str = "noise"  # "noise", "wood" or "checker"
    strength: float = 0.15
    phase: float = 0.0

    def shade(self, points: np.ndarray) -> np.ndarray:
        """Textured colour [M, 3] in [0, 1] at surface points [M, 3] (world, metres)."""
        x, y, z = points[:, 0], points[:, 1], points[:, 2]
        if self.texture == "wood":
            pattern = np.sin(x * 60 + 3 * np.sin(y * 9 + self.phase))
        elif self.texture == "checker":
            pattern = np.where((np.floor(x / 0.25) + np.floor(y / 0.25)) % 2 == 0, 1.0, -1.0)
            pattern = pattern * 0.8 + 0.2 * np.sin(x * 41 + self.phase) * np.sin(y * 37)
        else:
            pattern = np.sin(37 * x + 23 * y + 29 * z + self.phase) * np.cos(-19 * x + 31 * y + 17 * z)
        return np.clip(np.asarray(self.rgb)[None, :] * (1 + self.strength * pattern[:, None]), 0, 1)


@dataclass
class SceneObject:
    """A named object of the scene. id: its label in mask images (1..255; 0 is background)."""

    id: int
    name: str
    color: tuple[float, float, float]  # dominant RGB in [0, 1]
    parts: list[Part]

    @property
    def points(self) -> np.ndarray:
        """All vertices [N, 3] (metres, world)."""
        return np.concatenate([np.asarray(p.mesh.vertices) for p in self.parts])

    @property
    def center(self) -> np.ndarray:
        """Centre of the axis-aligned bounding box [3] (metres, world)."""
        pts = self.points
        return (pts.min(0) + pts.max(0)) / 2

    @property
    def extent(self) -> np.ndarray:
        """Size of the axis-aligned bounding box [3] (metres)."""
        pts = self.points
        return pts.max(0) - pts.min(0)


def _paint(mesh: o3d.geometry.TriangleMesh, rgb, texture: str, rng: np.random.Generator,
           strength: float = 0.15) -> Part:
    return Part(mesh, tuple(rgb), texture, strength, float(rng.uniform(0, 2 * np.pi)))


def _box(size, center) -> o3d.geometry.TriangleMesh:
    mesh = o3d.geometry.TriangleMesh.create_box(*size)
    mesh.translate(np.asarray(center) - np.asarray(size) / 2)
    return mesh


def _duck(rng: np.random.Generator, at: np.ndarray) -> list[Part]:
    """A bath duck: ellipsoid body, sphere head, orange flat beak; ~12 cm long, facing +x."""
    yellow, orange = (0.98, 0.85, 0.08), (1.0, 0.45, 0.05)
    body = o3d.geometry.TriangleMesh.create_sphere(radius=1.0, resolution=24)
    body.vertices = o3d.utility.Vector3dVector(np.asarray(body.vertices) * [0.06, 0.045, 0.035])
    body.translate(at + [0, 0, 0.035])
    tail = o3d.geometry.TriangleMesh.create_cone(radius=0.02, height=0.04, resolution=16)
    tail.rotate(o3d.geometry.get_rotation_matrix_from_xyz((0, -np.pi / 2.6, 0)), center=(0, 0, 0))
    tail.translate(at + [-0.05, 0, 0.05])
    head = o3d.geometry.TriangleMesh.create_sphere(radius=0.03, resolution=20)
    head.translate(at + [0.035, 0, 0.085])
    beak = o3d.geometry.TriangleMesh.create_sphere(radius=1.0, resolution=12)
    beak.vertices = o3d.utility.Vector3dVector(np.asarray(beak.vertices) * [0.02, 0.014, 0.006])
    beak.translate(at + [0.068, 0, 0.08])
    return [_paint(body, yellow, "noise", rng, 0.06), _paint(tail, yellow, "noise", rng, 0.06),
            _paint(head, yellow, "noise", rng, 0.06), _paint(beak, orange, "noise", rng, 0.05)]


def _apple(rng: np.random.Generator, at: np.ndarray) -> list[Part]:
    fruit = o3d.geometry.TriangleMesh.create_sphere(radius=0.04, resolution=24)
    fruit.translate(at + [0, 0, 0.04])
    stem = o3d.geometry.TriangleMesh.create_cylinder(radius=0.004, height=0.02, resolution=8)
    stem.translate(at + [0, 0, 0.085])
    return [_paint(fruit, (0.80, 0.08, 0.08), "noise", rng, 0.15), _paint(stem, (0.35, 0.2, 0.08), "noise", rng, 0.0)]


def _mug(rng: np.random.Generator, at: np.ndarray) -> list[Part]:
    cup = o3d.geometry.TriangleMesh.create_cylinder(radius=0.04, height=0.1, resolution=32, split=4)
    cup.translate(at + [0, 0, 0.05])
    handle = o3d.geometry.TriangleMesh.create_torus(torus_radius=0.028, tube_radius=0.008)
    handle.rotate(o3d.geometry.get_rotation_matrix_from_xyz((np.pi / 2, 0, 0)), center=(0, 0, 0))
    handle.translate(at + [0.045, 0, 0.05])
    blue = (0.10, 0.25, 0.85)
    return [_paint(cup, blue, "noise", rng, 0.12), _paint(handle, blue, "noise", rng, 0.12)]


def _block(rng: np.random.Generator, at: np.ndarray) -> list[Part]:
    block = _box((0.07, 0.07, 0.07), at + [0, 0, 0.035])
    block.rotate(o3d.geometry.get_rotation_matrix_from_xyz((0, 0, 0.5)), center=at)
    return [_paint(block, (0.10, 0.70, 0.20), "noise", rng, 0.15)]


def _bowl(rng: np.random.Generator, at: np.ndarray) -> list[Part]:
    bowl = o3d.geometry.TriangleMesh.create_sphere(radius=1.0, resolution=32)
    v = np.asarray(bowl.vertices)
    keep = v[:, 2] < 0.1
    bowl.remove_vertices_by_mask(~keep)
    bowl.vertices = o3d.utility.Vector3dVector(np.asarray(bowl.vertices) * [0.07, 0.07, 0.05])
    bowl.translate(at + [0, 0, 0.05])
    return [_paint(bowl, (0.55, 0.20, 0.70), "noise", rng, 0.12)]


# name, builder, dominant colour, position on the table top (x, y metres from its centre)
OBJECTS = (
    ("yellow bath duck", _duck, (0.98, 0.85, 0.08), (0.05, 0.02)),
    ("red apple", _apple, (0.80, 0.08, 0.08), (-0.20, 0.15)),
    ("blue mug", _mug, (0.10, 0.25, 0.85), (0.22, -0.16)),
    ("green block", _block, (0.10, 0.70, 0.20), (-0.18, -0.18)),
    ("purple bowl", _bowl, (0.55, 0.20, 0.70), (0.24, 0.20)),
)


def _table(rng: np.random.Generator, centre: np.ndarray) -> list[Part]:
    """A 1.0 x 0.8 m wooden table with four legs, its top centred at ``centre`` (x, y) metres."""
    x, y = float(centre[0]), float(centre[1])
    wood = (0.55, 0.38, 0.22)
    parts = [_paint(_box((1.0, 0.8, 0.04), (x, y, TABLE_TOP_Z - 0.02)), wood, "wood", rng, 0.25)]
    for sx in (-1, 1):
        for sy in (-1, 1):
            leg = _box((0.05, 0.05, TABLE_TOP_Z - 0.04), (x + sx * 0.44, y + sy * 0.34, (TABLE_TOP_Z - 0.04) / 2))
            parts.append(_paint(leg, wood, "noise", rng, 0.1))
    return parts


def tabletop_objects(seed: int = 0) -> tuple[list[SceneObject], list[Part]]:
    """The named objects and the unlabeled background (table, floor).

    Returns (objects, background meshes), all in world coordinates.
    """
    rng = np.random.default_rng(seed)
    top = np.array([0.0, 0.0, TABLE_TOP_Z])
    objects = [SceneObject(i + 1, name, color, build(rng, top + [x, y, 0.0]))
               for i, (name, build, color, (x, y)) in enumerate(OBJECTS)]
    background = _table(rng, np.zeros(2))
    floor = _box((6.0, 6.0, 0.02), (0, 0, -0.01))
    background.append(_paint(floor, (0.6, 0.6, 0.62), "checker", rng, 0.25))
    return objects, background


ROOM_SPACING = (2.2, 2.0)  # metres between neighbouring table centres along x and y
ROOM_MARGIN = 1.6  # metres from the outermost table centres to the walls
WALL_HEIGHT = 2.5  # metres
MAX_TABLES = 40  # object ids are 1..255, at most five objects per table


def room_tables(count: int) -> np.ndarray:
    """Table centres [count, 2] (x, y metres) of a room: a grid of ceil(sqrt(count)) columns from the
    origin, rows walked alternately left and right, so consecutive tables are neighbours."""
    cols = int(np.ceil(np.sqrt(count)))
    centres = []
    for k in range(count):
        row, col = divmod(k, cols)
        col = col if row % 2 == 0 else cols - 1 - col
        centres.append((col * ROOM_SPACING[0], row * ROOM_SPACING[1]))
    return np.array(centres, dtype=np.float64)


def room_objects(seed: int = 0, tables: int = 4) -> tuple[list[SceneObject], list[Part]]:
    """A room of ``tables`` tables (:func:`room_tables`) inside four walls. The first table holds
    the tabletop scene's objects where the tabletop holds them (same names, so the robot's stance
    and queries carry over); each other table holds three to five of them in shuffled places,
    named ``"<object> (table k)"``. Returns (objects, background meshes), world coordinates."""
    if not 1 <= tables <= MAX_TABLES:
        raise ValueError(f"a room has 1 to {MAX_TABLES} tables, got {tables}")
    rng = np.random.default_rng(seed)
    centres = room_tables(tables)
    objects: list[SceneObject] = []
    background: list[Part] = []
    for k, centre in enumerate(centres):
        top = np.array([centre[0], centre[1], TABLE_TOP_Z])
        chosen = range(len(OBJECTS)) if k == 0 else rng.permutation(len(OBJECTS))[:int(rng.integers(3, len(OBJECTS) + 1))]
        places = [OBJECTS[i][3] for i in (range(len(OBJECTS)) if k == 0 else rng.permutation(len(OBJECTS)))]
        for slot, i in enumerate(chosen):
            name, build, color, _ = OBJECTS[i]
            x, y = places[slot]
            objects.append(SceneObject(len(objects) + 1, name if k == 0 else f"{name} (table {k + 1})", color,
                                       build(rng, top + [x, y, 0.0])))
        background += _table(rng, centre)
    lo, hi = centres.min(0) - ROOM_MARGIN, centres.max(0) + ROOM_MARGIN
    mid, size = (lo + hi) / 2, hi - lo
    background.append(_paint(_box((size[0], size[1], 0.02), (mid[0], mid[1], -0.01)), (0.6, 0.6, 0.62), "checker", rng, 0.25))
    walls = [((size[0], 0.1), (mid[0], lo[1])), ((size[0], 0.1), (mid[0], hi[1])),
             ((0.1, size[1]), (lo[0], mid[1])), ((0.1, size[1]), (hi[0], mid[1]))]
    colours = ((0.85, 0.80, 0.70), (0.70, 0.78, 0.85), (0.78, 0.85, 0.72), (0.86, 0.74, 0.78))
    for ((sx, sy), (x, y)), rgb in zip(walls, colours):
        background.append(_paint(_box((sx, sy, WALL_HEIGHT), (x, y, WALL_HEIGHT / 2)), rgb, "noise", rng, 0.2))
    return objects, background
