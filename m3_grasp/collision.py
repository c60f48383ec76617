"""Collision checks of the Z1 arm and gripper on the B1, all in base_link (metres, radians).

``ArmCollision`` is the model from the URDF: the collision primitives of ``urdf/b1_z1.urdf``
(sizes and sources in urdf/README.md) as a pinocchio GeometryModel on the full model (6 arm
joints and the gripper joint, so the moving jaw follows the gripper angle), checked by coal
against the arm itself, the B1 trunk and point clouds held as coal octrees.

Beside it, the earlier approximation still called by the planner, the simulator and the
grasp candidates: capsules between successive chain-frame origins (radii: Unitree's 65 mm
joint motors) and the gripper as three boxes in the tool frame (x approach, z closing): the
palm and two fingers at +-width/2.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import coal
import numpy as np
import pinocchio as pin
from scipy.spatial import cKDTree

from m3_grasp.kinematics import ARM_JOINTS, BASE_FRAME, CHAIN_FRAMES, GRIPPER_JOINT, Z1Kinematics
from m3_grasp.robot import default_urdf
from m3_memory.errors import InputError

# (from frame, to frame, radius m): base .. gripper stator; the jaws are the boxes below.
ARM_CAPSULES = tuple(zip(CHAIN_FRAMES[:7], CHAIN_FRAMES[1:8], (0.035, 0.035, 0.035, 0.03, 0.035, 0.035, 0.035)))
FINGER_DEPTH = 0.08  # m, jaw length behind the grip centre (along -x of the tool frame); the palm starts there
FINGER_TIP = 0.015  # m, finger beyond the grip centre
FINGER_BREADTH = 0.03  # m, along y of the tool frame
FINGER_THICKNESS = 0.012  # m, along z
PALM_HALF = (0.035, 0.04)  # m, half sizes of the gripper body along y and z


def finger_region(width: float) -> tuple[np.ndarray, np.ndarray]:
    """Box (lo [3], hi [3]) in the tool frame swept by the jaws when they close from ``width``."""
    return (np.array([-FINGER_DEPTH, -FINGER_BREADTH / 2, -width / 2]),
            np.array([FINGER_TIP, FINGER_BREADTH / 2, width / 2]))


def gripper_boxes(width: float, jaw_reach: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """Palm and both fingers, open to ``width`` metres, as boxes (lo [3], hi [3]) in the tool frame."""
    y, t = FINGER_BREADTH / 2, FINGER_THICKNESS
    palm = (np.array([-jaw_reach - 0.05, -PALM_HALF[0], -PALM_HALF[1]]),
            np.array([-FINGER_DEPTH, PALM_HALF[0], PALM_HALF[1]]))
    upper = (np.array([-FINGER_DEPTH, -y, width / 2]), np.array([FINGER_TIP, y, width / 2 + t]))
    lower = (np.array([-FINGER_DEPTH, -y, -width / 2 - t]), np.array([FINGER_TIP, y, -width / 2]))
    return [palm, upper, lower]


def in_box(points: np.ndarray, box: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Mask [N] of points [N, 3] inside an axis-aligned box (lo, hi)."""
    return np.all((points >= box[0]) & (points <= box[1]), axis=1)


class Obstacles:
    """A point cloud [K, 3] in base_link with a KD-tree for clearance queries."""

    def __init__(self, points_base: np.ndarray):
        self.points = np.asarray(points_base, dtype=np.float64).reshape(-1, 3)
        self.tree = cKDTree(self.points) if len(self.points) else None

    def segment_clearance(self, a: np.ndarray, b: np.ndarray, radius: float) -> float:
        """Distance (m) from the capsule a-b of ``radius`` to the nearest point (< 0: penetration)."""
        if self.tree is None:
            return np.inf
        n = max(2, int(np.ceil(np.linalg.norm(b - a) / 0.01)) + 1)
        samples = a + np.linspace(0.0, 1.0, n)[:, None] * (b - a)  # [n, 3], 1 cm apart
        return float(self.tree.query(samples)[0].min()) - radius

    def arm_clearance(self, kin: Z1Kinematics, q: np.ndarray) -> float:
        """Smallest clearance (m) of the arm capsules at configuration q [6]."""
        p = dict(zip(CHAIN_FRAMES, kin.chain_points(q)))
        return min(self.segment_clearance(p[a], p[b], r) for a, b, r in ARM_CAPSULES)

    def points_in_boxes(self, T_base_ee: np.ndarray, boxes: list[tuple[np.ndarray, np.ndarray]]) -> int:
        """How many points fall inside any of the tool-frame boxes at tool pose T_base_ee [4, 4]."""
        if self.tree is None:
            return 0
        count = 0
        for lo, hi in boxes:
            centre = T_base_ee[:3, :3] @ ((lo + hi) / 2) + T_base_ee[:3, 3]
            idx = self.tree.query_ball_point(centre, float(np.linalg.norm(hi - lo)) / 2)
            if idx:
                local = (self.points[idx] - T_base_ee[:3, 3]) @ T_base_ee[:3, :3]  # [k, 3] tool frame
                count += int(in_box(local, (lo, hi)).sum())
        return count


SELF, BODY = "self", "body"  # pair groups besides the point clouds
REST_GRIPPER = (0.0, -np.pi / 2)  # rad: closed and fully open, both checked at the rest pose
REST_TOLERANCE = 0.002  # m: pairs overlapping at rest count only when overlapping this much deeper


@dataclass(frozen=True)
class Contact:
    """Two bodies in collision (or nearest): URDF link names, or a point cloud's name."""

    a: str
    b: str
    distance: float  # m: the distance for nearest(), coal's lower bound on it (<= margin) for contacts()

    def __str__(self) -> str:
        return f"{self.a} and {self.b}"


class ArmCollision:
    """Collision model of the Z1 (arm and gripper) on the B1 from the URDF's ``<collision>``
    primitives, checked with coal through pinocchio.

    Pair groups, each switched on per query:
    - ``"self"``: arm and gripper geometries against each other;
    - ``"body"``: arm and gripper against the B1 trunk (base_link's box);
    - one group per point cloud given to :meth:`set_clouds` (its name), the whole robot
      except the trunk against the cloud.
    A geometry pair is never checked when its two links move together or meet at one joint
    (same pinocchio joint, or one joint the parent of the other: base_link, z1_base_link and
    z1_link01 touch the trunk; each link touches the next; the camera hangs on link06).
    At the Z1's rest pose (q = 0, gripper closed or open) the wrist lies folded on the
    shoulder and the primitives of a few pairs overlap, like Unitree's own collision meshes:
    those pairs (``rest_pairs``: geometry names -> overlap at rest, m) count only when they
    overlap deeper than at rest (by REST_TOLERANCE), and their distances are measured from
    that depth. Dropping them instead would miss the wrist swung into the upper arm.

    Configurations: ``q`` [6] z1_joint1..6 and ``gripper_angle`` (z1_gripper_joint: 0 closed,
    -pi/2 fully open), radians.
    """

    def __init__(self, urdf: str | Path | None = None, resolution: float = 0.01):
        path = Path(urdf) if urdf is not None else default_urdf()
        try:
            self.model = pin.buildModelFromUrdf(str(path))
            self._robot = pin.buildGeomFromUrdf(self.model, str(path), pin.GeometryType.COLLISION)
        except (RuntimeError, ValueError) as err:
            raise InputError(path, f"URDF does not load ({str(err).splitlines()[0] if str(err) else type(err).__name__})")
        for name in (*ARM_JOINTS, GRIPPER_JOINT):
            if not self.model.existJointName(name):
                raise InputError(path, f"URDF has no joint '{name}'")
        self.data = self.model.createData()
        self.resolution = resolution
        self._arm_q = [self.model.joints[self.model.getJointId(n)].idx_q for n in ARM_JOINTS]
        self._gripper_q = self.model.joints[self.model.getJointId(GRIPPER_JOINT)].idx_q
        self._q = pin.neutral(self.model)  # [7]
        self._robot_links = [self.model.frames[g.parentFrame].name for g in self._robot.geometryObjects]
        trunk = [i for i, link in enumerate(self._robot_links) if link == BASE_FRAME]
        if not trunk:
            raise InputError(path, f"link '{BASE_FRAME}' has no <collision> (the B1 trunk)")
        self._arm = [i for i, link in enumerate(self._robot_links) if link != BASE_FRAME]  # geometry ids
        n = len(self._robot_links)
        candidates = [(i, j) for i in range(n) for j in range(i + 1, n)
                      if not (i in trunk and j in trunk) and not self._adjacent(i, j)]
        self._allowance = {p: d - REST_TOLERANCE for p, d in self._overlap_at_rest(candidates).items()}  # m, < 0
        self.rest_pairs = {(self._robot.geometryObjects[i].name, self._robot.geometryObjects[j].name): d + REST_TOLERANCE
                           for (i, j), d in self._allowance.items()}
        self._robot_pairs = {SELF: [p for p in candidates if p[0] not in trunk and p[1] not in trunk],
                             BODY: [p for p in candidates if p[0] in trunk or p[1] in trunk]}
        self.set_clouds()

    def _adjacent(self, i: int, j: int) -> bool:
        a, b = (self._robot.geometryObjects[k].parentJoint for k in (i, j))
        return a == b or self.model.parents[a] == b or self.model.parents[b] == a

    def _overlap_at_rest(self, pairs: list[tuple[int, int]]) -> dict[tuple[int, int], float]:
        """Signed distance (m, <= 0) at the rest pose of the pairs in contact there."""
        geom = self._robot.clone()
        for i, j in pairs:
            geom.addCollisionPair(pin.CollisionPair(i, j))
        data = geom.createData()
        overlap: dict[tuple[int, int], float] = {}
        for g in REST_GRIPPER:
            pin.computeDistances(self.model, self.data, geom, data, self._configuration(np.zeros(6), g))
            for k, pair in enumerate(pairs):
                d = data.distanceResults[k].min_distance
                if d <= 0:
                    overlap[pair] = min(d, overlap.get(pair, 0.0))
        return overlap

    def _configuration(self, q: np.ndarray, gripper_angle: float) -> np.ndarray:
        full = self._q.copy()
        full[self._arm_q] = np.asarray(q, dtype=np.float64).reshape(6)
        full[self._gripper_q] = gripper_angle
        return full

    def set_clouds(self, resolution: float | None = None, **clouds: np.ndarray) -> None:
        """Replace the point clouds: name=points [K, 3] in base_link (metres), e.g. the centres
        of the memory's Gaussians (``scene``) and the points of the object to grasp
        (``object``: an obstacle on the way to the pre-grasp, not between the jaws at the
        grasp). Each cloud becomes a coal octree: every point occupies the cube of side
        ``resolution`` (default: the constructor's) holding it, so obstacles grow by up to one
        voxel. An empty cloud is accepted and never collides."""
        resolution = resolution if resolution is not None else self.resolution
        self.geom = self._robot.clone()
        self._links = list(self._robot_links)  # per geometry: URDF link or cloud name
        self._groups: dict[str, list[int]] = {}
        self._names: list[tuple[str, str]] = []  # per pair index: (link or cloud, link or cloud)
        self._offset: list[float] = []  # per pair index: distance (m) counted as contact, < 0 for rest pairs
        for group, pairs in self._robot_pairs.items():
            self._add_pairs(group, pairs)
        for name, points in clouds.items():
            if name in (SELF, BODY):
                raise InputError(name, "is the name of a pair group; name the clouds otherwise")
            p = np.asarray(points, dtype=np.float64)
            if p.ndim != 2 or p.shape[1] != 3:
                raise InputError(name, f"must be [K, 3] points (metres, base_link), got shape {list(p.shape)}")
            p = p[np.all(np.isfinite(p), axis=1)]
            if not len(p):
                self._groups[name] = []
                continue
            octree = coal.makeOctree(p, resolution)
            k = self.geom.addGeometryObject(pin.GeometryObject(name, 0, self.model.getFrameId(BASE_FRAME), pin.SE3.Identity(), octree))
            self._links.append(name)
            self._add_pairs(name, [(i, k) for i in self._arm])
        self._data: dict[tuple[frozenset[str], float], pin.GeometryData] = {}  # per (groups, margin)

    def _add_pairs(self, group: str, pairs: list[tuple[int, int]]) -> None:
        self._groups[group] = list(range(len(self.geom.collisionPairs), len(self.geom.collisionPairs) + len(pairs)))
        for i, j in pairs:
            self.geom.addCollisionPair(pin.CollisionPair(i, j))
            self._names.append((self._links[i], self._links[j]))
            self._offset.append(self._allowance.get((i, j), 0.0))

    @property
    def pairs(self) -> dict[str, list[tuple[str, str]]]:
        """Checked pairs by group ("self", "body", each cloud) as (link or cloud, link or cloud)."""
        return {group: [self._names[k] for k in ids] for group, ids in self._groups.items()}

    @property
    def clouds(self) -> list[str]:
        """Names of the point clouds loaded by :meth:`set_clouds`."""
        return [g for g in self._groups if g not in (SELF, BODY)]

    def _geometry_data(self, clouds, with_self: bool, with_body: bool, margin: float) -> tuple[pin.GeometryData, list[int]]:
        names = self.clouds if clouds is None else [clouds] if isinstance(clouds, str) else list(clouds)
        for name in names:
            if name not in self.clouds:
                raise InputError(name, f"no such point cloud (loaded: {', '.join(self.clouds) or 'none'})")
        groups = frozenset(names) | ({SELF} if with_self else set()) | ({BODY} if with_body else set())
        active = sorted(k for g in groups for k in self._groups[g])
        key = (groups, float(margin))
        if key not in self._data:
            data = self.geom.createData()
            data.deactivateAllCollisionPairs()
            for k in active:
                data.activateCollisionPair(k)
                data.collisionRequests[k].security_margin = margin + self._offset[k]
            self._data[key] = data
        return self._data[key], active

    def contacts(self, q: np.ndarray, gripper_angle: float = 0.0, clouds: str | list[str] | None = None,
                 with_self: bool = True, with_body: bool = True, margin: float = 0.0,
                 first: bool = False) -> list[Contact]:
        """Pairs closer than ``margin`` metres (touching or overlapping at 0) at q [6] and the
        gripper angle, against the named ``clouds`` (default: all loaded), the arm itself
        and the trunk; ``first``: only the first one found, the others are not checked."""
        data, active = self._geometry_data(clouds, with_self, with_body, margin)
        if not pin.computeCollisions(self.model, self.data, self.geom, data, self._configuration(q, gripper_angle), first):
            return []
        found = [Contact(*self._names[k], data.collisionResults[k].distance_lower_bound - self._offset[k])
                 for k in active if data.collisionResults[k].isCollision()]
        return found[:1] if first else found  # pairs after the first keep old results when it stops early

    def collides(self, q: np.ndarray, gripper_angle: float = 0.0, clouds: str | list[str] | None = None,
                 with_self: bool = True, with_body: bool = True, margin: float = 0.0) -> bool:
        """Whether any checked pair is closer than ``margin`` metres (see :meth:`contacts`)."""
        return bool(self.contacts(q, gripper_angle, clouds, with_self, with_body, margin, first=True))

    def why(self, q: np.ndarray, gripper_angle: float = 0.0, clouds: str | list[str] | None = None,
            with_self: bool = True, with_body: bool = True, margin: float = 0.0) -> str:
        """What collides, for messages: "base_link and z1_gripper_mover, ..." or "" when free."""
        found = self.contacts(q, gripper_angle, clouds, with_self, with_body, margin)
        return ", ".join(dict.fromkeys(str(c) for c in found))

    def nearest(self, q: np.ndarray, gripper_angle: float = 0.0, clouds: str | list[str] | None = None,
                with_self: bool = True, with_body: bool = True) -> Contact | None:
        """The closest checked pair and its distance (m, negative: penetration depth), or None
        when nothing is checked (no pairs, empty clouds). Distances to a cloud are to its
        octree's voxels, and slow (coal walks the octree: about 60 ms against the 40k-point
        tabletop, bench/results/collision.json); to keep a clearance while planning, ask
        :meth:`collides` with a ``margin`` (0.2 ms)."""
        data, active = self._geometry_data(clouds, with_self, with_body, 0.0)
        if not active:
            return None
        pin.computeDistances(self.model, self.data, self.geom, data, self._configuration(q, gripper_angle))
        distance = {k: data.distanceResults[k].min_distance - self._offset[k] for k in active}
        k = min(distance, key=distance.get)
        return Contact(*self._names[k], float(distance[k]))

    def clearance(self, q: np.ndarray, gripper_angle: float = 0.0, clouds: str | list[str] | None = None,
                  with_self: bool = True, with_body: bool = True) -> float:
        """Smallest distance (m) over the checked pairs; <= 0 in contact, inf when none is checked."""
        found = self.nearest(q, gripper_angle, clouds, with_self, with_body)
        return found.distance if found is not None else np.inf
