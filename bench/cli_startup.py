"""How fast the ``m3`` command answers: ``m3 --help`` and ``m3 <cmd> --help``, and a one-shot
``m3 query`` stage by stage (parser, imports, memory load, text model, prepare, the query).

Before/after: ``--before DIR`` is a checkout of the tree before the lazy imports (its
``m3_memory`` and ``m3_grasp``); both trees run in the same loop, interleaved, each command
in a fresh interpreter. Wall and CPU seconds (user + system of the child) are reported, with
the load average: on a shared machine the CPU seconds are the comparable figure.

    python bench/cli_startup.py --memory scene.m3 [--before /tmp/before] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "cli_startup.json"

STAGES = r'''
import json, resource, sys, time
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
t = [time.perf_counter(), cpu()]
stages = []
def mark(name):
    w, c = time.perf_counter(), cpu()
    stages.append({"stage": name, "wall_s": round(w - t[0], 3), "cpu_s": round(c - t[1], 3)})
    t[:] = [w, c]
from m3_memory.cli import build_parser
build_parser()
mark("parser")
import torch
mark("import torch")
from m3_memory.memory.artifact import load_memory
from m3_memory.query import api
mark("import query modules")
memory = load_memory(sys.argv[1])
mark("load memory")
text_model = api.text_model_for(memory, "clip")
mark("text model (open_clip import + create_model)")
if hasattr(api, "prepare"):
    api.prepare(memory)
mark("prepare (decode the Gaussians' features)")
result = api.find_in_memory(memory, sys.argv[2], api.QueryConfig(), text_model)
mark("the query itself (find_in_memory)")
print(json.dumps({"stages": stages, "found": bool(result.found)}))
'''


def run(tree: Path, args: list[str]) -> tuple[float, float, str]:
    """(wall s, child CPU s, stdout) of ``python args`` with ``tree`` first on the path."""
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=tree)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed in {tree}: {done.stderr[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), done.stdout


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--memory", required=True, help="the *.m3 memory the one-shot query asks")
    p.add_argument("--text", default="yellow bath duck")
    p.add_argument("--before", type=Path, help="the tree before the change (holds m3_memory/, m3_grasp/)")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    trees = {"after": ROOT, **({"before": args.before.resolve()} if args.before else {})}
    helps = {"m3 --help": ["-m", "m3_memory.cli", "--help"], "m3 query --help": ["-m", "m3_memory.cli", "query", "--help"],
             "m3 build --help": ["-m", "m3_memory.cli", "build", "--help"]}
    results: dict = {name: {} for name in trees}
    load = [os.getloadavg()]
    for _ in range(args.repeats):
        for name, tree in trees.items():  # interleaved: both trees see the same load
            for label, cmd in helps.items():
                wall, cpu, _ = run(tree, cmd)
                results[name].setdefault(label, []).append({"wall_s": round(wall, 3), "cpu_s": round(cpu, 3)})
    for name, tree in trees.items():
        wall, cpu, out = run(tree, ["-c", STAGES, str(Path(args.memory).resolve()), args.text])
        results[name]["one-shot query"] = {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3), **json.loads(out)}
    load.append(os.getloadavg())
    summary = {name: {label: {k: min(r[k] for r in runs) for k in ("wall_s", "cpu_s")}
                      for label, runs in res.items() if isinstance(runs, list)} for name, res in results.items()}
    report = {"memory": str(args.memory), "text": args.text, "repeats": args.repeats, "cpus": os.cpu_count(),
              "loadavg_start_end": [list(map(float, x)) for x in load], "best_of_repeats": summary, "runs": results,
              "note": "CPU seconds are the comparable figure on a shared machine; wall seconds include waiting for a core"}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=1))
    print(json.dumps(summary, indent=1))
    for name in trees:
        for s in results[name]["one-shot query"]["stages"]:
            print(f"{name:6s} {s['stage']:48s} wall {s['wall_s']:7.2f} s  cpu {s['cpu_s']:6.2f} s")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
