"""Grasp planning: target + object points + scene points (world) -> a checked arm trajectory.

``plan_grasp`` ranks grasp candidates (m3_grasp.candidates), then keeps the first one the arm
executes without a collision: measured start -> pre-grasp (joint move, straight or through
the forward posture READY, gripper as measured), open, pre-grasp -> grasp (straight line
along the approach), close, grasp -> lift (straight up). Collisions are those of the URDF's
collision primitives (m3_grasp.collision.ArmCollision): the arm with itself and the B1
trunk, and within ``arm_clearance`` of the scene points (and of the object's before the
approach); contacts the measured start already has may only be left (see _Attempt). Every
configuration comes from IK verified by FK (< 1 mm, < 1 deg). Each stage
is timed by toppra within ``speed_scale`` of the safety limits (m3_grasp.timing), and the
whole command sequence passes the safety check. When no grasp is reachable from where the B1
stands, the plan proposes a base displacement that makes one reachable.
Frames: world = the memory's (z up, floor at z = 0); base = base_link (B1 trunk).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree

from m3_grasp.candidates import GraspCandidate, grasp_candidates
from m3_grasp.collision import ArmCollision, Contact, Hand
from m3_grasp.kinematics import Z1Kinematics
from m3_grasp.robot import RobotConfig
from m3_grasp.safety import SafetyError, check_command, check_start, scaled_limits, trunk_half_extents
from m3_grasp.state import ArmState
from m3_grasp.timing import Limits, Segment, TimingError, Trajectory
from m3_memory.conventions import invert_T
from m3_memory.errors import InputError


@dataclass
class GraspConfig:
    """Planner settings (metres, radians, seconds)."""

    max_tilt: float = np.deg2rad(45.0)  # approach within this of straight down
    clearance: float = 0.005  # jaw-to-object gap on each side when open
    squeeze: float = 0.01  # commanded closing beyond the object's width
    pre_grasp: float = 0.10  # back along the approach
    lift: float = 0.10  # straight up after closing
    object_radius: float = 0.10  # object points farther from the target are ignored
    arm_clearance: float = 0.005  # robot (URDF collision primitives) to the scene's octree voxels, and to the
    #                               object's before the approach
    max_candidates: int = 40  # tried with IK, best first
    speed_scale: float = 0.3  # planned speeds and accelerations: this fraction of the URDF velocity limits
    #                           and of the configured acceleration limit (robot.yaml); at most velocity_fraction
    dt: float = 0.02  # period of the plan's recorded samples (q_trajectory, gripper); backends sample their own
    max_base_move: float = 1.0  # farthest base displacement proposed (towards the target: at least its distance); 0: none
    seed: int = 0


@dataclass
class GraspPlan:
    """A grasp plan. ``trajectory`` is the timed motion of the arm and gripper from ``start``
    (the measured state it was planned from); q_trajectory [T, 6] and gripper [T] (rad) are its
    samples every ``dt`` s. waypoints hold tool poses T_world_ee [4, 4] (pre_grasp, grasp, lift).
    base_move [3] = (dx, dy, dyaw) of base_link in the world frame that would make the target
    reachable."""

    found: bool
    message: str
    T_world_base: np.ndarray
    T_world_grasp: np.ndarray | None = None
    width: float = 0.0
    open_width: float = 0.0
    kind: str = ""
    waypoints: dict[str, np.ndarray] = field(default_factory=dict)
    q_waypoints: dict[str, np.ndarray] = field(default_factory=dict)
    q_trajectory: np.ndarray = field(default_factory=lambda: np.zeros((0, 6)))
    gripper: np.ndarray = field(default_factory=lambda: np.zeros(0))
    dt: float = 0.02
    base_move: np.ndarray | None = None
    start: ArmState | None = None
    trajectory: Trajectory | None = None
    limits: Limits | None = None  # the speed and acceleration limits it was timed with [7]

    @property
    def duration(self) -> float:
        return self.trajectory.duration if self.trajectory is not None else 0.0

    def lines(self) -> list[str]:
        if not self.found:
            return [f"no grasp: {self.message}"]
        p = self.T_world_grasp[:3, 3]
        out = [f"grasp ({self.kind}) at [{p[0]:.3f}, {p[1]:.3f}, {p[2]:.3f}] m (world), object width "
               f"{self.width * 1000:.0f} mm, opening {self.open_width * 1000:.0f} mm",
               f"start: {self.start.source}",
               f"trajectory: {self.duration:.1f} s ({len(self.q_trajectory)} samples every {self.dt * 1000:.0f} ms)"]
        out += [f"  {name:9s} q = [{', '.join(f'{v:+.3f}' for v in q)}] rad" for name, q in self.q_waypoints.items()]
        return out

    def to_dict(self) -> dict:
        return {"found": self.found, "message": self.message, "kind": self.kind, "width_m": self.width,
                "open_width_m": self.open_width, "dt_s": self.dt, "duration_s": self.duration,
                "T_world_base": self.T_world_base.tolist(),
                "T_world_grasp": None if self.T_world_grasp is None else self.T_world_grasp.tolist(),
                "waypoints": {k: v.tolist() for k, v in self.waypoints.items()},
                "q_waypoints": {k: v.tolist() for k, v in self.q_waypoints.items()},
                "base_move": None if self.base_move is None else self.base_move.tolist(),
                "start": None if self.start is None else {"q": self.start.q.tolist(), "gripper": self.start.gripper,
                                                          "source": self.start.source}}


def _validated_points(points, what: str) -> np.ndarray:
    p = np.asarray(points if points is not None else np.zeros((0, 3)), dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3:
        raise InputError(what, f"must be [N, 3] points (metres, world), got shape {list(p.shape)}")
    return p[np.all(np.isfinite(p), axis=1)]


def support_height(target: np.ndarray, scene_points: np.ndarray) -> float | None:
    """Height (m) of the surface around ``target``: the top of the highest 1 cm height band
    holding at least 20 % of the scene points 8-15 cm from it horizontally (a table top,
    not the odd taller object beside the target), or None when there is no such band."""
    d = np.linalg.norm(scene_points[:, :2] - target[:2], axis=1)
    z = scene_points[(d > 0.08) & (d < 0.15), 2]
    if len(z) < 20:
        return None
    counts, edges = np.histogram(z, bins=np.arange(z.min(), z.max() + 0.02, 0.01))
    dense = np.flatnonzero(counts >= 0.2 * len(z))
    return float(z[z <= edges[dense[-1] + 1]].max()) if len(dense) else None


READY = np.array([0.0, 1.5, -1.0, -0.54, 0.0, 0.0])  # rad: Unitree's "forward" posture, arm out in front
START_DEPTH_TOLERANCE = 0.001  # m: a contact present at the start may get this much deeper on the way out
SCENE_RESOLUTION = 0.003  # m: octree voxel of the scene points (1 cm voxels reported 3x the contacts on the tabletop)
OBJECT_RESOLUTION = 0.002  # m: octree voxel of the object's points (the jaws pass it at GraspConfig.clearance)
STAGE_NAMES = {"to_pre_grasp": "on the way to the pre-grasp", "approach": "on the approach", "lift": "on the lift"}


def check_speed_scale(speed_scale: float, robot: RobotConfig) -> None:
    """InputError unless 0 < speed_scale <= the safety check's velocity fraction (robot.yaml)."""
    if not 0 < speed_scale <= robot.velocity_fraction:
        raise InputError("speed scale", f"{speed_scale} must be in (0, {robot.velocity_fraction}] "
                                        "(the safety check's velocity fraction, config/robot.yaml)")


class _Attempt:
    """IK and collision checks of grasp candidates from one base pose and the measured start
    (``collision`` holds the scene and object clouds in base_link). Contacts present at the
    start (``start_contacts``, e.g. the measured arm resting near the table, or the arm's own
    points in the memory) are tolerated on the way to the pre-grasp until each first comes
    free, as long as it gets no deeper than at the start (by START_DEPTH_TOLERANCE); every
    other contact stops the candidate."""

    def __init__(self, kin: Z1Kinematics, T_base_world: np.ndarray, collision: ArmCollision, config: GraspConfig,
                 start: ArmState):
        self.kin, self.T_base_world, self.collision, self.config, self.start = kin, T_base_world, collision, config, start
        self.transfer_clouds = {cloud: config.arm_clearance for cloud in collision.clouds}  # cloud -> margin (m)
        found = self._contact(start.q, start.gripper, self.transfer_clouds, True)
        self.start_contacts = collision.distances(start.q, start.gripper, found)  # "a and b" -> distance at the start (m)
        self.reach_miss = np.inf  # m, smallest IK position error seen on unreachable grasp poses
        self.unreachable = 0  # candidates whose grasp pose IK cannot reach
        self.no_path = 0  # reachable, but the straight approach or lift breaks (reach, branch jump)
        self.collided: Counter[str] = Counter()  # stage -> candidates stopped by a collision there
        self.contacts: Counter[str] = Counter()  # "link and link|cloud" -> candidates it stopped
        self.via = 0  # transfers that needed the READY via point

    def _ik(self, T_world_ee: np.ndarray, seed: np.ndarray, record: bool = False) -> np.ndarray | None:
        T = self.T_base_world @ T_world_ee
        excess = self.kin.reach_excess(T)
        if excess > 0:
            if record:
                self.reach_miss = min(self.reach_miss, excess)
            return None
        result = self.kin.ik(T, seeds=[seed], n_random=2, rng=np.random.default_rng(self.config.seed), max_iter=60)
        if not result.success and record:
            self.reach_miss = min(self.reach_miss, result.position_error)
        return result.q if result.success else None

    def why(self) -> str:
        """What stopped the candidates tried, by stage, naming what collided."""
        parts = []
        if self.unreachable:
            parts.append(f"{self.unreachable} out of reach by {self.reach_miss:.3f} m or more")
        if self.no_path:
            parts.append(f"{self.no_path} reachable but without a straight approach and lift")
        if self.collided:
            stages = ", ".join(f"{n} {STAGE_NAMES[stage]}" for stage, n in self.collided.most_common())
            pairs = ", ".join(pair for pair, _ in self.contacts.most_common(3))
            parts.append(f"{sum(self.collided.values())} colliding ({stages}: {pairs})")
        return ", ".join(parts) or "none tried"

    def _line(self, T_from: np.ndarray, T_to: np.ndarray, q_from: np.ndarray) -> np.ndarray | None:
        """IK along the straight tool path T_from -> T_to (same orientation), 1 cm steps."""
        n = max(int(np.ceil(np.linalg.norm(T_to[:3, 3] - T_from[:3, 3]) / 0.01)), 1)
        qs, q = [q_from], q_from
        for s in np.arange(1, n + 1) / n:
            T = T_from.copy()
            T[:3, 3] = (1 - s) * T_from[:3, 3] + s * T_to[:3, 3]
            q = self._ik(T, q)
            if q is None or np.abs(q - qs[-1]).max() > 0.3:  # no branch jumps along a line
                return None
            qs.append(q)
        return np.array(qs)

    def _contact(self, q: np.ndarray, angle: float, clouds: dict[str, float], every: bool) -> list[Contact]:
        """Contacts at q [6] and gripper ``angle``: self and trunk (touching), and each cloud
        closer than its margin (m); ``every``: all of them, else the first found."""
        found = self.collision.contacts(q, angle, [], margin=0.0, first=not every)
        for cloud, margin in clouds.items():
            if found and not every:
                break
            found += self.collision.contacts(q, angle, cloud, False, False, margin, first=not every)
        return found

    def _hit(self, path: np.ndarray, angle: float, clouds: dict[str, float], from_start: bool = False) -> Contact | None:
        """The first contact along the joint path [n, 6] (sampled every 0.05 rad) with the
        gripper at ``angle``, or None; ``from_start``: the path leaves the measured start, whose
        contacts are tolerated (see the class)."""
        fine = [path[0]]
        for a, b in zip(path[:-1], path[1:]):
            k = max(int(np.ceil(np.abs(b - a).max() / 0.05)), 1)
            fine += [a + (b - a) * s for s in np.arange(1, k + 1) / k]
        tolerated = dict(self.start_contacts) if from_start else {}
        for q in fine:
            found = self._contact(q, angle, clouds, every=bool(tolerated))
            new = [c for c in found if str(c) not in tolerated]
            if new:
                return new[0]
            still = [c for c in found if str(c) in tolerated]
            for c in still:
                if self.collision.distances(q, angle, [c])[str(c)] < tolerated[str(c)] - START_DEPTH_TOLERANCE:
                    return c  # a start contact getting deeper
            tolerated = {name: d for name, d in tolerated.items() if name in {str(c) for c in still}}  # came free: counts
        return None

    def _transfer(self, q_start: np.ndarray, q_pre: np.ndarray, angle: float, clouds: dict[str, float]):
        """Joint path [n, 6] from the start to the pre-grasp: straight, else through READY (turned
        towards the pre-grasp); (path, None) or (None, the straight line's first contact)."""
        straight = np.array([q_start, q_pre])
        hit = self._hit(straight, angle, clouds, from_start=True)
        if hit is None:
            return straight, None
        ready = READY.copy()
        ready[0] = q_pre[0]
        via = np.array([q_start, ready, q_pre])
        if self._hit(via, angle, clouds, from_start=True) is None:
            self.via += 1
            return via, None
        return None, hit

    def run(self, c: GraspCandidate) -> dict[str, np.ndarray] | None:
        """Joint paths of the stages (start -> pre-grasp, pre-grasp -> grasp, grasp -> lift) or None."""
        q_start = self.start.q
        T_grasp = c.T_world_ee
        T_pre = T_grasp.copy()
        T_pre[:3, 3] -= self.config.pre_grasp * T_grasp[:3, 0]
        T_lift = T_grasp.copy()
        T_lift[2, 3] += self.config.lift
        q_grasp = self._ik(T_grasp, q_start, record=True)
        if q_grasp is None:
            self.unreachable += 1
            return None
        approach = self._line(T_grasp, T_pre, q_grasp)  # computed backwards from the grasp
        lift = self._line(T_grasp, T_lift, q_grasp) if approach is not None else None
        if lift is None:
            self.no_path += 1
            return None
        gripper = self.kin.gripper
        margin = self.config.arm_clearance
        # the jaws straddle the object on the approach and hold it on the lift
        hit = self._hit(approach[::-1], gripper.angle(c.open_width), {"scene": margin, "object": 0.0})
        stage = "approach"
        if hit is None:
            stage = "lift"
            hit = self._hit(lift, gripper.angle(max(c.width - self.config.squeeze, 0.0)), {"scene": margin})
        if hit is None:
            stage = "to_pre_grasp"
            transfer, hit = self._transfer(q_start, approach[-1], self.start.gripper, self.transfer_clouds)
        if hit is not None:
            self.collided[stage] += 1
            self.contacts[str(hit)] += 1
            return None
        return {"to_pre_grasp": transfer, "approach": approach[::-1], "lift": lift}


def _diverse(candidates: list[GraspCandidate]) -> list[GraspCandidate]:
    """The best candidate of each approach sector (tilt in 0.2 rad rings, azimuth in 45 degree
    sectors) first, in score order, then the rest: IK meets every kind of approach early."""
    seen, first, rest = set(), [], []
    for c in candidates:
        a = c.T_world_ee[:3, 0]
        key = (round(c.tilt / 0.2), round(np.arctan2(a[1], a[0]) / (np.pi / 4)) % 8 if c.tilt > 0.1 else 0)
        (rest if key in seen else first).append(c)
        seen.add(key)
    return first + rest


def _body_hits_scene(T_world_base: np.ndarray, scene_world: np.ndarray, kin: Z1Kinematics) -> bool:
    local = (scene_world - T_world_base[:3, 3]) @ T_world_base[:3, :3]
    return bool(np.all(np.abs(local) <= trunk_half_extents(kin.urdf) + 0.02, axis=1).any())


def _search(candidates: list[GraspCandidate], T_world_base: np.ndarray, scene_world: np.ndarray,
            object_world: np.ndarray, start: ArmState, kin: Z1Kinematics, collision: ArmCollision, config: GraspConfig):
    """First candidate the arm executes from this base pose: (candidate, stages, attempt) or
    (None, None, attempt)."""
    T_base_world = invert_T(T_world_base)

    def to_base(p):  # [N, 3] world -> base
        return p @ T_base_world[:3, :3].T + T_base_world[:3, 3]

    collision.set_clouds({"object": OBJECT_RESOLUTION}, scene=to_base(scene_world), object=to_base(object_world))
    attempt = _Attempt(kin, T_base_world, collision, config, start)
    for c in candidates[: config.max_candidates]:
        stages = attempt.run(c)
        if stages is not None:
            return c, stages, attempt
    return None, None, attempt


def _base_move(candidates, T_world_base, target, scene_world, object_world, start, kin, collision,
               config) -> np.ndarray | None:
    """Smallest horizontal displacement (dx, dy, 0), in 5 cm steps along the line from the arm
    base to the target (either way), after which a candidate is executable: a quick test that
    some candidate's wrist is within the arm's reach, then the full search."""
    arm_base = (T_world_base @ kin.T_base_armbase)[:3, 3]
    u = np.append(target[:2] - arm_base[:2], 0.0)
    distance = float(np.linalg.norm(u))
    u = u / distance if distance > 1e-6 else T_world_base[:3, 0] * [1, 1, 0]
    farthest = max(config.max_base_move, distance)
    for step in sorted(np.arange(-config.max_base_move, farthest + 1e-9, 0.05), key=abs):
        moved = T_world_base.copy()
        moved[:3, 3] += step * u
        if abs(step) < 1e-9 or _body_hits_scene(moved, scene_world, kin):
            continue
        T_base_world = invert_T(moved)
        if all(kin.reach_excess(T_base_world @ c.T_world_ee) > 0 for c in candidates[: config.max_candidates]):
            continue
        if _search(candidates, moved, scene_world, object_world, start, kin, collision, config)[0] is not None:
            return np.array([*(step * u[:2]), 0.0])
    return None


def plan_grasp(target_world, object_points, scene_points, T_world_base: np.ndarray, start: ArmState,
               config: GraspConfig = GraspConfig(), kin: Z1Kinematics | None = None,
               robot: RobotConfig | None = None) -> GraspPlan:
    """Plan a grasp of the object at ``target_world`` [3] from its points [M, 3], avoiding the
    scene points [K, 3] (world frame, metres; scene points near the object are its own and are
    not obstacles), with the B1 trunk at T_world_base [4, 4], the arm starting from its measured
    state ``start``.

    Raises InputError for a target that is not 3 finite numbers, lies below the surface it
    should stand on (inside or under the table), or has no object points near it, and
    SafetyError for a start state outside the joint limits or moving. Returns a plan with
    ``found=False`` (and a base move when walking would help) when nothing is reachable or
    collision-free.
    """
    target = np.asarray(target_world, dtype=np.float64).reshape(-1)
    if target.shape != (3,) or not np.all(np.isfinite(target)):
        raise InputError("target", f"must be 3 finite numbers x, y, z (metres, world), got {np.asarray(target_world).tolist()}")
    robot = robot or RobotConfig.load()
    kin = kin or Z1Kinematics.from_urdf(position_margin=robot.position_margin)
    check_start(start, kin, robot)
    check_speed_scale(config.speed_scale, robot)
    scene = _validated_points(scene_points, "scene points")
    obj = _validated_points(object_points, "object points")
    obj = obj[np.linalg.norm(obj - target, axis=1) <= config.object_radius]
    if len(obj) < 5:
        raise InputError("object points", f"fewer than 5 within {config.object_radius:.2f} m of the target {target.round(3).tolist()}")
    if len(scene):  # the object's own points are not obstacles
        scene = scene[cKDTree(obj).query(scene, distance_upper_bound=0.01)[0] > 0.01]
        support = support_height(target, scene)
        if support is not None and target[2] < support - 0.005:
            raise InputError("target", f"{target.round(3).tolist()} lies {support - target[2]:.3f} m below the surface "
                             f"around it (z = {support:.3f} m): inside or under the table")
        scene = scene[np.linalg.norm(scene - (T_world_base @ kin.T_base_armbase)[:3, 3], axis=1) < 1.5]
    if _body_hits_scene(T_world_base, scene, kin):
        raise InputError("base pose", "the B1 trunk at this base pose intersects the scene points")
    collision = ArmCollision(kin.urdf, SCENE_RESOLUTION)
    candidates = _diverse(grasp_candidates(target, obj, scene, Hand(collision), kin.gripper, config.max_tilt,
                                           config.clearance, config.arm_clearance + collision.resolution,
                                           seed=config.seed))
    if not candidates:
        return GraspPlan(False, f"no grasp fits the object: opening over {kin.gripper.max_width * 1000:.0f} mm, "
                                "no jaw contact, or the gripper hits the object or the scene", T_world_base)
    best, stages, attempt = _search(candidates, T_world_base, scene, obj, start, kin, collision, config)
    if best is None:
        miss = f"no grasp executes from this base pose ({attempt.why()})"
        if not attempt.unreachable:
            return GraspPlan(False, miss, T_world_base)
        move = (_base_move(candidates, T_world_base, target, scene, obj, start, kin, collision, config)
                if config.max_base_move > 0 else None)
        if move is None:
            return GraspPlan(False, f"{miss}; no base move along the line to the target helps", T_world_base)
        return GraspPlan(False, f"{miss}; walk the B1 by dx={move[0]:+.2f} m, dy={move[1]:+.2f} m (world) "
                                f"({np.linalg.norm(move[:2]):.2f} m) to reach it", T_world_base, base_move=move)
    notes = []
    if attempt.start_contacts:
        notes.append(f"the start touches {', '.join(sorted(attempt.start_contacts))}: the first motion leaves it "
                     "without going deeper")
    if len(stages["to_pre_grasp"]) > 2:
        notes.append("via the forward posture")
    return _assemble(best, stages, T_world_base, start, kin, config, robot, "; ".join(["ok", *notes]))


def _assemble(c: GraspCandidate, stages: dict[str, np.ndarray], T_world_base: np.ndarray, start: ArmState,
              kin: Z1Kinematics, config: GraspConfig, robot: RobotConfig, message: str = "ok") -> GraspPlan:
    """Time the stages into one trajectory and pass its samples through the safety check."""
    g_start = start.gripper
    g_open, g_closed = kin.gripper.angle(c.open_width), kin.gripper.angle(max(c.width - config.squeeze, 0.0))
    pre, grasp = stages["approach"][0], stages["approach"][-1]
    limits = scaled_limits(kin, robot, config.speed_scale, config.speed_scale)

    def with_gripper(path: np.ndarray, g_from: float, g_to: float) -> np.ndarray:  # [n, 6] -> [n, 7]
        return np.column_stack([path, np.linspace(g_from, g_to, len(path))])

    try:
        trajectory = Trajectory([Segment(with_gripper(stages["to_pre_grasp"], g_start, g_start), limits),
                                 Segment(with_gripper(np.array([pre, pre]), g_start, g_open), limits),
                                 Segment(with_gripper(stages["approach"], g_open, g_open), limits),
                                 Segment(with_gripper(np.array([grasp, grasp]), g_open, g_closed), limits),
                                 Segment(with_gripper(stages["lift"], g_closed, g_closed), limits)])
    except TimingError as err:
        return GraspPlan(False, f"the path found could not be timed within the limits ({err})", T_world_base, start=start)
    x = trajectory.sample(config.dt)  # [T, 7]
    T_pre = c.T_world_ee.copy()
    T_pre[:3, 3] -= config.pre_grasp * c.T_world_ee[:3, 0]
    T_lift = c.T_world_ee.copy()
    T_lift[2, 3] += config.lift
    plan = GraspPlan(True, message, T_world_base, c.T_world_ee, c.width, c.open_width, c.kind,
                     {"pre_grasp": T_pre, "grasp": c.T_world_ee, "lift": T_lift},
                     {"start": start.q, "pre_grasp": pre, "grasp": grasp, "lift": stages["lift"][-1]},
                     x[:, :6], x[:, 6], config.dt, start=start, trajectory=trajectory, limits=limits)
    try:
        check_command(kin, x[:, :6], x[:, 6], config.dt, T_world_base, robot)
    except SafetyError as err:
        return GraspPlan(False, f"planned trajectory refused by the safety check ({err.problem})", T_world_base, start=start)
    return plan
