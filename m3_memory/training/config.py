"""Training configuration: the authors' defaults, and a ``fast`` preset for CPUs."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields, replace

from m3_memory.split import HELD_OUT_EVERY


@dataclass(frozen=True)
class TrainConfig:
    """Everything that shapes a build. Defaults are those of the authors' released M3 code (Zou et al., ICLR 2025);
    :meth:`fast` is the CPU preset. Lengths in metres, learning rates per Adam step."""

    iterations: int = 30_000
    max_side: int | None = None  # train at this longest image side in pixels (None: the recording's)
    test_every: int = HELD_OUT_EVERY  # every 8th view is held out
    seed: int = 0
    # initialisation from RGB-D
    voxel: float = 0.005  # m, merge distance of back-projected points
    init_stride: int = 2  # every k-th depth pixel
    depth_max: float = 5.0  # m
    max_gaussians: int = 3_000_000
    sh_degree: int = 3
    sh_increase_every: int = 1000
    # principal queries and memory attention
    query_dim: int = 16  # per model (the paper's main table)
    temperature: float = 0.05
    learn_projection: bool = False  # the released code keeps W_m at its N(0, 1) draw
    psc_rule: str = "strict"
    # losses
    ssim_weight: float = 0.2
    feature_weight: float = 0.5  # times (cosine distance + MSE), per model
    feature_pixels: int = 2000
    depth_weight: float = 1.0  # times the expected-depth loss on the sensor's valid depth pixels; 0: off
    # "inverse" (L1 on inverse depth) or "relative" (L1 / depth); see losses.depth_loss and bench/depth_supervision.py
    depth_loss: str = "inverse"
    # camera pose refinement (training/poses.py): per-view SE(3) corrections learned with the Gaussians;
    # None: on when the recording's poses come from odometry, off for given (ground-truth, robot) poses
    pose_refine: bool | None = None
    lr_pose: float = 1e-3  # Adam step of the corrections (metres and radians)
    pose_refine_eval_steps: int = 100  # held-out views: steps refining their pose with frozen Gaussians before scoring
    # learning rates (3DGS); position is scaled by the scene extent and decays exponentially
    lr_position: float = 1.6e-4
    lr_position_final: float = 1.6e-6
    lr_opacity: float = 0.05
    lr_scale: float = 0.005
    lr_rotation: float = 0.001
    lr_color: float = 0.0025
    lr_query: float = 5e-4
    lr_projection: float = 1e-3
    lr_background: float = 0.01  # learned colour + query shown where no Gaussian is (ours; 3DGS fixes the colour)
    # densification
    densify_start: int = 500
    densify_stop: int = 15_000
    densify_every: int = 100
    densify_grad: float = 2e-4
    densify_scale: float = 0.01  # of the scene extent: clone below, split above
    prune_opacity: float = 0.005
    opacity_reset_every: int = 3000
    # views rendered per optimisation step (the global batch; the loss is their mean): 0 means one
    # per rank of a data-parallel launch (one in a single process, 3DGS's step); else a multiple
    # of the number of ranks, each rank rendering its share (training/distributed.py)
    views_per_iteration: int = 0
    strategy: str = "default"  # density control: gsplat's DefaultStrategy (with the budget) or MCMCStrategy (CUDA)
    # bookkeeping
    eval_every: int = 500
    checkpoint_every: int = 1000
    eval_views: int = 4  # held-out views scored for the progress bar (all are scored at the end)
    # torch's intra-op threads while training (0: torch's own setting, all cores). torch's
    # setting is also the compositor's OpenMP thread count (one libgomp per process), so 1
    # makes the whole iteration single-threaded; it helps only on an oversubscribed CPU.
    torch_threads: int = 0

    def __post_init__(self) -> None:
        from m3_memory.errors import InputError

        checks = [("iterations", self.iterations >= 1), ("query_dim", self.query_dim >= 1),
                  ("test_every", self.test_every >= 2), ("max_side", self.max_side is None or self.max_side >= 16),
                  ("max_gaussians", self.max_gaussians >= 1), ("sh_degree", 0 <= self.sh_degree <= 3),
                  ("psc_rule", self.psc_rule in ("strict", "cover")), ("feature_pixels", self.feature_pixels >= 1),
                  ("temperature", self.temperature > 0), ("strategy", self.strategy in ("default", "mcmc")),
                  ("depth_weight", self.depth_weight >= 0), ("depth_loss", self.depth_loss in ("relative", "inverse")),
                  ("lr_pose", self.lr_pose > 0), ("pose_refine_eval_steps", self.pose_refine_eval_steps >= 0),
                  ("torch_threads", self.torch_threads >= 0), ("views_per_iteration", self.views_per_iteration >= 0)]
        for name, ok in checks:
            if not ok:
                raise InputError(f"training option {name}", f"invalid value {getattr(self, name)!r}")

    @classmethod
    def fast(cls, **overrides) -> "TrainConfig":
        """CPU preset: fewer iterations at 320 px, fewer Gaussians, degree-0 colour."""
        preset = dict(iterations=600, max_side=320, voxel=0.01, max_gaussians=60_000, sh_degree=0,
                      densify_start=150, densify_stop=450, densify_every=100, opacity_reset_every=10_000,
                      eval_every=100, checkpoint_every=100, eval_views=2)
        return cls(**{**preset, **overrides})

    def with_(self, **changes) -> "TrainConfig":
        return replace(self, **changes)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown training options {sorted(unknown)}")
        return cls(**d)

    def batch(self, ranks: int = 1) -> int:
        """The global batch of views per iteration for a launch of ``ranks`` processes
        (:attr:`views_per_iteration`, 0: one per rank)."""
        return self.views_per_iteration or ranks

    def identity(self) -> str:
        """Hash of everything except the iteration count and bookkeeping, so a checkpoint can
        be resumed with more iterations but not under a different configuration."""
        skip = {"iterations", "eval_every", "checkpoint_every", "eval_views", "torch_threads"}
        kept = {k: v for k, v in self.to_json().items() if k not in skip}
        return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:16]
