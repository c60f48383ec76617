"""Text query -> 3D target on the CPU: latency, accuracy, render path vs Gaussians, score calibration.

A memory of the synthetic tabletop (48 views at 320x240, fixture CLIP, ``TrainConfig.fast``) is
built once (or given with ``--memory``; it must come from that scan). Then, after loading:

- latency of ``query_text`` at 320x240 (render, decode, score, region, lift, object centre), p50 /
  p95 over every object and every source view, and per stage; the same at render_scale 0.5
  (features rendered at 160x120, scores upsampled);
  ``query_gaussians`` (no rendering, neighbourhood decoding with 1..64 neighbours);
- accuracy: distance of the target point to each object's true centre (mean of points sampled
  on its surface): the render path with the visible-surface median and with the object centre
  from the memory's Gaussians, rendered and live (ray-cast) depth; the Gaussian path;
- calibration of ``min_score``: region scores of objects in view, objects out of view (close-ups
  of one object, views of the floor) and texts of things not in the scene.

    python bench/query.py [--memory scene.m3]   # writes bench/results/query.json and query.png
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
SCAN = dict(width=320, height=240, n_frames=48)
UNKNOWN = ("red sports car", "laptop", "banana", "teddy bear", "wooden chair", "a cat")


def build(folder: Path) -> Path:
    from m3_memory.synth import SynthConfig, write_synthetic
    from m3_memory.training.build import build_memory
    from m3_memory.training.config import TrainConfig

    scan = write_synthetic(folder / "synth", SynthConfig(**SCAN), realsense=False, rosbag2=False, show_progress=False)
    report = build_memory(scan.folder, folder / "scene.m3", model="clip-fixture", config=TrainConfig.fast(),
                          cache_root=folder / "cache", show_progress=False)
    print("\n".join(report.lines()))
    return folder / "scene.m3"


def centre(obj) -> np.ndarray:
    """True centre of an object (m): mean of points sampled uniformly on its surface."""
    return np.concatenate([np.asarray(p.mesh.sample_points_uniformly(5000).points) for p in obj.parts]).mean(0)


def stats(ms: list[float]) -> dict:
    return {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)), "n": len(ms)}


def stages(memory, text_model, camera, text: str) -> dict[str, float]:
    """Seconds of each step of query_text (rendered depth, object centre), one after the other."""
    import torch

    from m3_memory.memory.attention import memory_attention
    from m3_memory.query.api import QueryConfig, _embeddings, object_gaussians
    from m3_memory.query.relevancy import score_map, target_region, threshold_value
    from m3_memory.query.render import MIN_ALPHA, render_queries
    from m3_memory.query.target import lift_region

    config, t = QueryConfig(), {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        t[name], clock = now - clock, now

    emb, neg = _embeddings(text_model, text, config)
    lap("text")
    q, depth, alpha = render_queries(memory, camera)
    lap("render")
    valid = alpha >= MIN_ALPHA
    features = torch.zeros(*valid.shape, memory.banks["clip"].feature_dim)
    with torch.no_grad():
        features[valid] = memory_attention(q[valid], memory.banks["clip"])
    lap("decode")
    score = score_map(features, emb, neg, "relevancy").numpy()
    lap("score")
    mask = target_region(score, valid.numpy())
    lap("region")
    points = lift_region(mask, (depth * valid).numpy(), camera)
    lap("lift")
    if len(points):
        object_gaussians(memory, points, emb, neg, threshold_value(score, valid.numpy(), "otsu"), config)
    lap("object_centre")
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--memory", help="a memory of the synthetic scan (default: build one, ~4 min)")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()

    import torch

    from m3_memory.memory.artifact import load_memory
    from m3_memory.query.api import QueryConfig, query_gaussians, query_text, text_model_for
    from m3_memory.query.camera import Camera
    from m3_memory.synth import SynthConfig, SyntheticScene, look_at

    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.memory) if args.memory else build(Path(tmp))
        t0 = time.perf_counter()
        memory = load_memory(path)
        text_model = text_model_for(memory)
        load_s = time.perf_counter() - t0
    scene = SyntheticScene(SynthConfig(**SCAN))
    names = scene.object_names
    truth = {n: centre(scene.object(n)) for n in names}
    cameras = [Camera.from_view(c) for c in memory.cameras]
    frames = [scene.render(i) for i in range(len(scene))]
    query_text(memory, names[0], cameras[0], text_model=text_model)  # warm-up (kernel, tokenizer)

    latency = {"full": [], "half": []}
    errors = {k: {n: [] for n in names} for k in ("surface_rendered", "surface_live", "object_rendered", "object_live",
                                                   "object_rendered_half")}
    breakdown = []
    for i, cam in enumerate(cameras):
        for n in names:
            for key, scale, err in (("full", 1.0, "object_rendered"), ("half", 0.5, "object_rendered_half")):
                t = time.perf_counter()
                r = query_text(memory, n, cam, config=QueryConfig(render_scale=scale), text_model=text_model)
                latency[key].append(1000 * (time.perf_counter() - t))
                errors[err][n].append(np.linalg.norm(r.point_world - truth[n]) if r.found else np.nan)
            for key, depth, obj in (("surface_rendered", None, False), ("surface_live", frames[i].depth, False),
                                    ("object_live", frames[i].depth, True)):
                r = query_text(memory, n, cam, depth, QueryConfig(object_centre=obj), text_model)
                errors[key][n].append(np.linalg.norm(r.point_world - truth[n]) if r.found else np.nan)
        if i % 8 == 0:
            breakdown.append(stages(memory, text_model, cam, names[0]))
    gaussian_rows = []
    for k in (1, 8, 16, 32, 64):
        for n in names:
            t = time.perf_counter()
            r = query_gaussians(memory, n, QueryConfig(neighbours=k), text_model)
            gaussian_rows.append({"neighbours": k, "object": n, "ms": 1000 * (time.perf_counter() - t), "found": r.found,
                                  "score": r.score, "error_m": float(np.linalg.norm(r.point_world - truth[n])) if r.found
                                  else None, "gaussians": int(len(r.gaussians))})

    calibration = {"present": [], "absent": [], "unknown": []}
    probes = [(f"view {i}", T) for i, T in enumerate(scene.poses)]
    for obj in scene.objects:  # close-ups: only that object in view
        c = obj.center
        d = c[:2] / np.linalg.norm(c[:2])
        probes.append((f"close-up {obj.name}", look_at(np.array([c[0] + 0.22 * d[0], c[1] + 0.22 * d[1], c[2] + 0.15]), c)))
    for a in (0.0, 2.0):  # the floor beside the table
        probes.append((f"floor {a}", look_at(np.array([1.2 * np.cos(a), 1.2 * np.sin(a), 1.2]),
                                             np.array([2.5 * np.cos(a), 2.5 * np.sin(a), 0.0]))))
    for label, T in probes:
        _, _, ids = scene.render_at(T, scene.K, SCAN["width"], SCAN["height"])
        cam = Camera(scene.K, SCAN["width"], SCAN["height"], T)
        for text in (*names, *UNKNOWN):
            r = query_text(memory, text, cam, config=QueryConfig(min_score=-1.0), text_model=text_model)
            if text in names:
                kind = "present" if (ids == scene.object(text).id).sum() > 100 else "absent"
            else:
                kind = "unknown"
            calibration[kind].append({"view": label, "text": text, "score": r.score})

    def summary(errs: dict) -> dict:
        flat = np.array([e for v in errs.values() for e in v], float)
        return {"median_m": float(np.nanmedian(flat)), "p95_m": float(np.nanpercentile(flat, 95)),
                "max_m": float(np.nanmax(flat)), "not_found": int(np.isnan(flat).sum()), "n": len(flat),
                "per_object_median_m": {n: float(np.nanmedian(v)) for n, v in errs.items()},
                "duck_max_m": float(np.nanmax(errs["yellow bath duck"]))}

    result = {
        "bench": "query", "device": "cpu", "threads": 2, "platform": platform.platform(), "memory": str(path),
        "gaussians": len(memory.gaussians), "bank": {k: list(b.psc.shape) for k, b in memory.banks.items()},
        "build": {k: memory.training.get("config", {}).get(k) for k in ("iterations", "max_side", "voxel", "max_gaussians")},
        "resolution": [SCAN["width"], SCAN["height"]], "load_s": load_s,
        "method": "wall time per query after load and one warm-up, every object x every source view; text encoding "
                  "included (fixture CLIP); errors: target point to the mean of points sampled on the object's surface; "
                  "query_gaussians: the first object per neighbour count computes the neighbourhood sums (cached "
                  "per memory), the others reuse them",
        "latency_query_text": {k: stats(v) for k, v in latency.items()},
        "latency_stages_s": {k: float(np.median([b[k] for b in breakdown])) for k in breakdown[0]},
        "accuracy_query_text": {k: summary(v) for k, v in errors.items()},
        "query_gaussians": gaussian_rows,
        "calibration": {k: {"n": len(v), "min": min(r["score"] for r in v), "p5": float(np.percentile([r["score"] for r in v], 5)),
                            "median": float(np.median([r["score"] for r in v])),
                            "p95": float(np.percentile([r["score"] for r in v], 95)), "max": max(r["score"] for r in v),
                            "rows": v} for k, v in calibration.items()},
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "query.json").write_text(json.dumps(result, indent=1))
    plot(result, out / "query.png")
    lt = result["latency_query_text"]
    print(f"query_text 320x240: p50 {lt['full']['p50_ms']:.0f} ms, p95 {lt['full']['p95_ms']:.0f} ms; half-res render: "
          f"p50 {lt['half']['p50_ms']:.0f} ms, p95 {lt['half']['p95_ms']:.0f} ms")
    for k, v in result["accuracy_query_text"].items():
        print(f"  {k:17s} median {100 * v['median_m']:.1f} cm, max {100 * v['max_m']:.1f} cm, duck max {100 * v['duck_max_m']:.1f} cm")
    for k in (1, 64):
        rows = [r for r in gaussian_rows if r["neighbours"] == k]
        errs = [r["error_m"] for r in rows if r["error_m"] is not None]
        print(f"query_gaussians, {k} neighbours: first {rows[0]['ms']:.0f} ms, then {np.median([r['ms'] for r in rows[1:]]):.0f} "
              f"ms; found {len(errs)}/{len(rows)}, median error {100 * np.median(errs) if errs else float('nan'):.1f} cm")
    for k, v in result["calibration"].items():
        print(f"  scores {k:8s} n {v['n']:3d}: min {v['min']:.3f} p5 {v['p5']:.3f} median {v['median']:.3f} max {v['max']:.3f}")


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    st = result["latency_stages_s"]
    axes[0].barh(list(st), [1000 * v for v in st.values()])
    lt = result["latency_query_text"]["full"]
    axes[0].set_title(f"query_text 320x240: p50 {lt['p50_ms']:.0f} / p95 {lt['p95_ms']:.0f} ms", fontsize=9)
    axes[0].set_xlabel("ms per stage (median)")
    acc = result["accuracy_query_text"]
    labels = [f"render, {k.replace('_', ', ')}" for k in acc]
    med = [100 * v["median_m"] for v in acc.values()]
    mx = [100 * v["max_m"] for v in acc.values()]
    rows = result["query_gaussians"]
    for k in sorted({r["neighbours"] for r in rows}):
        errs = [100 * r["error_m"] for r in rows if r["neighbours"] == k and r["error_m"] is not None]
        labels.append(f"Gaussians, {k} nb ({len(errs)}/{sum(r['neighbours'] == k for r in rows)} found)")
        med.append(float(np.median(errs)) if errs else np.nan)
        mx.append(max(errs) if errs else np.nan)
    y = np.arange(len(labels))
    axes[1].barh(y - 0.2, med, 0.4, label="median")
    axes[1].barh(y + 0.2, mx, 0.4, label="max")
    axes[1].axvline(3, color="k", ls="--", lw=0.8)
    axes[1].set_xlim(0, 10)
    for yi, m in zip(y, mx):
        if m > 10:
            axes[1].text(9.8, yi + 0.2, f"{m:.0f} cm", ha="right", va="center", fontsize=7)
    axes[1].set_yticks(y, labels, fontsize=7)
    axes[1].set_xlabel("target error (cm): render rows 5 objects x 48 views, Gaussian rows 5 objects", fontsize=8)
    axes[1].legend(fontsize=8)
    for i, (kind, v) in enumerate(result["calibration"].items()):
        s = [r["score"] for r in v["rows"]]
        axes[2].scatter(s, np.full(len(s), i) + np.random.default_rng(i).uniform(-0.2, 0.2, len(s)), s=6)
    axes[2].set_yticks(range(3), list(result["calibration"]))
    axes[2].axvline(0.1, color="k", ls="--", lw=0.8)
    axes[2].set_xlabel("region score (relevancy); dashed: min_score")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
