"""Training throughput, today's code against this tree, side by side in one run.

The baseline is a commit of this repository (``--baseline``, default the last one before the
compositor and threading changes) unpacked with ``git archive`` into a temporary folder; each
training runs in its own process with either tree on its ``PYTHONPATH``, the variants
interleaved (order alternating per round) so both see the same machine load. Each run:
``prepare`` (fixture CLIP) of the APC shelf scene, the ``fast`` preset for ``--iterations``
iterations through ``run_training`` (the build's loop: evaluation, checkpoints), then held-out
PSNR and feature cosine on every held-out view. Wall and CPU seconds (user + system of the
process) of the training loop and the load average are recorded per run.

Both trees run at the same thread count (``--threads``, default 1: ``OMP_NUM_THREADS`` and
``torch.set_num_threads`` in each child, which also sets the compositor's OpenMP threads), so
the ratio is the code's and not a thread setting's; one thread is also what a shared, loaded
machine measures most steadily. ``--new-options`` sets fast-preset fields on this tree's side
only (e.g. ``depth_weight=0`` for the baseline's objective, which had no depth loss).

    python bench/train_speed.py [--iterations 30] [--rounds 2] [--threads 1]
        # writes bench/results/train_speed.json and train_speed.png
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
REALDATA = ROOT.parent / "shared" / "realdata"
APC_SCENE = Path("apc2016_realsense_shelf") / "data" / "sample" / "scene-0000"
BASELINE = "b3670da"  # main before this bench's changes


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def child(recording: Path, iterations: int, seed: int, work: Path, threads: int, options: dict) -> dict:
    """One training with whichever m3_memory is on the path, at ``threads`` torch threads (0: torch's own)."""
    import torch

    if threads:
        torch.set_num_threads(threads)

    from m3_memory.foundation import load_model
    from m3_memory.render.cpu import library
    from m3_memory.training.build import prepare, run_training
    from m3_memory.training.config import TrainConfig
    from m3_memory.training.trainer import Trainer, scene_extent

    cfg = TrainConfig.fast(iterations=iterations, seed=seed, **options)
    prep = prepare(recording, cfg, [load_model("clip-fixture")], work / "cache", show_progress=False)
    trainer = Trainer(prep.gaussians, prep.banks, prep.slices, cfg, scene_extent(prep.train))
    library()  # compiled (on a tree's first run) before the clock starts
    threads_before = torch.get_num_threads()
    t0, c0 = time.perf_counter(), cpu_seconds()
    run_training(trainer, prep.train, prep.test, cfg, work / f"run{os.getpid()}.ckpt", {}, [], lambda *a: None, None,
                 False)
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    return {"iterations": iterations, "seed": seed, "wall_s": wall, "cpu_s": cpu, "iterations_per_s": iterations / wall,
            "cpu_s_per_iteration": cpu / iterations, "gaussians": int(trainer.params["means"].shape[0]),
            "torch_threads": threads_before, "options": options, "heldout": trainer.evaluate(prep.test),
            "load": os.getloadavg()}


def run(tree: Path, recording: Path, iterations: int, seed: int, work: Path, threads: int, options: dict) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(tree), "M3_CACHE": str(work / "m3cache")}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, __file__, "--child", str(recording), "--iterations", str(iterations), "--seed", str(seed),
           "--work", str(work), "--threads", str(threads), "--options", json.dumps(options)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tree)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return {"status": "failed", "stderr": done.stderr[-3000:]}


def summary(runs: list[dict]) -> dict:
    ok = [r for r in runs if "wall_s" in r]
    if not ok:
        return {}
    keys = sorted(ok[0]["heldout"])
    return {"runs": len(ok), "iterations_per_s_median": statistics.median(r["iterations_per_s"] for r in ok),
            "cpu_s_per_iteration_median": statistics.median(r["cpu_s_per_iteration"] for r in ok),
            "heldout_mean": {k: statistics.fmean(r["heldout"][k] for r in ok) for k in keys}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=BASELINE, help="commit measured as today's code")
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--realdata", type=Path, default=REALDATA, help="folder of the real sequences")
    parser.add_argument("--out", type=Path, default=RESULTS / "train_speed.json")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=1, help="torch threads on both sides (0: torch's own)")
    parser.add_argument("--new-options", default="{}", help="JSON of fast-preset fields for this tree's runs only")
    parser.add_argument("--also", nargs="*", default=[], help="more commits to run beside the baseline (e.g. the "
                        "branch point of this work, whose training objective is this tree's)")
    parser.add_argument("--options", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = child(args.child, args.iterations, args.seed, args.work, args.threads, json.loads(args.options))
        print("RESULT " + json.dumps(result), flush=True)
        return
    recording = args.realdata / APC_SCENE
    new_options = json.loads(args.new_options)
    out = {"baseline": args.baseline, "also": args.also, "scene": str(APC_SCENE), "iterations": args.iterations,
           "rounds": args.rounds, "cpus": os.cpu_count(), "threads": args.threads, "new_options": new_options}
    if not recording.is_dir():
        out["status"], out["reason"] = "skipped", f"{recording} not found"
        args.out.write_text(json.dumps(out, indent=1))
        return
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    out["new"] = commit
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        trees = {}
        for name, ref in (("today", args.baseline), *((c, c) for c in args.also)):
            trees[name] = tmp / f"tree_{name}"
            trees[name].mkdir()
            archive = subprocess.run(["git", "archive", ref], capture_output=True, check=True, cwd=ROOT).stdout
            subprocess.run(["tar", "-x", "-C", str(trees[name])], input=archive, check=True)
        trees["new"] = ROOT
        runs: dict[str, list[dict]] = {k: [] for k in trees}
        out["uptime"] = [subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()]
        for r in range(args.rounds):
            for name in (list(trees) if r % 2 == 0 else list(trees)[::-1]):
                row = run(trees[name], recording, args.iterations, args.seed, tmp / name, args.threads,
                          new_options if name == "new" else {})
                row["round"] = r
                runs[name].append(row)
                print(name, json.dumps(row), flush=True)
                out["uptime"].append(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
        out["runs"] = runs
    out["summary"] = {k: summary(v) for k, v in runs.items()}
    s = out["summary"]
    for name in trees:
        if name != "new" and s[name] and s["new"]:
            key = "" if name == "today" else f"_vs_{name}"
            out[f"speedup_iterations_per_s{key}"] = (s["new"]["iterations_per_s_median"]
                                                     / s[name]["iterations_per_s_median"])
            out[f"speedup_cpu_s{key}"] = s[name]["cpu_s_per_iteration_median"] / s["new"]["cpu_s_per_iteration_median"]
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    plot(out, args.out.with_suffix(".png"))


def plot(out: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(out["runs"])
    labels = [f"{out['baseline']}" if n == "today" else n for n in names]
    colours = [("tab:gray", "tab:orange", "tab:green")[min(i, 2)] for i in range(len(names) - 1)] + ["tab:blue"]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8))
    for ax, key, label in ((axes[0], "iterations_per_s", "iterations / s (wall)"),
                           (axes[1], "cpu_s_per_iteration", "CPU s / iteration")):
        for i, name in enumerate(names):
            vals = [r[key] for r in out["runs"][name] if key in r]
            ax.bar(i, statistics.median(vals) if vals else 0, color=colours[i])
            ax.plot([i] * len(vals), vals, "k.")
        ax.set_xticks(range(len(names)), labels)
        ax.set_title(label)
    ax = axes[2]
    for i, name in enumerate(names):
        rows = [r for r in out["runs"][name] if "heldout" in r]
        ax.plot([r["heldout"]["psnr"] for r in rows], [r["heldout"]["cos.clip"] for r in rows], "o",
                color=colours[i], label=labels[i])
    ax.set_xlabel("held-out PSNR (dB)")
    ax.set_ylabel("held-out feature cosine")
    ax.legend()
    fig.suptitle(f"APC shelf, fast preset, {out['iterations']} iterations per run, {out.get('threads', 0)} torch "
                 "thread(s), interleaved")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
