"""How build costs grow with the number of frames, on the synthetic tabletop scan (320x240).

- ``build``: ``build_memory`` with the ``fast`` preset and the fixture CLIP on scans of 15, 48,
  150 and 500 frames (each in its own process): wall and CPU seconds per stage and peak
  resident memory (ru_maxrss). ``--iterations`` below the preset's 600 shortens training
  (whose cost per iteration does not depend on the frame count); the full-length training
  time is then extrapolated and marked as such.
- ``psc``: principal scene components of dense CLIP ViT-L/14@336 features (d = 768; open_clip
  architecture with random weights, nothing downloaded) of the 500-frame scan's frames, at
  evenly spaced subsets of 15 / 48 / 150 / 500 frames: component count and PSC time.
- ``features``: seconds per frame of the dense CLIP ViT-L/14@336 and SigLIP so400m/14@384
  paths (random weights, float32, on the CPU, at their native short side).

    python bench/scaling.py [--iterations 600] [--frames 15 48 150 500]
        # writes bench/results/scaling.json and scaling.png
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
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
    from m3_memory.training.build import build_memory
    from m3_memory.training.config import TrainConfig

    t0, c0 = time.perf_counter(), cpu_seconds()
    scene = scan(frames, work)
    synth_s = time.perf_counter() - t0
    base_mb = peak_mb()
    t0, c0 = time.perf_counter(), cpu_seconds()
    report = build_memory(scene, work / f"m{frames}.m3", model="clip-fixture", config=TrainConfig.fast(iterations=iterations),
                          cache_root=work / f"cache{frames}", show_progress=False, overwrite=True)
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    stages = dict(report.seconds)
    row = {"frames": frames, "iterations": iterations, "synth_write_s": synth_s, "build_wall_s": wall,
           "build_cpu_s": cpu, "stages_s": stages, "peak_rss_mb": peak_mb(), "rss_before_build_mb": base_mb,
           "gaussians": report.num_gaussians, "models": report.models, "final": report.final,
           "load": os.getloadavg()}
    if iterations != FULL_ITERATIONS:
        per_it = stages["train"] / iterations
        row["train_s_per_iteration"] = per_it
        row["extrapolated"] = {"train_s": per_it * FULL_ITERATIONS,
                               "build_wall_s": wall - stages["train"] + per_it * FULL_ITERATIONS,
                               "arithmetic": f"build {wall:.1f} s - train {stages['train']:.1f} s + "
                                             f"{per_it:.3f} s/it x {FULL_ITERATIONS} it"}
    return row


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


def psc_scaling(work: Path, frame_counts: list[int], image_size: int) -> dict:
    """PSC component count and time for random-weight ViT-L/14@336 features at each frame count
    (evenly spaced frames of the largest scan)."""
    import numpy as np
    import torch

    from m3_memory.foundation import load_model
    from m3_memory.memory.components import default_threshold
    from m3_memory.memory.psc import principal_scene_components
    from m3_memory.recording import open_recording

    model = load_model("clip", weights=str(random_weights("ViT-L-14-336", work)), arch="ViT-L-14-336",
                       image_size=image_size)
    frames = list(open_recording(scan(max(frame_counts), work)))
    t0 = time.perf_counter()
    feats = [model.encode_image(np.asarray(f.rgb)) for f in frames]
    extract_s = time.perf_counter() - t0
    theta = default_threshold(model)
    rows = []
    for count in frame_counts:
        pick = np.linspace(0, len(frames) - 1, count).round().astype(int)
        flat = torch.cat([feats[i].reshape(-1, model.feature_dim) for i in pick])
        for rule in ("strict",):
            t0, c0 = time.perf_counter(), cpu_seconds()
            psc, _ = principal_scene_components(flat, theta, rule)
            rows.append({"frames": count, "rule": rule, "rows": int(flat.shape[0]), "components": int(psc.shape[0]),
                         "wall_s": time.perf_counter() - t0, "cpu_s": cpu_seconds() - c0, "load": os.getloadavg()})
            print("psc", rows[-1], flush=True)
    return {"arch": "ViT-L-14-336", "d": model.feature_dim, "short_side_px": image_size,
            "feature_map": list(feats[0].shape), "theta": theta, "extract_s": extract_s, "rows": rows}


def child(args: argparse.Namespace) -> None:
    work = Path(args.work)
    if args.child == "build":
        row = one_build(args.frames[0], args.iterations, work)
    elif args.child == "features":
        row = feature_timing(work, args.repeats)
    else:
        row = psc_scaling(work, args.frames, args.psc_image_size)
    print("RESULT " + json.dumps(row), flush=True)


def run_child(kind: str, work: Path, extra: list[str]) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--work", str(work), *extra]
    done = subprocess.run(cmd, capture_output=True, text=True)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return {"status": "failed", "stderr": done.stderr[-2000:]}


def plot(out: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    builds = [b for b in out["build"] if "stages_s" in b]
    f = [b["frames"] for b in builds]
    ax = axes[0]
    for stage in ("read", "features", "psc", "init", "train", "evaluate", "write"):
        ax.loglog(f, [max(b["stages_s"].get(stage, 0), 1e-3) for b in builds], "o-", label=stage)
    ax.loglog(f, [b["build_wall_s"] for b in builds], "k--", label="build (wall)")
    ax.set_xlabel("frames")
    ax.set_ylabel("seconds")
    ax.set_title(f"fast build, {builds[0]['iterations'] if builds else '?'} iterations")
    ax.legend(fontsize=7)
    ax = axes[1]
    ax.loglog(f, [b["peak_rss_mb"] for b in builds], "o-")
    ax.set_xlabel("frames")
    ax.set_ylabel("peak resident MB")
    ax.set_title("build peak memory")
    ax = axes[2]
    psc = out.get("psc", {})
    if psc.get("rows"):
        pf = [r["frames"] for r in psc["rows"]]
        ax.loglog(pf, [r["components"] for r in psc["rows"]], "o-", label="PSC components")
        ax.loglog(pf, [r["cpu_s"] for r in psc["rows"]], "s-", label="PSC CPU s")
    feats = out.get("features", {})
    for name in ("clip", "siglip"):
        if name in feats:
            fr = [15, 48, 150, 500]
            ax.loglog(fr, [feats[name]["s_per_frame"] * n for n in fr], "--", label=f"{name} features s (x frames)")
    ax.set_xlabel("frames")
    ax.set_title(f"d = {psc.get('d', '?')} random-weight features")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=list(FRAMES))
    parser.add_argument("--iterations", type=int, default=FULL_ITERATIONS)
    parser.add_argument("--psc-image-size", type=int, default=336, help="short side (px) of the PSC features")
    parser.add_argument("--repeats", type=int, default=2, help="frames timed per feature model")
    parser.add_argument("--parts", nargs="+", default=["build", "psc", "features"])
    parser.add_argument("--out", type=Path, default=RESULTS / "scaling.json")
    parser.add_argument("--work", type=Path, default=None, help="keep scans here (default: a temporary folder)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    import torch

    out = json.loads(args.out.read_text()) if args.out.is_file() else {}
    out.update({"machine": platform.processor() or platform.machine(), "torch_threads": torch.get_num_threads(),
                "cpus": os.cpu_count()})
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        common = ["--iterations", str(args.iterations), "--repeats", str(args.repeats),
                  "--psc-image-size", str(args.psc_image_size)]
        for part in args.parts:
            if part == "build":
                rows = {r["frames"]: r for r in out.get("build", []) if "frames" in r}
                for frames in args.frames:
                    rows[frames] = run_child("build", work, [*common, "--frames", str(frames)])
                    print("build", frames, json.dumps(rows[frames]), flush=True)
                    out["build"] = [rows[k] for k in sorted(rows)]
                    args.out.write_text(json.dumps(out, indent=1))
            else:
                out[part] = run_child(part, work, [*common, "--frames", *map(str, args.frames)])
                print(part, json.dumps(out[part]), flush=True)
            args.out.write_text(json.dumps(out, indent=1))
    plot(out, args.out.with_suffix(".png"))


if __name__ == "__main__":
    main()
