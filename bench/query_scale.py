"""Text queries at real sizes: random memory banks, dense decode vs the fast scores, side by side.

A random memory: N Gaussians (60k, 300k) scattered over a 1 m x 1 m table top under a camera
looking down from 0.8 m (every pixel covered), principal queries (l = 16) N(0, 1) plus 24 smooth
blobs of shared random directions (the "objects"), and a random bank per (t, d): ``iid`` N(0, 1)
rows ``PSC [t, d]`` (a flat spectrum: the worst case of
:func:`m3_memory.query.relevancy.query_scores`, whose first pass helps only a decaying one) or
``decaying`` (see :func:`random_bank`), and a random projection ``W [l, d]``. The stand-in text
model (:class:`BenchTextModel`) names the blobs: a text's embedding is the feature decoded from
its blob's direction; the negatives (LERF's four) are features of random directions.

Per configuration (bank, N, resolution, t, d, render_scale), three camera poses and five texts
in turn; wall and CPU (``process_time``, all threads) milliseconds, p50/p95:
- stages of a text query: ``render`` (queries and depth at a cold camera), ``score_fast``
  (render_scores on that view), ``score_dense`` (memory_attention then score_map, the reference),
  ``region`` (Otsu + largest component at the camera's resolution), ``target`` (lift to 3D + the
  object centre from the memory's Gaussians); ``region_pixels`` and ``object_gaussians`` per query;
- ``text_to_target_fast``: one call of ``query_text`` (what ``m3 query``, the demo and the query
  node run) at a cold camera (nothing kept from an earlier call there);
  ``text_to_target_fast_warm_camera``: another text right after at the same camera (the view, and
  for a flat bank its feature norms, are kept); ``text_to_surface_fast``: cold, with
  ``object_centre`` off (the visible surface's centre; no Gaussians scored);
  ``text_to_target_dense``: the cold call with its scoring swapped for the dense reference
  (interleaved with the fast calls on the same cameras and texts:
  ``text_to_target_fast_same_queries``); ``max_abs_diff`` fast vs dense over the valid pixels;
- the Gaussian-level query (``query_gaussians``): ``prepare`` (``api.prepare``, what the nodes do
  after loading: k-d tree, neighbourhood queries, every Gaussian's unit feature) and per query
  after it. It runs first on each memory (every row's memory is prepared, as the query node's
  is after loading), so the text rows after it use what it kept (``prepared``); where it
  is over ``--gaussian-budget`` the object-centre step scores its Gaussians on each query.
Dense runs are skipped where one would take more than ``--dense-budget`` seconds (estimated from
the multiply-adds at the rate measured on the first configuration); the JSON says so, and records
``uptime`` at the start and end and the load average around each row.

    python bench/query_scale.py [--quick]   # writes bench/results/query_scale.json and query_scale.png
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results"
L = 16
BLOB_M = 0.05  # the blobs' standard deviation (m)
NEGATIVES = ("object", "things", "stuff", "texture")


TEXTS = ("yellow bath duck", "blue mug", "green block", "red apple", "a pair of scissors")


class BenchTextModel:
    """Stand-in text encoder whose embeddings live where the memory's features do (as a real text
    encoder's do: CLIP text and image features share their common directions). Each of
    :data:`TEXTS` names one of the memory's blobs (the one nearest the table's centre first): its
    embedding is the feature memory attention decodes from the blob's query direction, so it scores
    high on that blob as an object's name does on the object. Any other text (the negatives) is the
    feature decoded from a random query direction seeded by the text. Embeddings are computed once
    per text and kept (a lookup per query, as a robot's cached text embedding is): the stand-in's
    own decode is no text encoder's cost, so no timed query includes encoding its text."""

    has_text = True
    canonical_negatives = NEGATIVES

    def __init__(self, memory, blob_centres: torch.Tensor, blob_directions: torch.Tensor):
        self.bank = memory.banks["clip"]
        self.feature_dim, self.checkpoint = self.bank.feature_dim, "random:bench"
        order = blob_centres.norm(dim=-1).argsort()[:len(TEXTS)]  # blobs every bench camera sees
        self.objects = dict(zip(TEXTS, blob_directions[order]))  # text -> query direction [l]
        self.kept: dict[str, torch.Tensor] = {}  # text -> its embedding [d]
        self.encode_text([*TEXTS, *NEGATIVES])

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        from m3_memory.memory.attention import memory_attention

        new = [s for s in dict.fromkeys(texts) if s not in self.kept]
        if new:
            q = [self.objects[s] if s in self.objects else
                 torch.randn(L, generator=torch.Generator().manual_seed(sum(map(ord, s)) * 7919 + len(s))) for s in new]
            with torch.no_grad():
                emb = torch.nn.functional.normalize(memory_attention(torch.stack(q), self.bank), dim=-1)  # [n, d]
            self.kept.update(zip(new, emb))
        return torch.stack([self.kept[s] for s in texts])  # [n, d]


def random_bank(t: int, d: int, kind: str, g: torch.Generator) -> torch.Tensor:
    """PSC [t, d]: "iid" N(0, 1) rows (flat spectrum), or "decaying": a shared mean direction, 32
    directions with singular values falling 30x, and 1% noise (the shape of real feature banks,
    whose rows are similar: an assumption, no real CLIP bank of this size is available here)."""
    if kind == "iid":
        return torch.randn(t, d, generator=g)
    low = (torch.randn(t, 32, generator=g) * torch.logspace(0, -1.5, 32)) @ torch.randn(32, d, generator=g)
    return torch.randn(d, generator=g) + low + 0.01 * torch.randn(t, d, generator=g)


def random_memory(n: int, t: int, d: int, kind: str = "iid", seed: int = 0):
    """N Gaussians over a 1 m x 1 m table top (1.5-5 mm at 60k, larger when fewer), whose queries
    are N(0, 1) plus 24 smooth 5 cm blobs of shared random directions (so scores have regions, as
    objects give), and a random bank (:func:`random_bank`). Returns the memory and its text model
    (:class:`BenchTextModel`)."""
    from m3_memory.memory.artifact import Gaussians, Memory, ModelEntry
    from m3_memory.memory.attention import MemoryBank

    g = torch.Generator().manual_seed(seed)
    means = torch.rand(n, 3, generator=g) * torch.tensor([1.0, 1.0, 0.05]) - torch.tensor([0.5, 0.5, 0.0])  # [N, 3] m
    quats = torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1)
    log_scales = torch.empty(n, 3).uniform_(np.log(0.0015), np.log(0.005), generator=g) + 0.5 * np.log(60000 / n)
    centres, directions = torch.rand(24, 2, generator=g) - 0.5, torch.randn(24, L, generator=g)
    blobs = torch.exp(-torch.cdist(means[:, :2], centres).square() / (2 * BLOB_M**2))  # [N, 24]
    queries = torch.randn(n, L, generator=g) + 3 * blobs @ directions  # [N, l]
    gaussians = Gaussians(means, quats, log_scales, torch.randn(n, generator=g) + 1.0, torch.rand(n, 3, generator=g),
                          torch.zeros(n, 0, 3), queries)
    bank = MemoryBank.create("clip", random_bank(t, d, kind, g), L, seed=seed)
    entry = ModelEntry("clip", d, (0, L), 0.8, bank.temperature, False, "random:bench")
    memory = Memory(gaussians, {"clip": bank}, [entry])
    return memory, BenchTextModel(memory, centres, directions)


def cameras(width: int, height: int) -> list:
    from m3_memory.conventions import make_T
    from m3_memory.query.camera import Camera

    K = np.array([[0.9 * width, 0, (width - 1) / 2], [0, 0.9 * width, (height - 1) / 2], [0, 0, 1]])
    down = np.array([[1.0, 0, 0], [0, -1, 0], [0, 0, -1]])  # optical axis along -z (world), image x along +x
    return [Camera(K, width, height, make_T(down, np.array([x, y, 0.8]))) for x, y in ((0, 0), (0.05, -0.03), (-0.04, 0.04))]


def uptime() -> str:
    """``uptime``'s line: the wall clock and the load average (other work on the machine)."""
    import subprocess

    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def stats(ms: list[float], cpu: list[float] | None = None) -> dict:
    """p50/p95 and min of wall milliseconds and, given, of this process's CPU milliseconds (all its
    threads); on a loaded machine the min is the closest to an idle one."""
    out = {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)), "min_ms": float(min(ms)),
           "n": len(ms)}
    if cpu:
        out.update(cpu_p50_ms=float(np.percentile(cpu, 50)), cpu_p95_ms=float(np.percentile(cpu, 95)),
                   cpu_min_ms=float(min(cpu)))
    return out


def one_query(memory, camera, scale: float, text_model, text: str, dense: bool) -> dict:
    """Seconds of each stage of one text query (as query_text runs it), and fast vs dense scores."""
    from m3_memory.memory.attention import memory_attention
    from m3_memory.query.api import QueryConfig, _upsample, object_gaussians
    from m3_memory.query.relevancy import largest_component, score_map, threshold_value
    from m3_memory.query.render import MIN_ALPHA, render_queries, render_scores
    from m3_memory.query.target import lift_region

    config, bank = QueryConfig(render_scale=scale), memory.banks["clip"]
    emb = text_model.encode_text([text, *NEGATIVES])
    out, clock, cpu = {}, time.perf_counter(), time.process_time()

    def lap(name: str) -> None:
        nonlocal clock, cpu
        now, now_cpu = time.perf_counter(), time.process_time()
        out[name], out[name + "_cpu"], clock, cpu = 1000 * (now - clock), 1000 * (now_cpu - cpu), now, now_cpu

    cam = camera.scaled(scale) if scale < 1 else camera
    forget_views(memory)
    clock, cpu = time.perf_counter(), time.process_time()
    q, depth, alpha = render_queries(memory, cam)
    valid = alpha >= MIN_ALPHA
    lap("render")
    fast = render_scores(memory, cam, emb[0], emb[1:], "relevancy").score  # the view is kept: the scoring alone
    lap("score_fast")
    if dense:
        with torch.no_grad():
            ref = score_map(memory_attention(q[valid], bank), emb[0], emb[1:], "relevancy")
        lap("score_dense")
        out["max_abs_diff"] = float((fast[valid] - ref).abs().max())
    H, W = camera.height, camera.width
    score = _upsample(fast.numpy(), H, W)
    ok = _upsample(valid.numpy().astype(np.float32), H, W) >= 0.5
    bound = threshold_value(score, ok, "otsu")
    mask = largest_component(ok & (score > bound))
    lap("region")
    points = lift_region(mask, _upsample((depth * valid).numpy(), H, W) * ok, camera)
    members = object_gaussians(memory, points, emb[0], emb[1:], bound, config) if len(points) else []
    lap("target")
    out["region_pixels"], out["object_gaussians"] = int(mask.sum()), len(members)
    return out


def dense_render_scores(memory, camera, text, negatives, method, model="clip", min_alpha=0.5, backend="auto", tol=0.0,
                        device="cpu"):
    """render_scores' reference: decode the [H, W, d] features (render_features), then score_map."""
    from m3_memory.query.relevancy import score_map
    from m3_memory.query.render import ScoredView, render_features

    view = render_features(memory, camera, model, min_alpha, backend, device=device)
    score = torch.zeros(view.valid.shape)
    score[view.valid] = score_map(view.features[view.valid], text, negatives, method)
    return ScoredView(score, view.depth, view.alpha, view.valid)


def forget_views(memory) -> None:
    """Drop the rendered views kept per memory: the next query at any camera renders (a cold camera)."""
    from m3_memory.query.memo import memo

    memo(memory).pop("views", None)
    memo(memory).pop("view_norms", None)


def timed_query(memory, camera, scale: float, text_model, text: str, dense: bool, warm: bool = False,
                centre: bool = True) -> tuple[float, float]:
    """Wall and CPU milliseconds of one ``query_text`` call at a cold camera (nothing rendered there yet) or, with
    ``warm``, at the camera of the previous call; ``dense``: with render_scores swapped for the reference;
    ``centre``: QueryConfig.object_centre (False: the visible surface's centre, no Gaussians scored)."""
    import m3_memory.query.api as api

    fast = api.render_scores
    api.render_scores = dense_render_scores if dense else fast
    if not warm:
        forget_views(memory)
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        api.query_text(memory, text, camera, config=api.QueryConfig(render_scale=scale, object_centre=centre),
                       text_model=text_model)
        return 1000 * (time.perf_counter() - t0), 1000 * (time.process_time() - c0)
    finally:
        api.render_scores = fast


def run_config(memory, camera_list, scale: float, text_model, repeats: int, dense_repeats: int) -> dict:
    texts = TEXTS
    rows = []
    for i in range(max(repeats, dense_repeats)):
        rows.append(one_query(memory, camera_list[i % len(camera_list)], scale, text_model, texts[i % len(texts)],
                              dense=i < dense_repeats))
    end_to_end = {"fast": [], "fast_warm": [], "fast_surface": [], "dense": []}
    for i in range(repeats):  # fast and dense calls interleaved, same cameras and texts
        for kind in ("fast", "fast_warm", "fast_surface", "dense")[:4 if i < dense_repeats else 3]:
            text = texts[(i + (kind == "fast_warm")) % len(texts)]  # warm: another text at the camera just asked
            end_to_end[kind].append(timed_query(memory, camera_list[i % len(camera_list)], scale, text_model, text,
                                                kind == "dense", warm=kind == "fast_warm",
                                                centre=kind != "fast_surface"))
    def of(name: str, which: list[dict]) -> dict:
        return stats([r[name] for r in which], [r[name + "_cpu"] for r in which])

    def calls(kind: str, n: int | None = None) -> dict:
        return stats([w for w, _ in end_to_end[kind][:n]], [c for _, c in end_to_end[kind][:n]])

    res = {name: of(name, rows[:repeats]) for name in ("render", "score_fast", "region", "target")}
    res["region_pixels"] = [r["region_pixels"] for r in rows[:repeats]]
    res["object_gaussians"] = [r["object_gaussians"] for r in rows[:repeats]]
    res["text_to_target_fast"] = calls("fast")
    res["text_to_target_fast_warm_camera"] = calls("fast_warm")
    res["text_to_surface_fast"] = calls("fast_surface")
    dense_rows = [r for r in rows if "score_dense" in r]
    if dense_rows:
        res["score_dense"] = of("score_dense", dense_rows)
        res["score_fast_same_queries"] = of("score_fast", dense_rows)
        res["text_to_target_dense"] = calls("dense")
        res["text_to_target_fast_same_queries"] = calls("fast", len(end_to_end["dense"]))
        res["ratio_score_fast_vs_dense_p50"] = res["score_fast_same_queries"]["p50_ms"] / res["score_dense"]["p50_ms"]
        res["ratio_text_to_target_fast_vs_dense_p50"] = (res["text_to_target_fast_same_queries"]["p50_ms"]
                                                         / res["text_to_target_dense"]["p50_ms"])
        res["max_abs_diff"] = max(r["max_abs_diff"] for r in dense_rows)
    return res


def gaussian_query(memory, text_model, repeats: int) -> dict:
    """``api.prepare`` once (what loading does), then ``query_gaussians`` per text: wall and CPU ms."""
    from m3_memory.query.api import prepare, query_gaussians

    t0, c0 = time.perf_counter(), time.process_time()
    prepare(memory)
    out = {"prepare_ms": 1000 * (time.perf_counter() - t0), "prepare_cpu_ms": 1000 * (time.process_time() - c0)}
    ms, cpu = [], []
    for i in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        query_gaussians(memory, TEXTS[i % len(TEXTS)], text_model=text_model)
        ms.append(1000 * (time.perf_counter() - t0))
        cpu.append(1000 * (time.process_time() - c0))
    out["query"] = stats(ms, cpu)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="only the two target (t, d) at 320x240")
    ap.add_argument("--gaussians", type=int, nargs="+", default=[60000, 300000], help="memory sizes (N)")
    ap.add_argument("--banks", nargs="+", default=["iid", "decaying"], choices=["iid", "decaying"])
    ap.add_argument("--targets", nargs="+", default=["2000x768", "8000x1152"], help="target (t, d) as TxD")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--dense-repeats", type=int, default=3)
    ap.add_argument("--dense-budget", type=float, default=30.0, help="skip a dense run estimated over this (s)")
    ap.add_argument("--gaussian-budget", type=float, default=90.0, help="skip the Gaussian-level query over this (s)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--fast-budget", type=float, default=15.0, help="skip an i.i.d. row estimated over this (s)")
    ap.add_argument("--budget-min", type=float, default=60.0, help="start no configuration after this many minutes")
    ap.add_argument("--grid-banks", nargs="+", default=["decaying", "iid"], choices=["iid", "decaying"],
                    help="banks of the rest of the grid (every t, d, N and resolution)")
    ap.add_argument("--scales", type=float, nargs="+", default=[0.25, 1.0], help="render_scale values per row")
    ap.add_argument("--resolutions", nargs="+", default=["320x240", "640x480"], help="grid camera sizes as WxH")
    ap.add_argument("--grid-targets", nargs="+", default=None,
                    help="grid (t, d) as TxD (default: every t in 500, 2000, 8000 with d = 768 and 1152)")
    ap.add_argument("--out", default=str(RESULTS / "query_scale.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.targets = [tuple(int(v) for v in x.split("x")) for x in args.targets]

    targets = [(n, (320, 240), t, d) for n in args.gaussians for t, d in ((2000, 768), (8000, 1152))]
    configs = [(kind, *c) for kind in args.banks for c in targets if (c[2], c[3]) in args.targets]
    if not args.quick:
        sizes = [tuple(int(v) for v in x.split("x")) for x in args.resolutions]
        pairs = ([tuple(int(v) for v in x.split("x")) for x in args.grid_targets] if args.grid_targets
                 else [(t, d) for d in (768, 1152) for t in (500, 2000, 8000)])
        grid = [(n, res, t, d) for n in args.gaussians for res in sizes for t, d in pairs]
        configs += [x for x in ((kind, *c) for kind in args.grid_banks for c in grid) if x not in configs]
    result = {"bench": "query_scale", "device": "cpu", "threads": args.threads, "platform": platform.platform(),
              "cpu_count": os.cpu_count(), "torch": torch.__version__, "l": L, "repeats": args.repeats,
              "dense_repeats": args.dense_repeats, "dense_budget_s": args.dense_budget,
              "method": "wall time (perf_counter) and this process's CPU time (process_time, all threads) per "
                        "stage and call, after one warm-up query per configuration; p50/p95 over the repeats "
                        "(3 camera poses, 5 texts in turn; 3 and 1 dense when the warm-up took over 5 s); random "
                        "memory, banks and texts (see the module doc); load average (os.getloadavg: 1, 5, 15 min) "
                        "recorded before and after each row, uptime at the start and end",
              "uptime_start": uptime(), "rows": [], "not_run": []}
    rate = 7e9  # dense multiply-adds per second: a first guess (1 thread, loaded machine), then measured
    memories: dict = {}
    start = time.perf_counter()
    for kind, n, (w, h), t, d in configs:
        if time.perf_counter() - start > 60 * args.budget_min:
            result["not_run"].append({"bank": kind, "gaussians": n, "width": w, "height": h, "t": t, "d": d,
                                      "why": f"over the bench's wall-time budget of {args.budget_min} min"})
            continue
        key = (kind, n, t, d)
        fresh = key not in memories
        if fresh:
            memories.clear()
            memories[key] = random_memory(n, t, d, kind)
        memory, text_model = memories[key]
        cams = cameras(w, h)
        gaussian = None
        if fresh:  # the Gaussian-level query and what loading would prepare for it (as the query node does)
            est = n * t * (d + L) / rate
            gaussian = (gaussian_query(memory, text_model, args.repeats) if est <= args.gaussian_budget
                        else {"skipped": f"prepare estimated {est:.0f} s > budget {args.gaussian_budget:.0f} s"})
            print("  gaussian query", gaussian, flush=True)
            prepared = "prepare_ms" in gaussian  # for every row of this memory
        for scale in args.scales:
            load_before = os.getloadavg()
            pixels = int(w * scale) * int(h * scale)
            macs = pixels * t * (d + L)
            dense_est = None if rate is None else macs / rate
            dense_ok = dense_est is None or dense_est <= args.dense_budget
            if kind == "iid" and dense_est is not None and dense_est > args.fast_budget:  # flat spectrum: fast ~ dense
                result["not_run"].append({"bank": kind, "gaussians": n, "width": w, "height": h, "t": t, "d": d,
                                          "render_scale": scale, "why": f"estimated {dense_est:.0f} s per scoring call "
                                          f"> {args.fast_budget:.0f} s (an i.i.d. bank's fast scores cost about a "
                                          "dense decode)"})
                continue
            t0 = time.perf_counter()
            one_query(memory, cams[0], scale, text_model, "warm up", dense=False)
            slow = time.perf_counter() - t0 > 5
            repeats, dense_repeats = (3, 1) if slow else (args.repeats, args.dense_repeats)
            row = {"bank": kind, "gaussians": n, "width": w, "height": h, "t": t, "d": d, "render_scale": scale,
                   "pixels": pixels, "load_before": load_before,
                   "prepared": prepared}
            res = run_config(memory, cams, scale, text_model, repeats, dense_repeats if dense_ok else 0)
            if "score_dense" in res:
                rate = macs / (res["score_dense"]["p50_ms"] / 1000)
            if not dense_ok:
                res["dense_skipped"] = f"estimated {dense_est:.0f} s per call > budget {args.dense_budget:.0f} s"
            row.update(res)
            row["load_after"] = os.getloadavg()
            result["rows"].append(row)
            print(json.dumps({k: row[k] for k in ("bank", "gaussians", "width", "t", "d", "render_scale")}),
                  {k: (round(v["p50_ms"]), round(v["p95_ms"])) for k, v in res.items() if isinstance(v, dict)},
                  res.get("ratio_text_to_target_fast_vs_dense_p50"), res.get("max_abs_diff"), flush=True)
        if gaussian is not None:
            result["rows"][-1]["gaussian_query"] = gaussian
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1))
    result["uptime_end"] = uptime()
    Path(args.out).write_text(json.dumps(result, indent=1))
    plot(result, Path(args.out).with_suffix(".png"))


def plot(result: dict, path: Path) -> None:
    """Text -> 3D target p95 at the 320x240 camera, 60k Gaussians: cold and warm camera, surface only,
    dense; one panel per render_scale in the run, the targets as lines. CPU milliseconds of the
    process (about an idle core's wall time for a 1-thread run; wall times on the shared machine
    are several times longer), a dot at the cold query's min where recorded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["rows"] if r["gaussians"] == 60000 and r["width"] == 320]
    scales = sorted({r["render_scale"] for r in rows}, reverse=True)
    if not rows:
        return
    fig, axes = plt.subplots(1, len(scales), figsize=(5.5 * len(scales), 3.8), sharey=True, squeeze=False)
    bars = (("text_to_target_fast", "cold camera"), ("text_to_target_fast_warm_camera", "warm camera"),
            ("text_to_surface_fast", "cold, surface only"), ("text_to_target_dense", "dense decode, cold"))
    for ax, scale in zip(axes[0], scales):
        sub = [r for r in rows if r["render_scale"] == scale]
        x = np.arange(len(sub))
        for j, (key, label) in enumerate(bars):
            ax.bar(x + 0.2 * (j - 1.5), [r[key]["cpu_p95_ms"] if key in r else 0 for r in sub], 0.2, label=label)
        lows = [(i, r["text_to_target_fast"]["cpu_min_ms"]) for i, r in enumerate(sub) if "cpu_min_ms" in r["text_to_target_fast"]]
        if lows:
            ax.plot([x[i] - 0.3 for i, _ in lows], [v for _, v in lows], "k.", label="cold, min")
        ax.set_xticks(x, [f"{r['bank']}\nt={r['t']}\nd={r['d']}" for r in sub], fontsize=7)
        ax.set_yscale("log")
        ax.axhline(100, color="k", ls="--", lw=0.8)
        ax.axhline(150, color="k", ls=":", lw=0.8)
        ax.set_title(f"320x240 camera, render_scale {scale}, 60k Gaussians, {result['threads']} thread(s)", fontsize=9)
    axes[0][0].set_ylabel("text -> 3D target, p95 CPU ms")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
