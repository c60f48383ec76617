"""Gaussian memory attention on CPU at full image size: time and peak memory.

Queries [480, 640, 16] -> features [480, 640, 768] through a bank of t = 4096 components,
under torch.no_grad (inference), for several chunk sizes. Each configuration runs in its
own subprocess; peak memory = ru_maxrss minus the resident size after making the inputs
(the [H, W, d] output itself is 900 MB of float32).

    python bench/attention.py      # writes bench/results/attention.json and attention.png
"""

from __future__ import annotations

import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
H, W, L, T, D = 480, 640, 16, 4096, 768


def one(chunk: int) -> dict:
    import torch

    from m3_memory.memory.attention import MemoryBank, memory_attention

    torch.set_num_threads(2)
    g = torch.Generator().manual_seed(0)
    bank = MemoryBank.create("clip", torch.randn(T, D, generator=g), L)
    q = torch.randn(H, W, L, generator=g)
    with open("/proc/self/statm") as f:
        base = int(f.read().split()[1]) * resource.getpagesize() / 2**20
    with torch.no_grad():
        memory_attention(q[:8], bank)  # warm-up
        t0 = time.perf_counter()
        out = memory_attention(q, bank, chunk=chunk)
        seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"chunk": chunk, "H": H, "W": W, "l": L, "t": T, "d": D, "ms": 1000 * seconds,
            "peak_extra_mb": peak - base, "output_mb": out.numel() * 4 / 2**20}


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        print(json.dumps(one(int(sys.argv[2]))))
        return
    rows = []
    for chunk in (4096, 16384, 65536):
        out = subprocess.run([sys.executable, __file__, "--one", str(chunk)], capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"chunk {chunk:>6d}: {r['ms']:9.0f} ms, peak +{r['peak_extra_mb']:7.0f} MB (output {r['output_mb']:.0f} MB)")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "attention.json").write_text(json.dumps(
        {"bench": "memory_attention", "device": "cpu", "threads": 2, "platform": platform.platform(),
         "method": "torch.no_grad; wall time of one full-image call after warm-up; peak_extra_mb = ru_maxrss minus "
                   "resident size after making the inputs", "rows": rows}, indent=1))
    plot(rows, RESULTS / "attention.png")


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [str(r["chunk"]) for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 3.2))
    a.bar(labels, [r["ms"] / 1000 for r in rows], color="tab:blue")
    a.set_xlabel("chunk (queries at once)")
    a.set_ylabel("seconds per 640x480 image")
    b.bar(labels, [r["peak_extra_mb"] for r in rows], color="tab:orange", label="peak above inputs")
    b.axhline(rows[0]["output_mb"], color="k", ls="--", label="output [H, W, d] itself")
    b.set_xlabel("chunk (queries at once)")
    b.set_ylabel("MB")
    b.legend(fontsize=8)
    fig.suptitle(f"Memory attention on CPU: l={L}, t={T}, d={D}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
