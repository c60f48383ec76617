"""How build costs grow with the number of frames, on the synthetic tabletop scan (320x240).

Every measuring process runs with one torch / OpenMP thread and records CPU seconds beside
wall seconds and the load average (the machine is shared); each part saves its rows into the
JSON as they finish, re-reading the file first, so parts can run at once and a stopped run
keeps what it measured.

- ``build``: ``build_memory`` with the ``fast`` preset and the fixture CLIP on scans of 15, 48,
  150 and 500 frames (each build in its own process, the scan written before it starts): wall
  and CPU seconds per stage (CPU attributed at the build's own stage clock) and peak resident
  memory (ru_maxrss). ``--iterations`` below the preset's 600 shortens training (whose cost
  per iteration does not depend on the frame count); the full-length training time is then
  extrapolated and marked as such. ``--resume`` skips frame counts already measured.
- ``psc``: principal scene components of dense CLIP ViT-L/14@336 features (d = 768; open_clip
  architecture with random weights, nothing downloaded) at ``--psc-image-size`` px short side,
  of evenly spaced subsets of the 500-frame scan (smallest first; each frame encoded once,
  timed, and kept on disk): component count and PSC time (strict rule).
- ``features``: seconds per frame of the dense CLIP ViT-L/14@336 and SigLIP so400m/14@384
  paths (random weights, float32, on the CPU, at their native short side).
- ``init``: the RGB-D initialisation (``init_from_rgbd``, fast preset) on the first 33 / 65 /
  131 / 262 training views of the synthetic room of 300 frames; with ``--init-before REV`` the
  module of git revision REV runs beside it and the clouds are compared.
- ``ranks``: the data-parallel preparation of a build (feature maps of every frame into a
  fresh cache, principal scene components of the training views) on the synthetic room
  (``SynthConfig.room``, ``--room-frames``, default 48 and 300) with 1 and 2 processes
  launched by ``torchrun`` (gloo, loopback): wall seconds per stage, speed-up, peak resident
  memory per rank, and that both runs keep the same components.
- ``dbuild``: ``m3 build --nproc 1`` and ``--nproc 2`` (torchrun, gloo) of the room at
  ``--room-frames`` frames, fast preset, fixture CLIP, ``--iterations`` iterations of a global
  batch of 2 views (the same work in both): wall and stage seconds, training seconds per
  iteration, speed-up, and the peak resident memory of the largest process.
- ``allreduce``: seconds of one gloo all-reduce of 1 to 64 MB of float32 between 2 processes
  (the gradient exchange of a data-parallel build step), for bench/SCALING.md.

    python bench/scaling.py --parts build --iterations 60 [--frames 15 48 150 500] [--resume]
    python bench/scaling.py --parts features
    python bench/scaling.py --parts psc --psc-image-size 112
    python bench/scaling.py --parts init --frames 33 65 131 262 --room-frames 300 --init-before REV
        # each writes its key of bench/results/scaling.json, then scaling.png
    python bench/scaling.py --parts ranks [--room-frames 48 300] [--nprocs 1 2]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(ROOT))
FRAMES = (15, 48, 150, 500)
FULL_ITERATIONS = 600  # the fast preset's


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def scan(frames: int, folder: Path) -> Path:
    """The synthetic scan with ``frames`` frames, written once into ``folder``."""
    from m3_memory.synth import SynthConfig, write_synthetic

    out = folder / f"scan{frames}"
    if not (out / "scene").is_dir():
        write_synthetic(out, SynthConfig(n_frames=frames), realsense=False, rosbag2=False, show_progress=False)
    return out / "scene"


def one_build(frames: int, iterations: int, work: Path) -> dict:
    """One fast-preset build (run in its own process, so ru_maxrss is this build's peak)."""
    import types

    import torch

    from m3_memory.training import build as build_module
    from m3_memory.training.build import build_memory
    from m3_memory.training.config import TrainConfig

    torch.set_num_threads(1)
    marks = []  # CPU seconds at each of the build's stage clock reads (its only time.perf_counter calls)

    def clock() -> float:
        marks.append(cpu_seconds())
        return time.perf_counter()

    build_module.time = types.SimpleNamespace(perf_counter=clock)
    scene = scan(frames, work)  # written by the parent before this process started
    shutil.rmtree(work / f"cache{frames}", ignore_errors=True)  # features and PSC computed afresh
    base_mb = peak_mb()
    load = os.getloadavg()
    t0, c0 = time.perf_counter(), cpu_seconds()
    report = build_memory(scene, work / f"m{frames}.m3", model="clip-fixture",
                          config=TrainConfig.fast(iterations=iterations, torch_threads=1),
                          cache_root=work / f"cache{frames}", show_progress=False, overwrite=True)
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    stages = dict(report.seconds)
    stages_cpu = ({k: b - a for k, a, b in zip(stages, marks, marks[1:])} if len(marks) == len(stages) + 1
                  else "not attributed: the build read its clock an unexpected number of times")
    row = {"frames": frames, "iterations": iterations, "torch_threads": torch.get_num_threads(), "build_wall_s": wall,
           "build_cpu_s": cpu, "stages_s": stages, "stages_cpu_s": stages_cpu, "peak_rss_mb": peak_mb(),
           "rss_before_build_mb": base_mb,
           "gaussians": report.num_gaussians, "models": report.models, "final": report.final,
           "load_before": load, "load": os.getloadavg()}
    if iterations != FULL_ITERATIONS:
        per_it = stages["train"] / iterations
        row["train_s_per_iteration"] = per_it
        if isinstance(stages_cpu, dict):
            row["train_cpu_s_per_iteration"] = stages_cpu["train"] / iterations
        row["extrapolated"] = {"train_s": per_it * FULL_ITERATIONS,
                               "build_wall_s": wall - stages["train"] + per_it * FULL_ITERATIONS,
                               "arithmetic": f"build {wall:.1f} s - train {stages['train']:.1f} s + "
                                             f"{per_it:.3f} s/it x {FULL_ITERATIONS} it"}
    return row


def room_scan(frames: int, folder: Path) -> Path:
    """The synthetic room (four tables) with ``frames`` frames, written once into ``folder``."""
    from m3_memory.synth import SynthConfig, write_synthetic

    out = folder / f"room{frames}"
    if not (out / "scene").is_dir():
        write_synthetic(out, SynthConfig.room(n_frames=frames), realsense=False, rosbag2=False, show_progress=False)
    return out / "scene"


RANKS_ARCH = "ViT-B-16"  # the ranks part's feature model: open_clip CLIP ViT-B/16, random weights, 224 px short side


def ranks_model(work: Path):
    """The ranks part's foundation model (its random weights written once into ``work``)."""
    from m3_memory.foundation import load_model

    return load_model("clip", weights=str(random_weights(RANKS_ARCH, work)), arch=RANKS_ARCH, image_size=224)


def ranks_child(frames: int, work: Path) -> dict | None:
    """One rank of the data-parallel preparation under torchrun (the process group from its
    environment); rank 0 returns every rank's row, the others None."""
    import torch
    import torch.distributed as dist

    from m3_memory import distributed
    from m3_memory.foundation.cache import shared_features
    from m3_memory.memory.components import default_threshold, scene_components, usable_frames
    from m3_memory.recording import open_recording
    from m3_memory.split import split_views

    dist.init_process_group("gloo")
    group = distributed.current()
    try:
        scene = room_scan(frames, work)  # written before the launch: only read here
        cache = work / f"cache_room{frames}_n{group.world}"
        model = ranks_model(work)
        row = {"rank": group.rank, "threads": torch.get_num_threads()}
        group.barrier("the bench")
        t0 = time.perf_counter()
        views, indices = usable_frames(open_recording(scene), scene)
        row["read_s"], t0 = time.perf_counter() - t0, time.perf_counter()
        mine = []
        original = model.encode_frame
        model.encode_frame = lambda frame, index: (mine.append(index), original(frame, index))[1]
        maps = shared_features(model, views, indices, scene, cache)
        row["features_s"], t0 = time.perf_counter() - t0, time.perf_counter()
        train = split_views(len(views))[0]
        comp = scene_components(model, [maps[i] for i in train], [indices[i] for i in train], default_threshold(model),
                                "strict", scene, cache)
        row["psc_s"] = time.perf_counter() - t0
        row.update({"frames_encoded": len(mine), "components": int(comp.kept.numel()), "peak_rss_mb": peak_mb(),
                    "kept_sha": hashlib.sha256(comp.kept.numpy().tobytes()).hexdigest()[:16], "load": os.getloadavg()})
        rows = [row]
        if group.active:
            rows = [None] * group.world
            dist.all_gather_object(rows, row)
        return ({"frames": frames, "processes": len(rows), "model": f"clip {RANKS_ARCH} random weights, 224 px",
                 "ranks": rows} if group.rank == 0 else None)
    finally:
        dist.destroy_process_group()


def run_ranks(frames: int, nproc: int, work: Path) -> dict:
    """``torchrun --nproc-per-node nproc`` of :func:`ranks_child`: its rows, wall time of the
    whole launch (process start and imports included) and the load before and after."""
    room_scan(frames, work)
    random_weights(RANKS_ARCH, work)
    shutil.rmtree(work / f"cache_room{frames}_n{nproc}", ignore_errors=True)  # every run encodes afresh
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--master-addr", "127.0.0.1",
           "--master-port", str(29500 + nproc), __file__, "--child", "ranks", "--work", str(work), "--frames", str(frames)]
    load = os.getloadavg()
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    wall = time.perf_counter() - t0
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            row = json.loads(line[7:])
            row.update({"launch_wall_s": wall, "load_before": load, "load_after": os.getloadavg(),
                        "command": " ".join(["torchrun", *cmd[3:]])})
            return row
    return {"frames": frames, "processes": nproc, "status": "failed", "stderr": done.stderr[-2000:]}


def run_allreduce(work: Path, repeats: int) -> dict:
    """``torchrun --nproc-per-node 2`` of :func:`allreduce_child`."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", "29510", __file__, "--child", "allreduce", "--work", str(work), "--repeats", str(repeats)]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return {"status": "failed", "stderr": done.stderr[-2000:]}


def dbuild_child(frames: int, nproc: int, iterations: int, work: Path, threads: int = 0) -> dict:
    """``m3 build --nproc nproc`` of the room scan (fast preset, fixture CLIP, ``iterations``
    iterations of a global batch of 2 views, a fresh feature cache), run from this process so
    that RUSAGE_CHILDREN's peak is the largest rank's of this build alone. threads: torch and
    OpenMP threads of a one-process build (0: torch's default, all cores); ``--nproc 2`` gives
    each rank cores / 2 (one here)."""
    import re

    scene = room_scan(frames, work)
    cache = work / f"cache_build{frames}_n{nproc}"
    shutil.rmtree(cache, ignore_errors=True)
    cmd = [sys.executable, "-m", "m3_memory.cli", "build", str(scene), "--model", "clip-fixture", "--fast",
           "--iterations", str(iterations), "--train.views-per-iteration", "2", "--out", str(work / f"room{frames}_n{nproc}.m3"),
           "--overwrite", "--nproc", str(nproc)]
    env = {**os.environ, "M3_CACHE": str(cache), "PYTHONPATH": str(ROOT)}
    if threads:
        cmd += ["--train.torch-threads", str(threads)]
        env["OMP_NUM_THREADS"] = str(threads)
    load = os.getloadavg()
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    row = {"frames": frames, "processes": nproc, "threads": threads or "default", "iterations": iterations,
           "views_per_iteration": 2,
           "wall_s": wall, "returncode": done.returncode, "load_before": load, "load_after": os.getloadavg(),
           "peak_rss_mb_largest_process": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
           "command": " ".join(["m3", *cmd[3:]])}
    timing = next((line for line in done.stdout.splitlines() if line.startswith("time: ")), None)
    if done.returncode or timing is None:
        row["stderr"] = done.stderr[-2000:]
        return row
    row["stages_s"] = {k: float(v) for k, v in re.findall(r"(\w+) ([\d.]+) s", timing)}
    row["train_s_per_iteration"] = row["stages_s"]["train"] / iterations
    row["summary"] = done.stdout.strip().splitlines()[:3]
    return row


ALLREDUCE_MB = (1, 4, 16, 64)  # gradient sizes timed by the allreduce part


def allreduce_child(repeats: int) -> dict | None:
    """Seconds of one gloo all-reduce (sum) of float32 tensors of ``ALLREDUCE_MB`` megabytes,
    the median of ``repeats`` after a warm-up; rank 0 returns the row."""
    import statistics

    import torch
    import torch.distributed as dist

    from m3_memory import distributed

    dist.init_process_group("gloo")
    group = distributed.current()
    try:
        rows = []
        for mb in ALLREDUCE_MB:
            x = torch.ones(mb * 2**20 // 4)
            dist.all_reduce(x)
            times = []
            for _ in range(repeats):
                group.barrier("the bench")
                t0 = time.perf_counter()
                dist.all_reduce(x)
                times.append(time.perf_counter() - t0)
            median = statistics.median(times)
            rows.append({"mb": mb, "s": median, "gb_per_s": mb / 1024 / median, "repeats": repeats})
        return ({"processes": group.world, "backend": "gloo, loopback", "rows": rows,
                 "load": os.getloadavg()} if group.rank == 0 else None)
    finally:
        dist.destroy_process_group()


def random_weights(arch: str, folder: Path) -> Path:
    """An open_clip checkpoint of ``arch`` with its random initial weights."""
    import open_clip
    import torch

    path = folder / f"{arch}-random.pt"
    if not path.is_file():
        torch.manual_seed(0)
        torch.save(open_clip.create_model(arch, pretrained=None).state_dict(), path)
    return path


def feature_timing(work: Path, repeats: int) -> dict:
    """Seconds per frame of the dense CLIP ViT-L/14@336 and SigLIP so400m paths (random weights)."""
    import numpy as np
    import torch

    from m3_memory.foundation import load_model
    from m3_memory.recording import open_recording

    frames = list(open_recording(scan(15, work)))[:repeats + 1]
    out = {"threads": torch.get_num_threads(), "precision": "float32", "frame_size": list(frames[0].rgb.shape[:2])}
    for name, arch in (("clip", "ViT-L-14-336"), ("siglip", "ViT-SO400M-14-SigLIP-384")):
        model = load_model(name, weights=str(random_weights(arch, work)), arch=arch)
        model.encode_image(frames[0].rgb)  # warm-up
        t0, c0 = time.perf_counter(), cpu_seconds()
        for f in frames[1:]:
            feat = model.encode_image(np.asarray(f.rgb))
        out[name] = {"arch": arch, "short_side_px": model.image_size, "feature_map": list(feat.shape),
                     "s_per_frame": (time.perf_counter() - t0) / repeats,
                     "cpu_s_per_frame": (cpu_seconds() - c0) / repeats, "load": os.getloadavg()}
        del model
    return out


def psc_scaling(work: Path, frame_counts: list[int], image_size: int, out_path: Path) -> dict:
    """PSC component count and time for random-weight ViT-L/14@336 features (``image_size`` px
    short side) of evenly spaced subsets of the largest scan, smallest count first. Each frame's
    map is encoded once (timed) and kept on disk in ``work``, and each row is saved into
    ``out_path`` as it finishes, so a stopped run keeps its rows and a rerun encodes nothing twice."""
    import numpy as np
    import torch

    from m3_memory.foundation import load_model
    from m3_memory.memory.components import default_threshold
    from m3_memory.memory.psc import principal_scene_components
    from m3_memory.recording import open_recording

    torch.set_num_threads(1)
    model = load_model("clip", weights=str(random_weights("ViT-L-14-336", work)), arch="ViT-L-14-336",
                       image_size=image_size)
    rgbs = [np.asarray(f.rgb) for f in open_recording(scan(max(frame_counts), work))]
    n_frames = len(rgbs)
    store = work / f"vitl336_{image_size}px"
    store.mkdir(exist_ok=True)
    theta = default_threshold(model)
    result = {"arch": "ViT-L-14-336", "d": model.feature_dim, "short_side_px": image_size, "precision": "float32",
              "torch_threads": torch.get_num_threads(), "theta": theta, "rule": "strict",
              "rows_from": "every frame of the subset (a build reduces its training views, 7 of 8)",
              "encoded": 0, "extract_wall_s": 0.0, "extract_cpu_s": 0.0, "rows": []}
    for count in sorted(frame_counts):
        pick = np.linspace(0, n_frames - 1, count).round().astype(int)
        maps = []
        for i in pick:
            path = store / f"{i:05d}.pt"
            if not path.is_file():
                t0, c0 = time.perf_counter(), cpu_seconds()
                feat = model.encode_image(rgbs[i])  # [h, w, d]
                result["extract_wall_s"] += time.perf_counter() - t0
                result["extract_cpu_s"] += cpu_seconds() - c0
                result["encoded"] += 1
                torch.save(feat.clone(), path)
            maps.append(torch.load(path))
        result["feature_map"] = list(maps[0].shape)
        flat = torch.cat([m.reshape(-1, model.feature_dim) for m in maps])  # [count * h * w, d]
        del maps
        load = os.getloadavg()
        t0, c0 = time.perf_counter(), cpu_seconds()
        psc, _ = principal_scene_components(flat, theta, "strict")
        result["rows"].append({"frames": count, "rows": int(flat.shape[0]), "components": int(psc.shape[0]),
                               "wall_s": time.perf_counter() - t0, "cpu_s": cpu_seconds() - c0, "load_before": load,
                               "load": os.getloadavg(), "peak_rss_mb": peak_mb()})
        if result["encoded"]:
            result["extract_s_per_frame"] = result["extract_wall_s"] / result["encoded"]
            result["extract_cpu_s_per_frame"] = result["extract_cpu_s"] / result["encoded"]
        save(out_path, "psc", result)
        print("psc", result["rows"][-1], flush=True)
    return result


def init_scaling(work: Path, frame_counts: list[int], scene_frames: int, before: str | None, out_path: Path) -> dict:
    """CPU and wall seconds of the RGB-D initialisation (``init_from_rgbd``, the fast preset's
    voxel, stride and depth range) on the first ``frame_counts`` training views of the synthetic
    room of ``scene_frames`` frames; with ``before`` (a git revision) the module of that
    revision runs beside it on the same frames, in turn, and the two clouds are compared.
    Each row is saved into ``out_path`` as it finishes."""
    import importlib.util

    import numpy as np
    import open3d  # noqa: F401  (imported once, outside the timings: the code before imported it per call)
    import torch
    from scipy.spatial import cKDTree

    from m3_memory.memory.components import usable_frames
    from m3_memory.recording import open_recording
    from m3_memory.split import split_views
    from m3_memory.training import init as current
    from m3_memory.training.config import TrainConfig

    torch.set_num_threads(1)
    cfg = TrainConfig.fast()
    versions = {"current": current}
    if before:
        source = subprocess.run(["git", "-C", str(ROOT), "show", f"{before}:m3_memory/training/init.py"], check=True,
                                capture_output=True, text=True).stdout
        path = work / f"init_{before}.py"
        path.write_text(source)
        spec = importlib.util.spec_from_file_location(f"init_{before}", path)
        versions = {before: importlib.util.module_from_spec(spec), **versions}
        spec.loader.exec_module(versions[before])
    scene = room_scan(scene_frames, work)
    frames, _ = usable_frames(open_recording(scene), scene, False)
    train = [frames[i] for i in split_views(len(frames), cfg.test_every)[0]]
    result = {"scene": f"synthetic room, {scene_frames} frames", "voxel_m": cfg.voxel, "stride": cfg.init_stride,
              "depth_max_m": cfg.depth_max, "torch_threads": 1, "before": before, "rows": []}
    for count in sorted(frame_counts):
        row, clouds = {"train_frames": min(count, len(train)), "load_before": os.getloadavg()}, {}
        for name, module in versions.items():
            t0, c0 = time.perf_counter(), cpu_seconds()
            g = module.init_from_rgbd(train[:count], query_dim=cfg.query_dim, voxel=cfg.voxel, stride=cfg.init_stride,
                                      depth_max=cfg.depth_max, seed=cfg.seed)
            row[name] = {"wall_s": time.perf_counter() - t0, "cpu_s": cpu_seconds() - c0, "gaussians": len(g)}
            clouds[name] = g.means.numpy()
        if before:
            d, _ = cKDTree(clouds[before]).query(clouds["current"])
            back, _ = cKDTree(clouds["current"]).query(clouds[before])
            row["nearest_mm"] = {"current_to_before_median": 1e3 * float(np.median(d)), "current_to_before_max":
                                 1e3 * float(d.max()), "before_to_current_median": 1e3 * float(np.median(back)),
                                 "before_to_current_max": 1e3 * float(back.max())}
        row["load"] = os.getloadavg()
        result["rows"].append(row)
        save(out_path, "init", result)
        print("init", json.dumps(row), flush=True)
    return result


def child(args: argparse.Namespace) -> None:
    work = Path(args.work)
    if args.child == "dbuild":
        row = dbuild_child(args.frames[0], args.nprocs[0], args.iterations, work, args.threads)
    elif args.child in ("ranks", "allreduce"):
        row = ranks_child(args.frames[0], work) if args.child == "ranks" else allreduce_child(args.repeats)
        if row is None:
            return
    elif args.child == "build":
        row = one_build(args.frames[0], args.iterations, work)
    elif args.child == "init":
        row = init_scaling(work, args.frames, args.room_frames[0], args.init_before, args.out)
    elif args.child == "features":
        row = feature_timing(work, args.repeats)
    else:
        row = psc_scaling(work, args.frames, args.psc_image_size, args.out)
    print("RESULT " + json.dumps(row), flush=True)


def run_child(kind: str, work: Path, extra: list[str]) -> dict:
    """``kind`` in a child process with one torch / OpenMP thread: its RESULT row."""
    cmd = [sys.executable, __file__, "--child", kind, "--work", str(work), *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return {"status": "failed", "stderr": done.stderr[-2000:]}


def save(path: Path, key: str, value) -> dict:
    """Set ``key`` of the JSON at ``path`` to ``value``, re-reading the file first (several parts
    may run at once, each owning its keys) and replacing it atomically; the merged contents."""
    out = json.loads(path.read_text()) if path.is_file() else {}
    out[key] = value
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(out, indent=1))
    os.replace(tmp, path)
    return out


def plot(out: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(2, 3, figsize=(17, 9))
    axes = axes.ravel()
    builds = [b for b in out.get("build", []) if "stages_s" in b]
    f = [b["frames"] for b in builds]
    ax = axes[0]
    for stage in ("read", "features", "psc", "init", "train", "evaluate", "write"):
        cpu = [b["stages_cpu_s"][stage] if isinstance(b.get("stages_cpu_s"), dict) else None for b in builds]
        pts = [(n, c) for n, c in zip(f, cpu) if c is not None]
        if pts:
            ax.loglog(*zip(*pts), "o-", label=f"{stage} (CPU s)")
    ax.loglog(f, [b["build_cpu_s"] for b in builds], "k--", label="build (CPU s)")
    ax.loglog(f, [b["build_wall_s"] for b in builds], "k:", label="build (wall s, loaded machine)")
    ax.set_xlabel("frames")
    ax.set_ylabel("seconds")
    ax.set_title(f"fast build, fixture CLIP, {'/'.join(sorted({str(b['iterations']) for b in builds})) or '?'} iterations")
    ax.legend(fontsize=7)
    ax = axes[1]
    ax.loglog(f, [b["peak_rss_mb"] for b in builds], "o-")
    ax.set_xlabel("frames")
    ax.set_ylabel("peak resident MB")
    ax.set_title("build peak memory (own process)")
    ax = axes[2]
    psc = out.get("psc", {})
    if psc.get("rows"):
        pf = [r["frames"] for r in psc["rows"]]
        ax.loglog(pf, [r["components"] for r in psc["rows"]], "o-", label="PSC components")
        ax.loglog(pf, [r["cpu_s"] for r in psc["rows"]], "s-", label="PSC CPU s")
        if "extract_cpu_s_per_frame" in psc:
            ax.loglog(pf, [psc["extract_cpu_s_per_frame"] * n for n in pf], ":",
                      label=f"ViT-L/14 features CPU s at {psc['short_side_px']} px (x frames)")
    feats = out.get("features", {})
    for name in ("clip", "siglip"):
        if "cpu_s_per_frame" in feats.get(name, {}):
            fr = [15, 48, 150, 500]
            ax.loglog(fr, [feats[name]["cpu_s_per_frame"] * n for n in fr], "--",
                      label=f"{feats[name]['arch']} {feats[name]['short_side_px']} px features CPU s (x frames)")
    ax.set_xlabel("frames")
    ax.set_title(f"d = {psc.get('d', '?')} random-weight features, {psc.get('short_side_px', '?')} px, 1 thread")
    ax.legend(fontsize=7)
    ax = axes[3]
    init = out.get("init", {})
    rows_init = init.get("rows", [])
    for name in [k for k in (init.get("before"), "current") if k]:
        pts = [(r["train_frames"], r[name]["cpu_s"]) for r in rows_init if name in r]
        if pts:
            ax.loglog(*zip(*pts), "o-", label=f"init_from_rgbd {name} (CPU s)")
    ax.set_xlabel("training views")
    ax.set_title(f"RGB-D initialisation, {init.get('scene', '?')}")
    ax.legend(fontsize=7)
    ax = axes[4]
    dbuild = [r for r in out.get("dbuild", []) if "stages_s" in r and r.get("threads") != "default" or r.get("processes") == 2]
    for nproc, marker in ((1, "o-"), (2, "s-")):
        rows = sorted((r for r in dbuild if r["processes"] == nproc and "stages_s" in r), key=lambda r: r["frames"])
        if rows:
            fr = [r["frames"] for r in rows]
            ax.loglog(fr, [r["wall_s"] for r in rows], marker, label=f"room build, {nproc} x 1 thread: wall s")
            ax.loglog(fr, [r["stages_s"]["train"] for r in rows], marker.replace("-", "--"),
                      label=f"room build, {nproc} x 1 thread: train s ({rows[0]['iterations']} it)")
    ax.set_xlabel("room frames")
    ax.set_title("m3 build --nproc 1 vs 2 (room, fast preset)")
    ax.legend(fontsize=7)
    ax = axes[5]
    ranks = [r for r in out.get("ranks", []) if "ranks" in r]
    for nproc, marker in ((1, "o-"), (2, "s-")):
        rows = sorted((r for r in ranks if r["processes"] == nproc), key=lambda r: r["frames"])
        if rows:
            fr = [r["frames"] for r in rows]
            ax.loglog(fr, [max(k["features_s"] + k["psc_s"] for k in r["ranks"]) for r in rows], marker,
                      label=f"{nproc} process{'es' if nproc > 1 else ''}: features + PSC s")
            ax.loglog(fr, [max(k["peak_rss_mb"] for k in r["ranks"]) for r in rows], marker.replace("-", ":"),
                      label=f"{nproc} process{'es' if nproc > 1 else ''}: peak MB per rank")
    ax.set_xlabel("room frames")
    ax.set_title("data-parallel preparation (torchrun, gloo)")
    ax.legend(fontsize=7)
    ticks = [f, f, [r["frames"] for r in psc.get("rows", [])] or list(FRAMES), [r["train_frames"] for r in rows_init],
             [48, 300], [48, 300]]
    for ax, at in zip(axes, ticks):
        if at:
            ax.set_xticks(at, [str(t) for t in at])
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=list(FRAMES))
    parser.add_argument("--iterations", type=int, default=FULL_ITERATIONS)
    parser.add_argument("--psc-image-size", type=int, default=336, help="short side (px) of the PSC features")
    parser.add_argument("--repeats", type=int, default=2, help="frames timed per feature model")
    parser.add_argument("--parts", nargs="+", default=["build", "psc", "features"],
                        help="build, psc, features, init, ranks, allreduce, dbuild")
    parser.add_argument("--room-frames", type=int, nargs="+", default=[48, 300], help="ranks: room scan lengths")
    parser.add_argument("--nprocs", type=int, nargs="+", default=[1, 2], help="ranks, dbuild: process counts")
    parser.add_argument("--threads", type=int, default=0, help="dbuild: threads of a one-process build (0: default)")
    parser.add_argument("--out", type=Path, default=RESULTS / "scaling.json")
    parser.add_argument("--work", type=Path, default=None, help="keep scans here (default: a temporary folder)")
    parser.add_argument("--init-before", default=None,
                        help="init: a git revision whose init_from_rgbd runs beside the current one")
    parser.add_argument("--resume", action="store_true",
                        help="build: skip frame counts already measured with the same --iterations")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    out = save(args.out, "machine", platform.processor() or platform.machine())
    out = save(args.out, "cpus", os.cpu_count())
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        common = ["--iterations", str(args.iterations), "--repeats", str(args.repeats),
                  "--psc-image-size", str(args.psc_image_size)]
        for part in args.parts:
            if part == "ranks":
                done = {(r["frames"], r["processes"]): r for r in out.get("ranks", []) if "frames" in r}
                for frames in args.room_frames:
                    for nproc in args.nprocs:
                        done[frames, nproc] = run_ranks(frames, nproc, work)
                        print("ranks", frames, nproc, json.dumps(done[frames, nproc]), flush=True)
                        out = save(args.out, "ranks", [done[k] for k in sorted(done)])
            elif part == "dbuild":
                done = {(r["frames"], r["processes"], str(r.get("threads", "default"))): r
                        for r in out.get("dbuild", []) if "frames" in r}
                for frames in args.room_frames:
                    room_scan(frames, work)
                    for nproc in args.nprocs:
                        key = (frames, nproc, str(args.threads or "default"))
                        done[key] = run_child("dbuild", work, [*common, "--frames", str(frames), "--nprocs", str(nproc),
                                                               "--threads", str(args.threads)])
                        print("dbuild", frames, nproc, json.dumps(done[key]), flush=True)
                        out = save(args.out, "dbuild", [done[k] for k in sorted(done)])
            elif part == "allreduce":
                out = save(args.out, "allreduce", run_allreduce(work, max(args.repeats, 5)))
                print("allreduce", json.dumps(out["allreduce"]), flush=True)
            elif part == "build":
                for frames in args.frames:
                    rows = {r["frames"]: r for r in json.loads(args.out.read_text()).get("build", []) if "frames" in r}
                    old = rows.get(frames, {})
                    if args.resume and "stages_s" in old and old.get("iterations") == args.iterations:
                        continue  # measured by an earlier run with the same settings
                    written = (work / f"scan{frames}" / "scene").is_dir()
                    t0 = time.perf_counter()
                    scan(frames, work)  # written here, so that the build's own process measures the build alone
                    synth_s = None if written else time.perf_counter() - t0  # None: on disk from an earlier run
                    rows[frames] = run_child("build", work, [*common, "--frames", str(frames)])
                    rows[frames]["synth_write_s"] = synth_s
                    print("build", frames, json.dumps(rows[frames]), flush=True)
                    rows.update({r["frames"]: r for r in json.loads(args.out.read_text()).get("build", [])
                                 if "frames" in r and r["frames"] != frames})
                    out = save(args.out, "build", [rows[k] for k in sorted(rows)])
            else:
                extra = ["--room-frames", str(max(args.room_frames))]
                if args.init_before:
                    extra += ["--init-before", args.init_before]
                out = save(args.out, part, run_child(part, work, [*common, *extra, "--out", str(args.out),
                                                                  "--frames", *map(str, args.frames)]))
                print(part, json.dumps(out[part]), flush=True)
    plot(out, args.out.with_suffix(".png"))


if __name__ == "__main__":
    main()
