"""Density control before and after gsplat's strategies: the same fast synthetic build with the
project's own densification (the commit before it was replaced, m3_memory/training/densify.py)
and with gsplat's DefaultStrategy (this tree), side by side.

Both builds run at once, one thread each, in their own process (PYTHONPATH pointing at each
tree): the synthetic tabletop (--frames, default 24, 320x240), fixture CLIP, the fast preset
(<= 60k Gaussians, densification every 100 iterations from 150) for --iterations (default 300,
so two densification steps), seed 0. Per build: held-out PSNR, feature cosine and L2 (initial and final),
Gaussian count, training seconds.

    python bench/strategy.py [--before COMMIT] [--frames 24] [--iterations 300] [--voxel 0.01] [--densify-every 100]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
BUILD = """
import json, sys, torch
torch.set_num_threads(1)
from m3_memory.training.build import build_memory
from m3_memory.training.config import TrainConfig
r = build_memory(sys.argv[1], sys.argv[2], model="clip-fixture", config=TrainConfig.fast(**json.loads(sys.argv[4])),
                 cache_root=sys.argv[3],
                 show_progress=False, **({"device": "cpu"} if "device" in build_memory.__code__.co_varnames else {}))
print(json.dumps({"initial": r.initial, "final": r.final, "gaussians": r.num_gaussians, "seconds": r.seconds}))

"""


def before_commit() -> str:
    """The commit before densify.py was deleted."""
    deleted = subprocess.run(["git", "log", "--diff-filter=D", "-1", "--format=%H", "--", "m3_memory/training/densify.py"],
                             cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    return f"{deleted}^"


def main() -> None:
    from m3_memory.synth import SynthConfig, write_synthetic

    p = argparse.ArgumentParser()
    p.add_argument("--before", help="commit of the tree with the own densification (default: before densify.py went)")
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--iterations", type=int, default=300)
    p.add_argument("--voxel", type=float, default=0.01, help="initialisation voxel (m); the fast preset's 0.01 starts the "
                   "synthetic scene at the 60k budget, so nothing can grow")
    p.add_argument("--densify-every", type=int, default=100)
    args = p.parse_args()
    overrides = {"iterations": args.iterations, "voxel": args.voxel, "densify_every": args.densify_every}
    commit = args.before or before_commit()
    with tempfile.TemporaryDirectory(prefix="m3-strategy-") as tmp:
        work = Path(tmp)
        scene = write_synthetic(work / "scene", SynthConfig(n_frames=args.frames), realsense=False, rosbag2=False,
                                show_progress=False).folder
        old = work / "before"
        old.mkdir()
        archive = subprocess.run(["git", "archive", commit, "m3_memory", "m3_grasp"], cwd=ROOT, capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
        runs = {"before_own_densify": old, "after_gsplat_default_strategy": ROOT}
        procs = {name: subprocess.Popen([sys.executable, "-c", BUILD, str(scene), str(work / f"{name}.m3"),
                                         str(work / f"cache_{name}"), json.dumps(overrides)], env={**os.environ, "PYTHONPATH": str(tree)},
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for name, tree in runs.items()}
        results = {}
        for name, proc in procs.items():
            out, err = proc.communicate()
            if proc.returncode != 0:
                raise SystemExit(f"{name} failed:\n{err[-3000:]}")
            results[name] = json.loads(out.strip().splitlines()[-1])
    a, b = results["before_own_densify"]["final"], results["after_gsplat_default_strategy"]["final"]
    result = {"what": f"fast-preset synthetic build ({args.frames} frames 320x240, fixture CLIP, {args.iterations} "
                      "iterations), own densify.py vs gsplat DefaultStrategy, run at once with 1 thread each",
              "before_commit": commit, "overrides_of_the_fast_preset": overrides, **results,
              "delta_final": {k: b[k] - a[k] for k in a}, "load_1min": os.getloadavg()[0]}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "strategy.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
