"""Collision checks of the Z1 arm and gripper on the B1, all in base_link (metres, radians).

``ArmCollision`` is the model from the URDF: the collision primitives of ``urdf/b1_z1.urdf``
(sizes and sources in urdf/README.md) as a pinocchio GeometryModel on the full model (6 arm
joints and the gripper joint, so the moving jaw follows the gripper angle), checked by coal
against the arm itself, the B1 trunk and point clouds held as coal octrees.

``Hand`` holds the same primitives of the gripper (everything that moves with joint 6 or
the gripper joint: flange, palm, jaws, camera) in the tool frame, for exact point tests
where a grasp is fitted to an object's points.

No capsule broad phase: coal's own bounding volumes make the full check (self, trunk and a
40k-point scene) 0.76 ms per configuration, against 2.8 ms for the capsule check it
replaced (bench/results/collision.json).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import coal
import numpy as np
import pinocchio as pin

from m3_grasp.kinematics import ARM_JOINTS, BASE_FRAME, EE_FRAME, GRIPPER_JOINT
from m3_grasp.robot import default_urdf
from m3_memory.errors import InputError

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

    def set_clouds(self, resolution: float | dict[str, float] | None = None, **clouds: np.ndarray) -> None:
        """Replace the point clouds: name=points [K, 3] in base_link (metres), e.g. the centres
        of the memory's Gaussians (``scene``) and the points of the object to grasp
        (``object``: an obstacle on the way to the pre-grasp, not between the jaws at the
        grasp). Each cloud becomes a coal octree: every point occupies the cube of side
        ``resolution`` (m; one for all, or per cloud name; default: the constructor's) holding
        it, so obstacles grow by up to one voxel. An empty cloud is accepted and never collides."""
        sizes = resolution if isinstance(resolution, dict) else {}
        default = resolution if resolution is not None and not isinstance(resolution, dict) else self.resolution
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
            octree = coal.makeOctree(p, sizes.get(name, default))
            k = self.geom.addGeometryObject(pin.GeometryObject(name, 0, self.model.getFrameId(BASE_FRAME), pin.SE3.Identity(), octree))
            self._links.append(name)
            self._add_pairs(name, [(i, k) for i in self._arm])
        self._data: dict[tuple[frozenset[str], float], pin.GeometryData] = {}  # per (groups, margin)
        self._pair_data = self.geom.createData()  # for distances()

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

    def distances(self, q: np.ndarray, gripper_angle: float, contacts: list[Contact]) -> dict[str, float]:
        """Distance (m, negative: penetration depth) of each named pair ("a and b", see
        :class:`Contact`; the smallest over their geometries) at q [6] and the gripper angle.
        About 0.5 ms per geometry pair against a 40k-point octree."""
        wanted = {(c.a, c.b) for c in contacts}
        pin.updateGeometryPlacements(self.model, self.data, self.geom, self._pair_data, self._configuration(q, gripper_angle))
        out: dict[str, float] = {}
        for k, names in enumerate(self._names):
            if names in wanted:
                d = pin.computeDistance(self.geom, self._pair_data, k).min_distance - self._offset[k]
                key = f"{names[0]} and {names[1]}"
                out[key] = min(d, out.get(key, np.inf))
        return out

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


def _half_extents(geometry) -> np.ndarray:
    """Half sizes [3] of a coal Box or Cylinder (axis z) in its own frame (m)."""
    if isinstance(geometry, coal.Box):
        return np.asarray(geometry.halfSide)
    return np.array([geometry.radius, geometry.radius, geometry.halfLength])


def _inside(points: np.ndarray, geometry, T_tool_geom: np.ndarray, margin: float) -> np.ndarray:
    """Mask [N] of points [N, 3] (tool frame) inside a coal Box or Cylinder grown by ``margin`` m."""
    local = (points - T_tool_geom[:3, 3]) @ T_tool_geom[:3, :3]  # [N, 3] in the primitive's frame
    if isinstance(geometry, coal.Box):
        return np.all(np.abs(local) <= geometry.halfSide + margin, axis=1)
    return ((np.hypot(local[:, 0], local[:, 1]) <= geometry.radius + margin)
            & (np.abs(local[:, 2]) <= geometry.halfLength + margin))


class Hand:
    """The gripper's collision primitives from the URDF in the tool frame (z1_ee_link: x
    approach, z closing; metres, radians), for point tests while fitting grasps.

    The hand is every geometry rigid with joint 6 (flange, palm with the fixed jaw, camera)
    or with the gripper joint (the moving jaw, turned by the gripper angle: 0 closed, < 0
    open). Each jaw is its link's box reaching farthest along x; its pad is the face towards
    the other jaw: the fixed jaw's top (``pad_z``, at -z of the tool centre) and the moving
    jaw's bottom. ``breadth`` (y) and the held x range come from the fixed jaw's box.
    """

    def __init__(self, collision: ArmCollision):
        model, robot = collision.model, collision._robot
        wrist, gripper = model.getJointId(ARM_JOINTS[-1]), model.getJointId(GRIPPER_JOINT)
        ee = model.frames[model.getFrameId(EE_FRAME)]
        if ee.parentJoint != wrist:
            raise InputError(EE_FRAME, f"must be rigid with {ARM_JOINTS[-1]}")
        T_ee_wrist = ee.placement.inverse()
        self._T_ee_pivot = (T_ee_wrist * model.jointPlacements[gripper]).homogeneous  # [4, 4]
        self._fixed = [(g.geometry, (T_ee_wrist * g.placement).homogeneous, g.name)
                       for g in robot.geometryObjects if g.parentJoint == wrist]
        self._moving = [(g.geometry, g.placement.homogeneous, g.name)
                        for g in robot.geometryObjects if g.parentJoint == gripper]
        fixed_jaw = max(((g, T) for g, T, _ in self._fixed if isinstance(g, coal.Box)),
                        key=lambda b: b[1][0, 3] + b[0].halfSide[0], default=None)
        moving_jaw = max(((g, T) for g, T, _ in self._moving if isinstance(g, coal.Box)),
                         key=lambda b: b[1][0, 3] + b[0].halfSide[0], default=None)
        if fixed_jaw is None or moving_jaw is None:
            raise InputError(GRIPPER_JOINT, "the gripper stator and mover need a <collision> box each (the jaws)")
        (box, T), (mbox, mT) = fixed_jaw, moving_jaw
        self.pad_z = float(T[2, 3] + box.halfSide[2])  # m, the fixed jaw's pad (tool frame z)
        self.breadth = float(2 * box.halfSide[1])  # m, along y
        self.jaw_x = (float(T[0, 3] - box.halfSide[0]), float(T[0, 3] + box.halfSide[0]))  # m, the fixed jaw along x
        self._mover_pad = float(mT[2, 3] - mbox.halfSide[2])  # m, the moving jaw's pad (z in the mover frame)
        spheres = [(T[:3, 3], float(np.linalg.norm(_half_extents(g)))) for a in (0.0, -np.pi / 2)
                   for g, T, _ in self.primitives(a)]  # bounding sphere of each primitive, closed and fully open
        lo = np.min([c - r for c, r in spheres], axis=0)
        hi = np.max([c + r for c, r in spheres], axis=0)
        self.centre = (lo + hi) / 2  # [3] tool frame: a ball of ``radius`` m around it holds the hand at any angle
        self.radius = max(float(np.linalg.norm(c - self.centre)) + r for c, r in spheres)

    def _T_ee_mover(self, angle: float) -> np.ndarray:
        c, s = np.cos(angle), np.sin(angle)
        turn = np.array([[c, 0, s, 0], [0, 1, 0, 0], [-s, 0, c, 0], [0, 0, 0, 1]])  # about the pivot's y
        return self._T_ee_pivot @ turn

    def primitives(self, angle: float) -> list[tuple[object, np.ndarray, str]]:
        """(coal geometry, T_tool_geometry [4, 4], name) of every hand primitive at ``angle``."""
        T = self._T_ee_mover(angle)
        return self._fixed + [(g, T @ P, name) for g, P, name in self._moving]

    def hits(self, points: np.ndarray, angle: float, margin: float = 0.0) -> np.ndarray:
        """Mask [N] of points [N, 3] (tool frame) inside any hand primitive grown by ``margin`` m."""
        primitives = self.primitives(angle)
        reach = [np.abs(T[:3, :3]) @ _half_extents(g) + margin for g, T, _ in primitives]  # [3] each, AABB half sizes
        lo = np.min([T[:3, 3] - r for (_, T, _), r in zip(primitives, reach)], axis=0)
        hi = np.max([T[:3, 3] + r for (_, T, _), r in zip(primitives, reach)], axis=0)
        near = np.flatnonzero(np.all((points >= lo) & (points <= hi), axis=1))
        hit = np.zeros(len(points), dtype=bool)
        for g, T, _ in primitives:
            hit[near] |= _inside(points[near], g, T, margin)
        return hit

    def held(self, points: np.ndarray) -> np.ndarray:
        """Mask [N] of points [N, 3] (tool frame) in the slab the jaws close on: along the fixed
        jaw in x, within the jaw breadth in y (any z)."""
        return ((points[:, 0] >= self.jaw_x[0]) & (points[:, 0] <= self.jaw_x[1])
                & (np.abs(points[:, 1]) <= self.breadth / 2))

    def between(self, points: np.ndarray, angle: float) -> np.ndarray:
        """Mask [N] of points [N, 3] (tool frame) between the pads of the jaws open at ``angle``."""
        T = self._T_ee_mover(angle)
        z_mover = (points - T[:3, 3]) @ T[:3, 2]  # [N] height above the pivot in the mover frame
        return self.held(points) & (points[:, 2] >= self.pad_z) & (z_mover <= self._mover_pad)

    def grip_point(self, width: float) -> np.ndarray:
        """Where the middle of an object ``width`` m wide sits when the jaws hold it: on the
        fixed pad, halfway along the fixed jaw; [3] in the tool frame."""
        return np.array([(self.jaw_x[0] + self.jaw_x[1]) / 2, 0.0, self.pad_z + width / 2])
