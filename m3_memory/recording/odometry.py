"""Camera poses from RGB-D alone: keyframe odometry with loop closure, and trajectory metrics.

:class:`Odometry` streams frames through open3d's tensor RGB-D odometry
(``o3d.t.pipelines.odometry.rgbd_odometry_multi_scale``), registering each frame to the
one before it. The world frame is the first camera's OpenCV optical frame, so the first
frame gets ``T_world_cam = I`` and frame k gets ``T_world_cam(k-1) @ T_prev_cur``.
Errors accumulate (drift).

:func:`estimate_trajectory` (what :func:`estimate_poses` runs by default) holds the whole
sequence: each frame registered to the latest frame that registered (so one bad frame does not
break the chain), then loop closures between keyframes (each pair registered from the pose the
chain predicts), all in a pose graph optimised with open3d's ``global_optimization``
(Levenberg-Marquardt, line processes prune loop edges that disagree). A registration whose
fitness is at or below ``min_fitness`` is not used; frames no registration connects to the
first one are *flagged* (``T_world_cam = None``, counted in :attr:`Trajectory.flagged`)
rather than given a guessed pose.

:func:`trajectory_errors` compares an estimated trajectory with a reference one (ATE after
alignment, RPE between consecutive frames).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import open3d as o3d
from scipy import ndimage

from m3_memory.conventions import fit_transform, invert_T, motion_size, rotation_deg
from m3_memory.errors import InputError
from m3_memory.recording.frame import Frame

_METHODS = {
    "hybrid": o3d.t.pipelines.odometry.Method.Hybrid,
    "point_to_plane": o3d.t.pipelines.odometry.Method.PointToPlane,
    "intensity": o3d.t.pipelines.odometry.Method.Intensity,
}


@dataclass
class OdometryConfig:
    """Settings of the frame-to-frame RGB-D odometry.

    method: ``"hybrid"`` (photometric + depth), ``"point_to_plane"`` (depth only) or
    ``"intensity"`` (photometric only). depth_max: metres; farther depth is ignored.
    iterations: Gauss-Newton iterations per pyramid level, coarsest level first (its
    length is the number of levels; each level halves the image size). depth_diff: metres;
    correspondences whose depths differ by more are outliers (open3d's
    ``depth_outlier_trunc``). min_fitness: the fitness floor; a registration whose fitness
    (inlier fraction of the current frame's pixels) is at or below this counts as failed
    (measured: registered pairs of the real sequences score 0.23-0.41, the 3DMatch lounge's
    pairs across 31 degree and 1.1 m gaps 0.10 and 0.005 with 0.5-1.2 m error). fill_gaps: fill
    one-pixel cracks in the depth before registering (see :func:`fill_depth_gaps`); sparse
    registered depth, as from the F200/SR300, otherwise loses most pixels in the pyramid.
    device: open3d device string, e.g. ``"CPU:0"`` or ``"CUDA:0"``.
    loop_closure: :func:`estimate_poses` runs :func:`estimate_trajectory` (whole sequence,
    loop closure, pose graph) instead of streaming frame to frame. keyframe_every: every
    k-th frame (and the last) is a keyframe; every two keyframes are tried as a loop pair.
    max_loop_motion: (metres, degrees); a loop pair whose predicted motion is larger is not
    tried (dense odometry converges only from nearby).
    """

    method: str = "hybrid"
    depth_max: float = 3.0
    iterations: tuple[int, ...] = (30, 30, 20, 10)
    depth_diff: float = 0.07
    min_fitness: float = 0.15
    fill_gaps: bool = True
    device: str = "CPU:0"
    loop_closure: bool = True
    keyframe_every: int = 3
    max_loop_motion: tuple[float, float] = (0.5, 30.0)

    def __post_init__(self) -> None:
        if self.method not in _METHODS:
            raise InputError("odometry method", f"{self.method!r} is not one of {', '.join(_METHODS)}")
        if not self.iterations or any(int(n) < 1 for n in self.iterations):
            raise InputError("odometry iterations", f"need one or more positive counts, got {list(self.iterations)}")
        if self.keyframe_every < 1:
            raise InputError("odometry keyframe_every", f"must be >= 1, got {self.keyframe_every}")
        if self.depth_max <= 0 or self.depth_diff <= 0:
            raise InputError("odometry config", f"depth_max ({self.depth_max}) and depth_diff ({self.depth_diff}) "
                             "must be positive metres")


@dataclass
class PairResult:
    """One frame-to-frame registration.

    index: position of the current frame in the stream (the previous one is index - 1).
    T_prev_cur: float64 [4, 4], current camera to previous camera (identity when failed).
    fitness: inlier fraction in [0, 1]. inlier_rmse: open3d's residual RMSE of the inliers
    (metres for point_to_plane; a mix of metres and intensity for hybrid).
    failed: the registration raised, was not finite, or had fitness <= min_fitness; the
    pose then keeps the previous one. reason: why it failed ("" when it did not).
    seconds: wall time of the registration.
    """

    index: int
    T_prev_cur: np.ndarray
    fitness: float
    inlier_rmse: float
    failed: bool
    reason: str
    seconds: float


def fill_depth_gaps(depth: np.ndarray, max_spread: float, min_neighbours: int = 4) -> np.ndarray:
    """Depth [H, W] float32 metres with one-pixel holes filled; a new array.

    An invalid (0) pixel gets the mean of its valid 3x3 neighbours when at least
    ``min_neighbours`` of the 8 are valid and their depths span less than ``max_spread``
    metres (so holes at depth edges stay empty). Closes the cracks left when depth is
    re-projected into a colour camera; larger holes are kept.
    """
    valid = depth > 0
    d = depth.astype(np.float64)
    total = ndimage.uniform_filter(np.where(valid, d, 0.0), size=3, mode="constant") * 9.0
    count = np.rint(ndimage.uniform_filter(valid.astype(np.float64), size=3, mode="constant") * 9.0)
    high = ndimage.maximum_filter(np.where(valid, d, -np.inf), size=3, mode="constant", cval=-np.inf)
    low = ndimage.minimum_filter(np.where(valid, d, np.inf), size=3, mode="constant", cval=np.inf)
    fill = ~valid & (count >= min_neighbours) & (high - low < max_spread)
    out = depth.astype(np.float32, copy=True)
    out[fill] = (total[fill] / count[fill]).astype(np.float32)
    return out


def _rgbd_image(frame: Frame, config: OdometryConfig, device: o3d.core.Device) -> o3d.t.geometry.RGBDImage:
    """open3d RGB-D image of ``frame``: float32 RGB in [0, 1] [H, W, 3] and float32 metres
    [H, W, 1] (gaps filled when ``config.fill_gaps``); open3d turns the colour into float32
    gray itself."""
    rgb = np.ascontiguousarray(frame.rgb, dtype=np.float32) / np.float32(255.0)
    depth = fill_depth_gaps(frame.depth, config.depth_diff) if config.fill_gaps else frame.depth
    depth = np.ascontiguousarray(depth, dtype=np.float32)[:, :, None]
    return o3d.t.geometry.RGBDImage(o3d.t.geometry.Image(o3d.core.Tensor(rgb, device=device)),
                                    o3d.t.geometry.Image(o3d.core.Tensor(depth, device=device)))


def _register(cur: o3d.t.geometry.RGBDImage, prev: o3d.t.geometry.RGBDImage, K: np.ndarray,
              config: OdometryConfig, init: np.ndarray | None = None) -> tuple[np.ndarray, float, float]:
    """open3d multi-scale odometry of ``cur`` (source) onto ``prev`` (target), starting from
    ``init`` (T_prev_cur guess, identity if None): (T_prev_cur [4, 4], fitness, inlier_rmse).
    Raises whatever open3d raises."""
    od = o3d.t.pipelines.odometry
    result = od.rgbd_odometry_multi_scale(
        cur, prev, o3d.core.Tensor(np.asarray(K, dtype=np.float64)),
        o3d.core.Tensor(np.eye(4) if init is None else np.asarray(init, dtype=np.float64)),
        depth_scale=1.0,  # depth already in metres
        depth_max=float(config.depth_max),
        criteria_list=[od.OdometryConvergenceCriteria(int(n)) for n in config.iterations],
        method=_METHODS[config.method],
        params=od.OdometryLossParams(depth_outlier_trunc=float(config.depth_diff)),
    )
    return result.transformation.numpy().astype(np.float64), float(result.fitness), float(result.inlier_rmse)


def _checked(prev: o3d.t.geometry.RGBDImage, cur: o3d.t.geometry.RGBDImage, K: np.ndarray, config: OdometryConfig,
             index: int, start: float, init: np.ndarray | None = None) -> PairResult:
    """Run :func:`_register` and turn exceptions, non-finite or low-fitness results into a
    failed :class:`PairResult`. start: ``time.perf_counter()`` when the pair began."""
    try:
        T, fitness, rmse = _register(cur, prev, K, config, init)
    except Exception as err:  # noqa: BLE001 - any open3d failure is a failed registration, never a crash
        return PairResult(index, np.eye(4), 0.0, 0.0, True, f"open3d: {type(err).__name__}: {err}",
                          time.perf_counter() - start)
    seconds = time.perf_counter() - start
    if not np.all(np.isfinite(T)) or not np.isfinite(fitness):
        return PairResult(index, np.eye(4), 0.0, 0.0, True, "non-finite transformation", seconds)
    if fitness <= config.min_fitness:
        return PairResult(index, np.eye(4), fitness, rmse, True, f"fitness {fitness:.3f} <= {config.min_fitness}",
                          seconds)
    return PairResult(index, T, fitness, rmse, False, "", seconds)


class Odometry:
    """Streaming frame-to-frame odometry. Call it on each frame in order; it returns a copy
    of the frame with ``T_world_cam`` estimated (world = the first frame's camera).

    Keeps only the previous frame's open3d image and pose. ``results`` holds one
    :class:`PairResult` per registered pair (frames 1, 2, ...); ``failures`` counts the
    failed ones, whose motion is taken as identity.
    """

    def __init__(self, config: OdometryConfig | None = None):
        self.config = config or OdometryConfig()
        self._device = o3d.core.Device(self.config.device)
        self._prev: o3d.t.geometry.RGBDImage | None = None
        self._prev_K: np.ndarray | None = None
        self._prev_size: tuple[int, int] | None = None
        self._T_world_prev = np.eye(4)
        self._count = 0
        self.results: list[PairResult] = []

    @property
    def failures(self) -> int:
        """Number of failed registrations so far."""
        return sum(r.failed for r in self.results)

    @property
    def last_result(self) -> PairResult | None:
        """The most recent registration, or None before the second frame."""
        return self.results[-1] if self.results else None

    def __call__(self, frame: Frame) -> Frame:
        """``frame`` with T_world_cam [4, 4] estimated; the input frame is not modified
        (its image arrays are shared; the pose and the masks dict are new)."""
        start = time.perf_counter()
        cur = _rgbd_image(frame, self.config, self._device)
        if self._prev is None:
            T_world_cur = np.eye(4)
        else:
            if self._prev_size != frame.size or not np.allclose(self._prev_K, frame.K):
                result = PairResult(self._count, np.eye(4), 0.0, 0.0, True,
                                    "image size or intrinsics differ from the previous frame",
                                    time.perf_counter() - start)
            else:
                result = _checked(self._prev, cur, frame.K, self.config, self._count, start)
            self.results.append(result)
            T_world_cur = self._T_world_prev @ result.T_prev_cur
        self._prev, self._prev_K, self._prev_size = cur, np.array(frame.K, dtype=np.float64), frame.size
        self._T_world_prev = T_world_cur
        self._count += 1
        return dataclasses.replace(frame, T_world_cam=T_world_cur.copy(), masks=dict(frame.masks))


def register_pair(prev: Frame, cur: Frame, config: OdometryConfig | None = None) -> PairResult:
    """Relative pose T_prev_cur [4, 4] of ``cur`` with respect to ``prev`` by RGB-D odometry.

    Never raises on bad data: a failed registration comes back with ``failed=True``, its
    reason and an identity ``T_prev_cur``.
    """
    odometry = Odometry(config)
    odometry(prev)
    odometry(cur)
    return odometry.results[0]


def estimate_poses(frames: Iterable[Frame], config: OdometryConfig | None = None,
                   odometry: Odometry | None = None) -> Iterator[Frame]:
    """``frames`` with T_world_cam [4, 4] replaced by odometry estimates.

    The first frame is the world (identity pose); given poses are ignored and inputs are
    not modified. With ``config.loop_closure`` (the default) and no ``odometry`` given, the
    whole sequence is read first and :func:`estimate_trajectory` runs (flagged frames come
    out with ``T_world_cam = None``); otherwise frames stream through ``odometry`` (an
    :class:`Odometry`, whose ``results`` and ``failures`` can be read afterwards; one is made
    from ``config`` if None).
    """
    config = config or (odometry.config if odometry is not None else OdometryConfig())
    if odometry is None and config.loop_closure:
        frames = list(frames)
        trajectory = estimate_trajectory(frames, config)
        for frame, T in zip(frames, trajectory.poses):
            yield dataclasses.replace(frame, T_world_cam=None if T is None else T.copy(), masks=dict(frame.masks))
        return
    odometry = odometry or Odometry(config)
    for frame in frames:
        yield odometry(frame)


@dataclass
class GraphEdge:
    """One registration in the pose graph: ``T_target_source`` [4, 4] maps the source camera
    (the later frame) into the target camera. loop: a loop closure between keyframes (else
    tracking: the source against the latest frame that registered).
    failed / reason: as in :class:`PairResult`; failed edges are not in the graph. pruned: a
    loop edge the optimisation judged an outlier (line-process weight below 0.5)."""

    source: int
    target: int
    T_target_source: np.ndarray
    fitness: float
    loop: bool
    failed: bool
    reason: str
    pruned: bool = False


@dataclass
class Trajectory:
    """What :func:`estimate_trajectory` found: ``poses`` T_world_cam [4, 4] per frame (world =
    the first frame's camera; None for a flagged frame), every registration tried (``edges``)
    and wall ``seconds``."""

    poses: list[np.ndarray | None]
    edges: list[GraphEdge]
    seconds: float

    @property
    def flagged(self) -> list[int]:
        """Frames no accepted registration connects to the first one (left without a pose)."""
        return [i for i, T in enumerate(self.poses) if T is None]

    @property
    def failures(self) -> int:
        """Registrations tried and rejected (exception, non-finite, fitness at or below the floor)."""
        return sum(e.failed for e in self.edges)


def _connected(n: int, edges: list[GraphEdge]) -> set[int]:
    """Frames joined to frame 0 by accepted edges."""
    reached, changed = {0} if n else set(), True
    while changed:
        changed = False
        for e in edges:
            if not e.failed and (e.source in reached) != (e.target in reached):
                reached |= {e.source, e.target}
                changed = True
    return reached


def _chain(n: int, edges: list[GraphEdge]) -> list[np.ndarray | None]:
    """Initial T_world_cam per frame from accepted edges, walked outward from frame 0
    (consecutive edges first); None where nothing connects."""
    poses: list[np.ndarray | None] = [None] * n
    if n:
        poses[0] = np.eye(4)
    ordered = sorted((e for e in edges if not e.failed), key=lambda e: e.loop)
    changed = True
    while changed:
        changed = False
        for e in ordered:
            if poses[e.target] is not None and poses[e.source] is None:
                poses[e.source] = poses[e.target] @ e.T_target_source
                changed = True
            elif poses[e.source] is not None and poses[e.target] is None:
                poses[e.target] = poses[e.source] @ invert_T(e.T_target_source)
                changed = True
    return poses


def _information(prev: o3d.t.geometry.RGBDImage, cur: o3d.t.geometry.RGBDImage, K: np.ndarray, T: np.ndarray,
                 config: OdometryConfig) -> np.ndarray:
    """6x6 information matrix of a registration (open3d's, from the depth correspondences)."""
    info = o3d.t.pipelines.odometry.compute_odometry_information_matrix(
        cur.depth, prev.depth, o3d.core.Tensor(np.asarray(K, dtype=np.float64)),
        o3d.core.Tensor(np.asarray(T, dtype=np.float64)), float(config.depth_diff), 1.0, float(config.depth_max))
    return info.numpy().astype(np.float64)


def estimate_trajectory(frames: list[Frame], config: OdometryConfig | None = None) -> Trajectory:
    """Keyframe odometry with loop closure and pose-graph optimisation over ``frames`` (all in
    memory; their given poses are ignored). See the module docstring; frames of another image
    size or intrinsics than the first are flagged."""
    config = config or OdometryConfig()
    start = time.perf_counter()
    device = o3d.core.Device(config.device)
    n = len(frames)
    images = [_rgbd_image(f, config, device) for f in frames]
    K = np.asarray(frames[0].K, dtype=np.float64) if n else np.eye(3)
    same = [f.size == frames[0].size and np.allclose(f.K, K) for f in frames]
    edges: list[GraphEdge] = []

    def register(target: int, source: int, loop: bool, init: np.ndarray | None) -> None:
        if not (same[target] and same[source]):
            edges.append(GraphEdge(source, target, np.eye(4), 0.0, loop, True,
                                   "image size or intrinsics differ from the first frame"))
            return
        r = _checked(images[target], images[source], K, config, source, time.perf_counter(), init)
        edges.append(GraphEdge(source, target, r.T_prev_cur, r.fitness, loop, r.failed, r.reason))

    last = 0  # the latest frame that registered: tracking skips a frame that did not
    for j in range(1, n):
        register(last, j, False, None)
        if not edges[-1].failed:
            last = j
    keyframes = sorted({*range(0, n, config.keyframe_every), n - 1} if n else set())
    for a, i in enumerate(keyframes):
        for j in keyframes[a + 1:]:
            if j - i < 2:
                continue
            guess = _chain(n, edges)
            if guess[i] is None or guess[j] is None:
                continue  # dense odometry from identity converges to wrong poses across large motion
            init = invert_T(guess[i]) @ guess[j]
            metres, degrees = motion_size(init)
            if metres <= config.max_loop_motion[0] and degrees <= config.max_loop_motion[1]:
                register(i, j, True, init)

    poses: list[np.ndarray | None] = [None] * n
    reached = _connected(n, edges)
    initial = _chain(n, edges)
    if reached:
        nodes = sorted(reached)
        node = {f: k for k, f in enumerate(nodes)}
        reg = o3d.pipelines.registration
        graph = reg.PoseGraph()
        for f in nodes:
            graph.nodes.append(reg.PoseGraphNode(initial[f]))
        used = [e for e in edges if not e.failed and e.source in reached]
        for e in used:
            info = _information(images[e.target], images[e.source], K, e.T_target_source, config)
            graph.edges.append(reg.PoseGraphEdge(node[e.source], node[e.target], e.T_target_source, info,
                                                 uncertain=e.loop))
        if len(nodes) > 1:
            option = reg.GlobalOptimizationOption(max_correspondence_distance=config.depth_diff,
                                                  edge_prune_threshold=0.25, preference_loop_closure=1.0,
                                                  reference_node=0)
            with o3d.utility.VerbosityContextManager(o3d.utility.VerbosityLevel.Error):
                reg.global_optimization(graph, reg.GlobalOptimizationLevenbergMarquardt(),
                                        reg.GlobalOptimizationConvergenceCriteria(), option)
            kept = {(graph.edges[k].source_node_id, graph.edges[k].target_node_id) for k in range(len(graph.edges))}
            for e in used:
                e.pruned = (node[e.source], node[e.target]) not in kept
        T0_inv = invert_T(np.asarray(graph.nodes[0].pose))
        for f in nodes:
            poses[f] = T0_inv @ np.asarray(graph.nodes[node[f]].pose)
        poses[0] = np.eye(4)  # exactly: the world is the first camera
    return Trajectory(poses, edges, time.perf_counter() - start)


def _positions(Ts: list[np.ndarray]) -> np.ndarray:
    """Camera centres [N, 3] (metres) of poses T_world_cam [N][4, 4]."""
    return np.stack([np.asarray(T, dtype=np.float64)[:3, 3] for T in Ts])


def _rmse_max(err: np.ndarray) -> tuple[float, float]:
    """(RMSE, max) of error norms err [N]."""
    return float(np.sqrt(np.mean(err**2))), float(err.max())


def trajectory_errors(T_est: list[np.ndarray], T_gt: list[np.ndarray]) -> dict:
    """Errors of estimated camera poses against reference ones, frame by frame.

    T_est, T_gt: equally long lists of T_world_cam [4, 4] (their world frames may differ).
    Returns (metres and degrees; None where there are too few frames):

    - ``frames``: N.
    - ``ate_first_rmse_m``, ``ate_first_max_m``: camera-centre error after aligning the
      estimate by its first pose, ``T_align = T_gt[0] @ inv(T_est[0])``.
    - ``ate_rigid_rmse_m``, ``ate_rigid_max_m``: camera-centre error after the least-squares
      rigid fit (rotation + translation, no scale; Kabsch) of the estimated centres to the
      reference ones; needs N >= 3.
    - ``rpe_trans_mean_m``, ``rpe_trans_max_m``, ``rpe_rot_mean_deg``, ``rpe_rot_max_deg``:
      relative pose error between consecutive frames,
      ``E_i = inv(inv(T_gt[i]) @ T_gt[i+1]) @ (inv(T_est[i]) @ T_est[i+1])``, its translation
      norm and rotation angle; needs N >= 2. Independent of either world frame.
    """
    if len(T_est) != len(T_gt) or not T_est:
        raise InputError("trajectories", f"need equally long non-empty pose lists, got {len(T_est)} and {len(T_gt)}")
    n = len(T_est)
    p_gt = _positions(T_gt)
    T_align = np.asarray(T_gt[0], dtype=np.float64) @ invert_T(np.asarray(T_est[0], dtype=np.float64))
    p_first = _positions(T_est) @ T_align[:3, :3].T + T_align[:3, 3]
    first_rmse, first_max = _rmse_max(np.linalg.norm(p_first - p_gt, axis=1))
    out: dict = {"frames": n, "ate_first_rmse_m": first_rmse, "ate_first_max_m": first_max,
                 "ate_rigid_rmse_m": None, "ate_rigid_max_m": None,
                 "rpe_trans_mean_m": None, "rpe_trans_max_m": None, "rpe_rot_mean_deg": None, "rpe_rot_max_deg": None}
    if n >= 3:
        p_est = _positions(T_est)
        T_fit = fit_transform(p_est, p_gt)  # p_gt ~ T_fit p_est
        p_rigid = p_est @ T_fit[:3, :3].T + T_fit[:3, 3]
        out["ate_rigid_rmse_m"], out["ate_rigid_max_m"] = _rmse_max(np.linalg.norm(p_rigid - p_gt, axis=1))
    if n >= 2:
        trans, rot_deg = [], []
        for i in range(n - 1):
            rel_gt = invert_T(np.asarray(T_gt[i], dtype=np.float64)) @ np.asarray(T_gt[i + 1], dtype=np.float64)
            rel_est = invert_T(np.asarray(T_est[i], dtype=np.float64)) @ np.asarray(T_est[i + 1], dtype=np.float64)
            E = invert_T(rel_gt) @ rel_est
            trans.append(float(np.linalg.norm(E[:3, 3])))
            rot_deg.append(rotation_deg(E[:3, :3]))
        out["rpe_trans_mean_m"], out["rpe_trans_max_m"] = float(np.mean(trans)), float(np.max(trans))
        out["rpe_rot_mean_deg"], out["rpe_rot_max_deg"] = float(np.mean(rot_deg)), float(np.max(rot_deg))
    return out


__all__ = ["GraphEdge", "Odometry", "OdometryConfig", "PairResult", "Trajectory", "estimate_poses", "estimate_trajectory",
           "fill_depth_gaps", "register_pair", "trajectory_errors"]
