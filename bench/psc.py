"""Principal scene components: fast vs literal Algorithm 1, time and peak memory.

Features: d = 768 (CLIP ViT-L size), a mixture of clusters with noise so the number of
kept rows t is in the low thousands, like real PSC banks. Each measurement runs in its own
subprocess; peak memory is that process's peak resident set size (ru_maxrss) minus its
resident size after the features were made, so it counts what the algorithm allocated.
The literal version is O(N^2 d): it is measured up to N = 200k (about ten minutes on this
machine); the fast version up to N = 10^6. Each measurement records wall seconds and the
process's CPU seconds (user + system), and the load average of the machine: other work on
the machine stretches wall time, much less CPU time, so on a shared machine run with
``--threads 1`` and compare CPU seconds (the ratios then use them).

    python bench/psc.py [--quick]    # writes bench/results/psc.json and psc.png
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

from plots import loglog

RESULTS = Path(__file__).resolve().parent / "results"
D, THETA = 768, 0.8


def features(n: int, d: int = D, clusters: int = 2000, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(clusters, d, generator=g)
    out = torch.empty(n, d)
    for start in range(0, n, 100_000):  # bounded temporaries
        m = min(100_000, n - start)
        labels = torch.randint(0, clusters, (m,), generator=g)
        out[start:start + m] = centres[labels] + 0.35 * torch.randn(m, d, generator=g)
    return out


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def cpu_seconds() -> float:
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


def one(version: str, rule: str, n: int, threads: int) -> dict:
    """Run one measurement in this process; returns its numbers."""
    import torch

    from m3_memory.memory.psc import psc_fast, psc_reference

    torch.set_num_threads(threads)
    R = features(n)
    base = rss_mb()
    fn = psc_fast if version == "fast" else psc_reference
    t0, c0 = time.perf_counter(), cpu_seconds()
    kept = fn(R, THETA, rule)
    seconds, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"version": version, "rule": rule, "N": n, "d": D, "theta": THETA, "t": int(kept.numel()),
            "threads": threads, "seconds": seconds, "cpu_seconds": cpu, "peak_extra_mb": max(0.0, peak - base),
            "kept_hash": hash(tuple(kept.tolist())),
            "load_average_1min": os.getloadavg()[0]}


def measure(version: str, rule: str, n: int, threads: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--one", version, rule, str(n), "--threads", str(threads)],
                         capture_output=True, text=True, check=True)
    row = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"  {version:9s} {rule:6s} N={n:>9,d} t={row['t']:>5d} {row['seconds']:8.2f} s "
          f"(CPU {row['cpu_seconds']:8.2f} s) peak +{row['peak_extra_mb']:8.1f} MB", flush=True)
    return row


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--one", nargs=3, metavar=("VERSION", "RULE", "N"))
    p.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run)")
    p.add_argument("--threads", type=int, default=2, help="torch threads per measurement")
    p.add_argument("--wall-check-only", action="store_true",
                   help="only (re)measure the fast strict rule at N = 10^6 with 2 threads, in psc.json's wall_check")
    args = p.parse_args()
    if args.one:
        print(json.dumps(one(args.one[0], args.one[1], int(args.one[2]), args.threads)))
        return
    if args.wall_check_only:
        result = json.loads((RESULTS / "psc.json").read_text())
        result["wall_check"] = wall_check()
        (RESULTS / "psc.json").write_text(json.dumps(result, indent=1))
        return
    clock = "cpu_seconds" if args.threads == 1 else "seconds"
    common = [5_000, 10_000] if args.quick else [10_000, 30_000, 60_000, 200_000]
    scaling = [10_000, 30_000] if args.quick else [10_000, 30_000, 100_000, 300_000, 1_000_000]
    rows = []
    for rule in ("strict", "cover"):
        for n in common:
            fast, ref = measure("fast", rule, n, args.threads), measure("reference", rule, n, args.threads)
            rows += [fast, ref]
            if fast["kept_hash"] != ref["kept_hash"]:
                raise SystemExit(f"kept sets differ at N={n} ({rule})")
        for n in scaling:
            if n not in common:
                rows.append(measure("fast", rule, n, args.threads))
    ratios = {}
    for rule in ("strict", "cover"):
        n = max(common)
        f = next(r for r in rows if r["version"] == "fast" and r["rule"] == rule and r["N"] == n)
        r = next(r for r in rows if r["version"] == "reference" and r["rule"] == rule and r["N"] == n)
        ratios[rule] = {"N": n, "speedup": r[clock] / f[clock], "clock": clock,
                        "peak_memory_ratio": f["peak_extra_mb"] / max(r["peak_extra_mb"], 1e-9), "same_kept_set": True}
    for row in rows:
        row.pop("kept_hash")
    RESULTS.mkdir(exist_ok=True)
    result = {"bench": "psc", "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
              "method": f"each measurement in a subprocess with {args.threads} torch thread(s); seconds = wall time "
                        "and cpu_seconds = user + system CPU time of the reduction; peak_extra_mb = ru_maxrss minus "
                        f"resident size after making the features; ratios from {clock}",
              "features": f"{2000} gaussian clusters + noise 0.35, d={D}, theta={THETA}",
              "ratios_at_largest_common_N": ratios, "rows": rows, "wall_check": wall_check()}
    (RESULTS / "psc.json").write_text(json.dumps(result, indent=1))
    plot(rows, RESULTS / "psc.png", clock)
    print(json.dumps(ratios, indent=1))


def wall_check() -> dict:
    """The fast strict rule at N = 10^6 with 2 threads, wall time (the target: <= 20 s)."""
    row = measure("fast", "strict", 1_000_000, 2)
    row.pop("kept_hash")
    return row


def plot(rows: list[dict], path: Path, clock: str) -> None:
    series = [(f"{version} ({rule})", style, color,
               [(r["N"], r[clock]) for r in rows if r["rule"] == rule and r["version"] == version])
              for rule, color in (("strict", "tab:blue"), ("cover", "tab:orange"))
              for version, style in (("fast", "o-"), ("reference", "x--"))]
    loglog(series, "N feature vectors (d = 768)", "CPU seconds (1 thread)" if clock == "cpu_seconds" else "seconds",
           "Principal scene components: fast vs literal Algorithm 1", path)


if __name__ == "__main__":
    main()
