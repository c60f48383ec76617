"""``build_memory``: recording -> features -> principal scene components -> Gaussians ->
training -> a ``*.m3`` memory with a report of held-out quality.

The memory records where the robot stands: the ``robot_pose`` given, else the recording's
(tf world -> base_link at the last frame), else none.

The output is checked before any work (writable, room for a size estimate, not an existing
memory unless ``overwrite``) and locked (``<out>.lock``) for the whole build, so two builds
cannot write one memory. Checkpoints go to ``<out>.ckpt`` every ``checkpoint_every``
iterations, on Ctrl-C, SIGTERM and ``should_stop``, and once more before the final write;
``resume=True`` continues from it. A checkpoint that cannot be written (a full disk) is
skipped with a warning. The memory itself is written only when training finishes
(atomically, with its ``report/`` pictures), so a stopped build never leaves a partial
memory; a failed final write keeps the checkpoint and says how to resume.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from m3_memory.conventions import scale_intrinsics
from m3_memory.device import describe_device, out_of_memory_hint, use_device, warn_cpu_fallback
from m3_memory.distributed import Group, RankLost, join
from m3_memory.errors import BuildFailed, InputError, M3Error, os_problem
from m3_memory.foundation import FoundationModel, load_model
from m3_memory.foundation.base import known_models
from m3_memory.foundation.cache import shared_features
from m3_memory.memory.artifact import CameraView, Gaussians, Memory, ModelEntry, save_memory
from m3_memory.memory.attention import MemoryBank
from m3_memory.memory.components import default_threshold, scene_components, usable_frames
from m3_memory.memory.trace import ComponentSources
from m3_memory.outputs import MB, OutputLock, check_output, parent_folders, pid_alive, write_atomic
from m3_memory.progress import Progress as Bar
from m3_memory.progress import progress as bar_over
from m3_memory.recording import Recording, open_recording
from m3_memory.recording.frame import Frame
from m3_memory.robot_pose import RobotPose
from m3_memory.split import split_views
from m3_memory.training.config import TrainConfig
from m3_memory.training.distributed import check_identical, check_same, fault_injection, rank_log, sync_trainer
from m3_memory.training.init import init_from_rgbd
from m3_memory.training.options import preset_config
from m3_memory.training.trainer import Trainer, View, scene_extent

Progress = Callable[[str, float, str], None]
log = logging.getLogger("m3")


class BuildStopped(RuntimeError):
    """Raised when a build is interrupted (Ctrl-C, SIGTERM or ``should_stop``) after saving a
    checkpoint; ``signum`` is the signal that stopped it (None: ``should_stop``)."""

    def __init__(self, iteration: int, checkpoint: Path, signum: int | None = None, saved: bool = True):
        self.iteration, self.checkpoint, self.signum = iteration, checkpoint, signum
        why = {signal.SIGINT: "interrupted (Ctrl-C)", signal.SIGTERM: "terminated (SIGTERM)"}.get(signum, "stopped")
        kept = f"checkpoint {checkpoint} (continue with --resume)" if saved else \
            f"the checkpoint could not be written, the last good one is {checkpoint}" if checkpoint.is_file() else \
            "no checkpoint could be written"
        super().__init__(f"{why} at iteration {iteration}; {kept}")


@dataclass
class BuildReport:
    """What a build did: output path, seconds per stage, held-out metrics before and after training,
    and the robot pose the memory records (None: none)."""

    out: Path
    seconds: dict[str, float] = field(default_factory=dict)
    initial: dict[str, float] = field(default_factory=dict)
    final: dict[str, float] = field(default_factory=dict)
    num_gaussians: int = 0
    iterations: int = 0
    models: list[str] = field(default_factory=list)
    robot_pose: RobotPose | None = None
    device: str = "cpu"

    def lines(self) -> list[str]:
        fmt = lambda m: ", ".join(f"{k} {v:.3f}" for k, v in m.items()) or "no held-out views"  # noqa: E731
        stages = ", ".join(f"{k} {v:.1f} s" for k, v in self.seconds.items())
        robot = self.robot_pose.describe() if self.robot_pose is not None else "none recorded (name it with --robot-pose x,y,z,yaw)"
        return [f"memory: {self.out} ({self.num_gaussians} Gaussians, {self.iterations} iterations, "
                f"models {', '.join(self.models)})",
                f"held-out before training: {fmt(self.initial)}", f"held-out after training:  {fmt(self.final)}",
                f"robot pose: {robot}",
                f"time: {stages} (on {self.device})"]


def checkpoint_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".ckpt")


def _scaled(frame: Frame, max_side: int | None) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Frame -> (rgb [H', W', 3] float, depth [H', W'] m, K [3, 3] OpenCV) at the training size."""
    h, w = frame.rgb.shape[:2]
    s = 1.0 if not max_side else min(1.0, max_side / max(h, w))
    H, W = max(1, round(h * s)), max(1, round(w * s))
    rgb = torch.from_numpy(frame.rgb).float().div(255)
    depth = torch.from_numpy(np.ascontiguousarray(frame.depth, dtype=np.float32))
    K = np.array(frame.K, dtype=np.float64)
    if (H, W) != (h, w):
        rgb = F.interpolate(rgb.permute(2, 0, 1)[None], size=(H, W), mode="bilinear", antialias=True,
                            align_corners=False)[0].permute(1, 2, 0)
        depth = F.interpolate(depth[None, None], size=(H, W), mode="nearest")[0, 0]
        K = scale_intrinsics(K, W / w, H / h)
    return rgb.contiguous(), depth.contiguous(), K


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _StopFlag:
    """Ctrl-C and SIGTERM set a flag read between iterations (main thread only), so a checkpoint
    is always taken from a consistent state; ``signum`` is the signal received. A second signal
    gives up at once (KeyboardInterrupt)."""

    def __init__(self, should_stop: Callable[[], bool] | None):
        self.should_stop, self.signum = should_stop, None
        self.previous: dict[int, object] = {}

    def __enter__(self) -> "_StopFlag":
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}
        return self

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:  # second signal: give up immediately
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)

    @property
    def flag(self) -> bool:
        return self.signum is not None

    def __call__(self) -> bool:
        return self.flag or bool(self.should_stop and self.should_stop())


def _save_checkpoint(path: Path, trainer: Trainer, identity: dict, history: list[dict]) -> bool:
    """Write the checkpoint through a temporary unique to this process, then rename it into
    place. A write that fails (full disk, read-only) removes the temporary, keeps the previous
    checkpoint and logs a warning: False."""
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            torch.save({"identity": identity, "trainer": trainer.state_dict(), "history": history}, f)

    try:
        write_atomic(path, write, prefix=f".{path.name}.{os.getpid()}.")
        return True
    except OSError as err:
        kept = "the previous one is kept" if path.is_file() else "there is none yet"
        log.warning("%s: checkpoint at iteration %d not written (%s); training goes on, %s", path, trainer.iteration,
                    os_problem(err), kept)
        return False


def _load_checkpoint(path: Path, identity: dict) -> dict:
    if not path.is_file():
        raise InputError(path, "no checkpoint to resume from (build without --resume)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a damaged file
        raise InputError(path, f"checkpoint cannot be read ({type(err).__name__}); delete it or build without --resume") \
            from None
    theirs = ckpt.get("identity", {})
    for key in ("config", "recording", "models"):
        if theirs.get(key) != identity[key]:
            raise InputError(path, f"checkpoint is from another {key} ({theirs.get(key)!r} vs {identity[key]!r}); "
                             "delete it or build without --resume")
    return ckpt


@dataclass
class Prepared:
    """Everything training starts from: the recording and its frames, the models and their banks,
    the initial Gaussians and the views (train / held out) at training resolution. frame_index:
    each frame's index in the recording; sources: where each bank row came from (the trace)."""

    recording: Recording
    frames: list[Frame]
    test_idx: list[int]
    models: list[FoundationModel]
    banks: dict[str, MemoryBank]
    entries: list[ModelEntry]
    slices: dict[str, tuple[int, int]]
    gaussians: Gaussians
    views: list[View]
    frame_index: list[int] = field(default_factory=list)
    sources: dict[str, ComponentSources] = field(default_factory=dict)

    @property
    def train(self) -> list[View]:
        return [v for i, v in enumerate(self.views) if i not in self.test_idx]

    @property
    def test(self) -> list[View]:
        return [self.views[i] for i in self.test_idx]


def prepare(recording: str | Path, cfg: TrainConfig, models: list[FoundationModel], cache_root: str | Path | None = None,
            show_progress: bool = True, say: Progress | None = None, lap: Callable[[str], None] | None = None,
            ranks: int = 1, **recording_options) -> Prepared:
    """Read ``recording``, extract (cached) features of ``models``, reduce them to principal
    scene components (train views only) and initialise Gaussians from RGB-D: the common start of
    a memory build and of a distillation baseline trained with the same budget. ``ranks``: the
    processes of a data-parallel launch, refused when more than the training views."""
    say = say or (lambda stage, fraction, message: None)
    lap = lap or (lambda stage: None)
    say("read", 0.0, f"reading {recording}")
    rec = open_recording(recording, **recording_options)
    frames, frame_index = usable_frames(rec, recording, show_progress)
    train_idx, test_idx = split_views(len(frames), cfg.test_every)
    if ranks > len(train_idx):
        raise InputError(f"{ranks} ranks", f"more ranks (processes) than the {len(train_idx)} training views of "
                         f"{recording}; launch at most {len(train_idx)}")
    warn_cpu_fallback()
    lap("read")

    features: dict[str, list[torch.Tensor]] = {}
    for k, fm in enumerate(models):
        say("features", k / len(models), f"{fm.name} features of {len(frames)} frames")
        features[fm.name] = shared_features(fm, frames, frame_index, rec.path, cache_root, lambda it, total: bar_over(
            it, f"features {fm.name}", total=total, unit="frame", show=show_progress, leave=False))
    lap("features")

    banks, entries, slices, sources = {}, [], {}, {}
    for k, fm in enumerate(models):
        say("psc", k / len(models), f"{fm.name} principal scene components")
        theta = default_threshold(fm)
        comp = scene_components(fm, [features[fm.name][i] for i in train_idx], [frame_index[i] for i in train_idx],
                                theta, cfg.psc_rule, rec.path, cache_root)
        if comp.reused:
            log.info("%s: principal scene components of %s read from the feature cache", recording, fm.name)
        sources[fm.name] = comp.sources(train_idx)
        slices[fm.name] = (k * cfg.query_dim, (k + 1) * cfg.query_dim)
        banks[fm.name] = MemoryBank.create(fm.name, comp.psc, cfg.query_dim, seed=cfg.seed + k, temperature=cfg.temperature,
                                           learn_projection=cfg.learn_projection)
        entries.append(ModelEntry(fm.name, fm.feature_dim, slices[fm.name], theta, cfg.temperature,
                                  cfg.learn_projection, fm.checkpoint))
    lap("psc")

    say("init", 0.0, "initialising Gaussians from RGB-D")
    gaussians = init_from_rgbd([frames[i] for i in train_idx], query_dim=cfg.query_dim * len(models), voxel=cfg.voxel,
                               stride=cfg.init_stride, depth_max=cfg.depth_max, seed=cfg.seed, source=str(recording),
                               sparse=rec.sparse_points())
    if len(gaussians) > cfg.max_gaussians:
        keep = torch.randperm(len(gaussians), generator=torch.Generator().manual_seed(cfg.seed))[:cfg.max_gaussians]
        gaussians = gaussians.subset(keep)
    views = []
    for i, f in enumerate(frames):
        rgb, depth, K = _scaled(f, cfg.max_side)
        views.append(View(f.name or f"frame {i}", rgb, depth, K, f.T_world_cam,
                          {fm.name: features[fm.name][i] for fm in models}))
    return Prepared(rec, frames, test_idx, models, banks, entries, slices, gaussians, views, frame_index, sources)


def build_memory(recording: str | Path, out: str | Path, model: str = "clip", weights: str | None = None,
                 fast: bool = False, overwrite: bool = False, resume: bool = False, progress: Progress | None = None,
                 should_stop: Callable[[], bool] | None = None, config: TrainConfig | None = None,
                 cache_root: str | Path | None = None, show_progress: bool = True, robot_pose: RobotPose | None = None,
                 device: str | torch.device = "auto", **recording_options) -> BuildReport:
    """Build a memory from ``recording`` into ``out`` (a ``*.m3`` directory).

    model: one foundation-model name or several separated by commas ("clip,dinov2").
    robot_pose: where the robot's base stands in the recording's world frame; None: the
    recording's own (:meth:`Recording.robot_pose` at the last frame's stamp), if any.
    weights: a weights file or hub tag (one model only). config: the training options; None: the
    fast preset (:meth:`TrainConfig.fast`) when ``fast``, else the device's (the authors' schedule
    on CUDA, the fast one on the CPU). progress(stage, fraction, message)
    is called as work advances; should_stop() is polled between iterations. device: where the
    foundation models, Gaussians and optimiser run (:func:`m3_memory.device.resolve_device`).
    """
    out = Path(out)
    dev = use_device(device, "build")
    cfg = config or preset_config("fast" if fast else "auto", dev)
    names = model_names(model, weights)
    group = join(dev)
    handler = rank_log(out, group.rank) if group.active else None
    if handler is not None:
        log.info("build: rank %d of %d on %s (%s)", group.rank, group.world, describe_device(group.device), group.backend)
        if group.device.type == "cuda" and group.main:
            log.info("gsplat distributed rasterization: not used (every rank holds the whole Gaussian set; gsplat's "
                     "distributed mode renders Gaussians sharded over the ranks)")
    try:
        check_batch(cfg, group.world)  # before reading and features, so that a bad split fails at once
        if group.active:
            check_same(group, {"config": cfg.to_json(), "recording": str(Path(recording).resolve()), "models": names,
                              "weights": weights, "out": str(out.resolve()), "resume": resume, "overwrite": overwrite,
                              "robot_pose": repr(robot_pose), "options": recording_options, "device": dev.type})
        if not group.main:  # rank 0 checks, locks and writes the output
            return _build_locked(recording, out, cfg, names, weights, overwrite, resume, progress, should_stop,
                                 cache_root, False, robot_pose, group, **recording_options)
        check_output(out, allow_existing=overwrite, need_bytes=estimated_bytes(cfg, len(names)))
        if not Path(recording).exists():
            open_recording(recording)  # the reader's own one-line error (missing, link loop)
        with parent_folders(out), OutputLock(out):  # the lock file lives beside the output
            check_output(out, allow_existing=overwrite)  # again, now that no other build can write it
            _remove_stale_temporaries(out)
            with out_of_memory_hint(group.device, "--train.max-side (image resolution), --train.max-gaussians or "
                                    "--train.feature-pixels"):
                return _build_locked(recording, out, cfg, names, weights, overwrite, resume, progress, should_stop,
                                     cache_root, show_progress, robot_pose, group, **recording_options)
    except M3Error as err:
        if handler is None:
            raise
        named = _on_rank(err, group.rank)
        handler.handle(log.makeRecord(log.name, logging.ERROR, __file__, 0, "%s", (named,), None))
        raise named from None
    finally:
        if handler is not None:
            logging.getLogger("m3").removeHandler(handler)
            handler.close()
        group.close()


def _on_rank(err: M3Error, rank: int) -> M3Error:
    """``err`` with ``rank k: `` ahead of its input, so the line says which rank failed."""
    if not err.source.startswith(f"rank {rank}"):
        err.source = f"rank {rank}: {err.source}"
        err.args = (f"{err.source}: {err.problem}",)
    return err


def _remove_stale_temporaries(out: Path) -> None:
    """Remove what killed builds of ``out`` left beside it: checkpoint temporaries of processes
    that are gone and unfinished memory directories (:func:`save_memory`'s ``.<name>-XXXXXXXX.tmp``,
    see :class:`m3_memory.outputs.Staged`; with the lock held no other build of ``out`` is writing
    them)."""
    if not out.parent.is_dir():
        return
    memory_tmp = re.compile(rf"\.{re.escape(out.name)}-(old-)?[a-z0-9_]{{8}}(\.tmp)?")
    ckpt_tmp = re.compile(rf"\.{re.escape(out.name)}\.ckpt\.(\d+)\..+\.tmp")
    for entry in out.parent.iterdir():
        ckpt = ckpt_tmp.fullmatch(entry.name)
        if ckpt and not pid_alive(int(ckpt.group(1))):
            log.warning("%s: removing the checkpoint temporary of a build that was killed", entry)
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink(missing_ok=True)
        elif memory_tmp.fullmatch(entry.name) and entry.is_dir() and not entry.is_symlink():
            log.warning("%s: removing the unfinished memory of a build that was killed", entry)
            shutil.rmtree(entry)


def estimated_bytes(cfg: TrainConfig, n_models: int) -> int:
    """A conservative size of what a build writes beside ``--out`` (bytes): the memory and a
    checkpoint (parameters and two Adam moments) at ``cfg.max_gaussians``, plus 16 MB of
    pictures and metadata."""
    floats = 3 + 4 + 3 + 1 + 3 * (cfg.sh_degree + 1) ** 2 + cfg.query_dim * n_models  # per Gaussian
    return int(cfg.max_gaussians * floats * 4 * (1 + 3)) + 16 * MB


def _build_locked(recording: str | Path, out: Path, cfg: TrainConfig, names: list[str], weights: str | None,
                  overwrite: bool, resume: bool, progress: Progress | None, should_stop: Callable[[], bool] | None,
                  cache_root: str | Path | None, show_progress: bool, robot_pose: RobotPose | None,
                  group: Group, **recording_options) -> BuildReport:
    """:func:`build_memory` once the output is checked and locked (rank 0; the other ranks of a
    launch train with it and return before evaluation and writing)."""
    device = group.device
    ckpt_path = checkpoint_path(out)
    report = BuildReport(out, device=describe_device(device))
    say = progress or (lambda stage, fraction, message: None)
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        report.seconds[stage] = report.seconds.get(stage, 0.0) + now - clock
        clock = now

    say("read", 0.0, f"loading {', '.join(names)}")
    models = [load_model(n, weights=weights, device=str(device)) for n in names]
    identity = {"config": cfg.identity(), "recording": str(Path(recording).resolve()),
                "models": [fm.checkpoint for fm in models]}
    # before the work, so that a bad one is a one-line error
    ckpt = _load_checkpoint(ckpt_path, identity) if resume and group.main else None
    prep = prepare(recording, cfg, models, cache_root, show_progress, say, lap, ranks=group.world, **recording_options)
    banks, slices, test_idx = prep.banks, prep.slices, prep.test_idx
    report.models = [f"{e.name} ({banks[e.name].psc.shape[0]} components)" for e in prep.entries]
    report.robot_pose = robot_pose if robot_pose is not None else prep.recording.robot_pose(prep.frames[-1].stamp)
    train, test = prep.train, prep.test
    refine = cfg.pose_refine if cfg.pose_refine is not None else getattr(prep.recording, "poses_mode", None) == "odometry"
    trainer = Trainer(prep.gaussians, banks, slices, cfg, scene_extent(train), device,
                      [v.name for v in train] if refine else (), group)
    history: list[dict] = []
    if ckpt is not None:
        trainer.load_state_dict(ckpt["trainer"])
        history = ckpt["history"]
    sync_trainer(group, trainer)  # every rank starts from rank 0's state
    if group.main and test:
        report.initial = Trainer(prep.gaussians, banks, slices, cfg, trainer.extent, device).evaluate(test)
    lap("init")

    run_training(trainer, train, test, cfg, ckpt_path, identity, history, say, should_stop, show_progress)
    lap("train")
    if not group.main:
        report.iterations, report.num_gaussians = trainer.iteration, trainer.params["means"].shape[0]
        return report

    say("evaluate", 0.0, f"scoring {len(test)} held-out views")
    report.final = trainer.evaluate(test, refine_poses=True)
    report.num_gaussians = trainer.params["means"].shape[0]
    report.iterations = trainer.iteration
    lap("evaluate")

    say("write", 0.0, f"writing {out}")
    cameras = [CameraView(v.name, f.K, f.rgb.shape[1], f.rgb.shape[0], trainer.pose(v), "test" if i in test_idx else "train")
               for i, (v, f) in enumerate(zip(prep.views, prep.frames))]
    memory = Memory(trainer.gaussians(), trainer.banks, prep.entries, prep.recording.tf_frame, str(Path(recording).resolve()),
                    {"config": cfg.to_json(), "iterations": trainer.iteration, "initial": report.initial,
                     "background": trainer.background.detach().tolist(),  # RGB in [0, 1] (clamped on use), then queries
                     "final": report.final}, cameras, report.robot_pose, prep.sources)

    def pictures(folder: Path) -> None:
        from m3_memory.training.report import heldout_sheet, training_curve

        (folder / "report").mkdir()
        if test:
            heldout_sheet(trainer, test, folder / "report" / "heldout.png", models[0].name)
        if history:
            training_curve(history, folder / "report" / "training_curve.png")
        summary = {"seconds": report.seconds, "initial": report.initial, "final": report.final,
                   "num_gaussians": report.num_gaussians, "iterations": report.iterations, "config": cfg.to_json(),
                   "pose_corrections": trainer.poses.summary() if trainer.poses is not None else None}
        (folder / "report" / "report.json").write_text(json.dumps(summary, indent=1))

    saved = _save_checkpoint(ckpt_path, trainer, identity, history)  # the training survives a failed write
    resume_hint = (f"training is kept in {ckpt_path} (iteration {trainer.iteration})" if saved
                   else "no checkpoint could be written either")
    try:
        save_memory(out, memory, extra=pictures, replace=overwrite)
    except FileExistsError:
        raise BuildFailed(out, f"another memory appeared there during the build and was not replaced; {resume_hint}: "
                          "run again with --resume and --overwrite to replace it, or with --resume and another --out "
                          "after moving the checkpoint") from None
    except OSError as err:
        raise BuildFailed(out, f"the memory could not be written ({os_problem(err)}); {resume_hint}: fix that and run "
                          "again with --resume") from None
    ckpt_path.unlink(missing_ok=True)
    lap("write")
    say("done", 1.0, f"memory written to {out}")
    return report


def model_names(model: str, weights: str | None = None) -> list[str]:
    """Model names from a comma-separated ``--model`` value, checked against ``--weights``."""
    names = [m.strip() for m in model.split(",") if m.strip()]
    if not names:
        raise InputError("--model", "no model named")
    unknown = [n for n in names if n not in known_models()]
    if unknown:
        raise InputError("--model", f"unknown foundation model {', '.join(unknown)}; known: {', '.join(known_models())}")
    if weights and len(names) > 1:
        raise InputError("--weights", "gives one file but several models are named")
    return names


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """torch's intra-op thread count set to ``count`` (0: left as it is) inside the block."""
    before = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def check_batch(cfg: TrainConfig, ranks: int) -> int:
    """The global batch (views per iteration) of ``cfg`` over ``ranks``; :class:`InputError`
    when it does not split evenly over them."""
    batch = cfg.batch(ranks)
    if batch % ranks:
        raise InputError("--train.views-per-iteration", f"{batch} views per iteration do not split over {ranks} "
                         f"ranks; use a multiple of {ranks} (or 0: one per rank)")
    return batch


def run_training(trainer: Trainer, train: list[View], test: list[View], cfg: TrainConfig, ckpt_path: Path, identity: dict,
           history: list[dict], say: Progress, should_stop: Callable[[], bool] | None, show_progress: bool) -> None:
    """The iteration loop with progress bar, evaluation, checkpoints, NaN guard and stopping
    (:class:`BuildStopped` after a checkpoint to ``ckpt_path``).

    Each iteration takes the next ``cfg.batch(ranks)`` views of a seeded random order (the same
    on every rank). With several ranks (``trainer.group``) every rank runs this loop; they stop
    together (a stop asked on any rank stops all at the same iteration), and only rank 0
    evaluates, shows progress and writes checkpoints, after checking that every rank holds the
    same Gaussians."""
    group = trainer.group
    batch = check_batch(cfg, group.world)
    if batch > len(train):
        raise InputError("--train.views-per-iteration", f"{batch} views per iteration but only {len(train)} training "
                         "views")
    order = torch.Generator().manual_seed(cfg.seed + trainer.iteration)
    if trainer.iteration == 0:  # gsplat's strategies draw split positions from the global generator (restored on resume)
        torch.manual_seed(cfg.seed)
    queue: list[int] = []
    saved = None
    bar = Bar(cfg.iterations, "training", "it", initial=trainer.iteration, show=show_progress and group.main)
    postfix: dict[str, str] = {}

    def checkpoint() -> bool:
        check_identical(group, trainer, trainer.iteration)
        return group.main and _save_checkpoint(ckpt_path, trainer, identity, history)

    with _StopFlag(should_stop) as stop, torch_threads(cfg.torch_threads):
        try:
            while trainer.iteration < cfg.iterations:
                fault_injection(group.rank, trainer.iteration + 1)
                if group.any(stop(), "the stop check"):
                    written = checkpoint()
                    bar.close()
                    raise BuildStopped(trainer.iteration, ckpt_path, stop.signum, written or not group.main)
                views = []
                for _ in range(batch):
                    if not queue:
                        queue = torch.randperm(len(train), generator=order).tolist()
                    views.append(train[queue.pop()])
                terms = trainer.step(views)
                it = trainer.iteration
                if not math.isfinite(terms["loss"]):
                    bar.close()
                    last = f"last good checkpoint {ckpt_path} (iteration {saved})" if saved else "no checkpoint was saved yet"
                    raise BuildFailed("training", f"loss became {terms['loss']} at iteration {it}; {last}; "
                                     "check the recording's poses and depth or lower the learning rates")
                history.append({"iteration": it, **terms})
                if group.main and test and (it % cfg.eval_every == 0 or it == cfg.iterations):
                    metrics = trainer.evaluate(test[:cfg.eval_views])
                    history.append({"iteration": it, **metrics})
                    postfix["psnr"] = f"{metrics['psnr']:.2f}"
                if it % cfg.checkpoint_every == 0 and checkpoint():
                    saved = it
                postfix["loss"] = f"{terms['loss']:.4f}"
                postfix["N"] = str(trainer.params["means"].shape[0])
                bar.update(1, **postfix)
                say("train", it / cfg.iterations, f"iteration {it}/{cfg.iterations} loss {terms['loss']:.4f}")
        except RankLost as lost:
            bar.close()
            kept = f"the checkpoint {ckpt_path} of iteration {saved} resumes with --resume" if saved else \
                f"{ckpt_path} (if present) is the last checkpoint; continue with --resume"
            raise RankLost(lost.source, f"{lost.problem}; no memory written; {kept}") from None
    bar.close()
