"""CPU rasterizers: fast (C++ compositing) vs the PyTorch reference, forward + backward.

Scene: N random Gaussians in a 1.6 x 1.2 x 1 m box 2 m in front of a 320x240 camera
(fx 277, the synthetic scene's), scales 3-15 mm, 3 + 16 channels plus expected depth, like
an RGB + CLIP-query render. Time = forward + backward of a weighted sum of all outputs,
median of 3 runs after a warm-up, 2 threads. The reference is measured at N where it fits
in time and memory; the ratio is taken at the largest N both ran.

    python bench/rasterizer.py      # writes bench/results/rasterizer.json and rasterizer.png
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path

import torch
from plots import loglog

from m3_memory.render.cpu import rasterize_cpu
from m3_memory.render.reference import rasterize_reference

RESULTS = Path(__file__).resolve().parent / "results"
CHANNELS = 19


def scene(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g) - 0.5) * torch.tensor([1.6, 1.2, 1.0]) + torch.tensor([0, 0, 2.0])
    return (means, torch.randn(n, 4, generator=g), 0.003 + 0.012 * torch.rand(n, 3, generator=g),
            0.2 + 0.7 * torch.rand(n, generator=g), torch.rand(n, CHANNELS, generator=g))


def camera(width: int, height: int) -> torch.Tensor:
    f = 277.13 * width / 320
    return torch.tensor([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1.0]])


def time_one(fn, n: int, width: int, height: int, repeats: int = 3) -> float:
    params = scene(n)
    K = camera(width, height)
    times = []
    for i in range(repeats + 1):
        leaves = [p.clone().requires_grad_(True) for p in params]
        t0 = time.perf_counter()
        colors, alpha = fn(*leaves, torch.eye(4), K, width, height)
        (colors.sum() + alpha.sum()).backward()
        if i:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    torch.set_num_threads(2)
    rows = []
    for n in (1_000, 3_000):  # the reference keeps [pixels, N] autograd buffers: ~20 GB at N = 10k
        for name, fn in (("fast", rasterize_cpu), ("reference", rasterize_reference)):
            s = time_one(fn, n, 320, 240, repeats=1 if name == "reference" else 3)
            rows.append({"version": name, "N": n, "width": 320, "height": 240, "seconds": s})
            print(f"{name:9s} N={n:>7,d} 320x240 fwd+bwd {s:8.3f} s", flush=True)
    for n in (10_000, 30_000, 100_000, 300_000):
        s = time_one(rasterize_cpu, n, 320, 240)
        rows.append({"version": "fast", "N": n, "width": 320, "height": 240, "seconds": s})
        print(f"fast      N={n:>7,d} 320x240 fwd+bwd {s:8.3f} s", flush=True)
    for w, h in ((160, 120), (640, 480)):
        s = time_one(rasterize_cpu, 100_000, w, h)
        rows.append({"version": "fast", "N": 100_000, "width": w, "height": h, "seconds": s})
        print(f"fast      N={100_000:>7,d} {w}x{h} fwd+bwd {s:8.3f} s", flush=True)
    common = max(r["N"] for r in rows if r["version"] == "reference")
    pick = {r["version"]: r["seconds"] for r in rows if r["N"] == common and r["width"] == 320}
    result = {"bench": "rasterizer", "platform": platform.platform(), "threads": 2, "channels": "3 + 16 + depth",
              "method": "median wall time of forward + backward (sum of outputs) after a warm-up",
              "speedup_at_largest_common_N": {"N": common, "speedup": pick["reference"] / pick["fast"]},
              "fast_100k_320x240_seconds": next(r["seconds"] for r in rows if r["version"] == "fast"
                                                 and r["N"] == 100_000 and r["width"] == 320),
              "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "rasterizer.json").write_text(json.dumps(result, indent=1))
    plot(rows, RESULTS / "rasterizer.png")
    print(json.dumps({k: result[k] for k in ("speedup_at_largest_common_N", "fast_100k_320x240_seconds")}))


def plot(rows: list[dict], path: Path) -> None:
    series = [(f"{version}, 320x240", style, None,
               [(r["N"], r["seconds"]) for r in rows if r["version"] == version and r["width"] == 320])
              for version, style in (("fast", "o-"), ("reference", "x--"))]
    loglog(series, "Gaussians", "seconds, forward + backward (2 cores)", "CPU rasterizers, 3 + 16 channels + depth",
           path)


if __name__ == "__main__":
    main()
