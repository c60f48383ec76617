"""``m3 query``: text -> heatmap -> 3D target (argparse only; the handler imports the heavy modules)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from m3_memory.device import add_device_option
from m3_memory.errors import InputError
from m3_memory.outputs import MB, beside, check_output

QUERY_OUTPUT_BYTES = 16 * MB  # heatmap.png, target.ply, eval.json and eval.png: a few MB at most


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``m3 query`` to the ``m3`` parser."""
    p = sub.add_parser("query", help="find a text in a memory: heatmap, 3D target, highlighted Gaussians")
    p.add_argument("memory", help="the *.m3 memory")
    p.add_argument("text", help='what to find, e.g. "yellow bath duck"')
    where = p.add_mutually_exclusive_group()
    where.add_argument("--view", type=int, help="ask from the memory's source camera N (see meta.json cameras)")
    where.add_argument("--pose", help="camera pose file: JSON {T_world_cam, K, width, height} or 16 numbers (4x4)")
    p.add_argument("--depth", help="live depth registered to the camera: .npy float32 metres or 16-bit PNG millimetres")
    p.add_argument("--depth-scale", type=float, metavar="M", help="metres per step of a --depth PNG (default: 0.001; "
                   "needed for an 8-bit PNG)")
    p.add_argument("--method", default="relevancy", choices=["relevancy", "cosine"])
    p.add_argument("--gaussians", action="store_true", help="query the Gaussians in 3D instead of rendering a view")
    p.add_argument("--model", default="clip", help="which of the memory's models answers (default: clip)")
    p.add_argument("--weights", help="the text model's weights file, when the memory was built from one")
    p.add_argument("--out", help="folder for heatmap.png and target.ply (default: <memory>_query beside the memory)")
    p.add_argument("--explain", action="store_true", help="also write explain.png: the query view, the heatmap and the "
                   "source patches memory attention drew on for the target, with their weights")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    add_device_option(p)
    p.set_defaults(func=cmd_query)

    p = sub.add_parser("eval", help="held-out feature fidelity and text grounding: the model's 2D maps vs the memory")
    p.add_argument("memory", help="the *.m3 memory (with --labels: a memory, whose source and training config are used, "
                   "or a recording, built with the fast preset)")
    p.add_argument("--masks", help="recording with object masks, the memory's source (default: meta.json source)")
    p.add_argument("--mask-source", default="auto", choices=["auto", "recording", "segm"],
                   help="APC scenes: segm/ label images (auto: when present) or the recording's conservative masks/")
    p.add_argument("--views", default="test", choices=["test", "all"], help="held-out views (default) or all")
    p.add_argument("--model", default="clip", help="which of the memory's models is evaluated (default: clip)")
    p.add_argument("--weights", help="the model's weights file, when the memory was built from one")
    p.add_argument("--baseline", action="store_true",
                   help="also train a Feature-3DGS-style distillation baseline with the memory's own budget (as long as "
                   "the build took) and report it as a third row")
    p.add_argument("--baseline-dim", type=int, default=64, metavar="L",
                   help="the baseline's per-Gaussian feature dimension (default: 64)")
    p.add_argument("--labels", action="store_true",
                   help="grounding without a downloaded model: build a memory from region-embedding maps of the "
                   "recording's label images and score label IoU and 3D target error (labels.json, labels.png)")
    p.add_argument("--iterations", type=int, help="--labels: training iterations (default: the memory's, or the fast "
                   "preset's for a recording)")
    p.add_argument("--label-stride", type=int, default=8, metavar="S",
                   help="--labels: image pixels per feature-map pixel (default: 8)")
    p.add_argument("--label-dim", type=int, default=64, metavar="D", help="--labels: embedding dimension (default: 64)")
    p.add_argument("--out", help="folder for eval.json and eval.png (default: <memory>_eval beside the memory)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    add_device_option(p)
    p.set_defaults(func=cmd_eval)


def _read_depth(path: str, metres_per_unit: float | None):
    """``--depth``: .npy float32 metres, or a 16-bit PNG (millimetres unless ``--depth-scale``) -> [H, W] m."""
    from m3_memory.recording.images import read_depth

    if not Path(path).is_file():
        raise InputError(path, "depth file does not exist" if not Path(path).is_dir() else "is a folder, not a depth image")
    return read_depth(path, metres_per_unit)


def cmd_query(args: argparse.Namespace) -> int:
    import numpy as np

    from m3_memory.device import use_device
    from m3_memory.memory.artifact import load_memory, write_ply
    from m3_memory.query.api import QueryConfig, find_in_memory, gaussians_in_box, prepare, query_gaussians, query_text, text_model_for
    from m3_memory.query.camera import Camera, read_pose_file
    from m3_memory.query.picture import heatmap_overlay

    out = check_output(args.out or beside(args.memory, "query"), allow_existing=True, need_bytes=QUERY_OUTPUT_BYTES)
    if args.depth_scale is not None and not (math.isfinite(args.depth_scale) and args.depth_scale > 0):
        raise InputError("--depth-scale", f"must be a positive number of metres, got {args.depth_scale}")
    if args.depth and args.view is None and args.pose is None:
        raise InputError("--depth", "needs the camera it was taken from (--view or --pose)")
    device = use_device(args.device, "query")
    memory = load_memory(args.memory)
    config = QueryConfig(model=args.model, method=args.method, device=str(device))
    text_model = text_model_for(memory, args.model, args.weights, str(device))
    prepare(memory, config, gaussians=args.gaussians)  # a text query scores only the Gaussians near its target
    camera = None
    if args.gaussians:
        result = query_gaussians(memory, args.text, config, text_model)
    elif args.view is not None or args.pose is not None:
        if args.view is not None:
            if not 0 <= args.view < len(memory.cameras):
                raise InputError("--view", f"{args.view} is not a source camera of this memory (0..{len(memory.cameras) - 1})")
            camera = Camera.from_view(memory.cameras[args.view])
        else:
            camera = read_pose_file(args.pose, memory.cameras[0] if memory.cameras else None)
        depth = _read_depth(args.depth, args.depth_scale) if args.depth else None
        result = query_text(memory, args.text, camera, depth, config, text_model)
    else:
        result = find_in_memory(memory, args.text, config, text_model)
        camera = next((Camera.from_view(c) for c in memory.cameras if result.T_world_cam is not None
                       and np.array_equal(c.T_world_cam, result.T_world_cam)), None)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    if camera is not None:
        heatmap_overlay(memory, camera, result, out / "heatmap.png")
        files.append(out / "heatmap.png")
    if result.found:
        idx = result.gaussians if len(result.gaussians) else (gaussians_in_box(memory, result.box) if result.box else [])
        if len(idx):
            write_ply(out / "target.ply", memory.gaussians.subset(np.asarray(idx)))
            files.append(out / "target.ply")
    trace = _explain(memory, result, camera, args.model, out) if args.explain else None
    if trace is not None:
        files.append(out / "explain.png")
    for warning in result.warnings:
        print(f"m3: warning: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps({**result.to_json(), "files": [str(f) for f in files],
                          **({"trace": trace.to_json()} if trace is not None else {})}, indent=1))
    else:
        print(result.message)
        if trace is not None:
            print(f"trace: {trace.message}")
        if result.found:
            print(f"target (memory frame, m): [{', '.join(f'{v:.3f}' for v in result.point_world)}]")
        for f in files:
            print(f"wrote {f}")
    return 0 if result.found else 1  # like grep: 1 = nothing relevant found


def _explain(memory, result, camera, model: str, out: Path):
    """``--explain``: trace the target and write ``explain.png``; returns the trace."""
    from m3_memory.query.explain import explain_result, explain_sheet

    trace = explain_result(memory, result, camera, model)
    explain_sheet(memory, camera, result, trace, out / "explain.png")
    return trace


def _baseline(memory, recording: str, model, feature_dim: int, device):
    from m3_memory.query.eval import Distilled
    from m3_memory.training.distill import memory_budget, train_baseline

    cfg = memory_budget(memory)
    print(f"training the distillation baseline (l={feature_dim}, {cfg.iterations} iterations) on {recording}",
          file=sys.stderr)
    trainer, _ = train_baseline(recording, cfg, [model], feature_dim, device=device)
    return Distilled(trainer, model.name)


def cmd_eval_labels(args: argparse.Namespace) -> int:
    """``m3 eval --labels``: the region-embedding protocol (:mod:`m3_memory.query.labels`)."""
    from m3_memory.device import use_device
    from m3_memory.query.labels import LabelMapConfig, label_eval
    from m3_memory.training.config import TrainConfig

    args.out = str(check_output(args.out or beside(args.memory, "eval"), allow_existing=True,
                                need_bytes=QUERY_OUTPUT_BYTES))
    for name, value, low in (("--iterations", args.iterations, 1), ("--label-stride", args.label_stride, 1),
                             ("--label-dim", args.label_dim, 2)):
        if value is not None and value < low:
            raise InputError(name, f"must be >= {low}, got {value}")
    target = Path(args.memory)
    if (target / "meta.json").is_file():
        from m3_memory.memory.artifact import load_memory
        from m3_memory.training.distill import memory_budget

        memory = load_memory(target)
        source, config = args.masks or memory.source, memory_budget(memory)
        if not source:
            raise InputError(args.memory, "names no source recording; pass --masks RECORDING")
    else:
        source, config = args.masks or args.memory, TrainConfig.fast()
    if not Path(source).exists():
        raise InputError(source, "recording with the labels does not exist")
    if args.iterations:
        config = config.with_(iterations=args.iterations)
    device = use_device(args.device, "eval")
    raw, mem, about = label_eval(source, args.out, config, LabelMapConfig(args.label_stride, args.label_dim),
                                 args.mask_source, args.views, device=str(device))
    if args.json:
        print(json.dumps({**about, "rows": [{k: v for k, v in r.to_json().items() if k != "targets"} for r in (raw, mem)],
                          "mIoU_vs_raw": mem.mIoU / raw.mIoU if raw.mIoU else None}, indent=1))
    else:
        print(f"{about['views']} {args.views} views, labels {', '.join(about['labels'])}; memory of {about['iterations']} "
              f"iterations, {about['gaussians']} Gaussians")
        for r in (raw, mem):
            ious = ", ".join(f"{k} {v:.3f}" for k, v in r.iou.items())
            print(f"  {r.name:16s} mIoU {r.mIoU:.3f} (objects), accuracy {r.accuracy:.3f}; IoU {ious}")
        if raw.mIoU:
            print(f"  memory / raw maps mIoU: {mem.mIoU / raw.mIoU:.3f}")
        for key, what in (("error", "memory depth"), ("error_real_depth", "real depth")):
            t = mem.target_summary(key)
            if t["pairs"]:
                print(f"  3D target error ({what} over the memory's region): median {t['median'] * 100:.2f} cm, worst "
                      f"{t['worst'] * 100:.2f} cm over {t['pairs']} (view, object) pairs, {t['missed']} missed")
        print(f"wrote {Path(args.out) / 'labels.json'}, {Path(args.out) / 'labels.png'} (memory {about['memory']})")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    if args.labels:
        return cmd_eval_labels(args)
    from m3_memory.device import use_device
    from m3_memory.memory.artifact import load_memory
    from m3_memory.query.api import text_model_for
    from m3_memory.query.eval import MemoryMaps, RawMaps, apc_segm_masks, evaluate, heldout_views, image_cells, write_report
    from m3_memory.recording import open_recording

    args.out = str(check_output(args.out or beside(args.memory, "eval"), allow_existing=True,
                                need_bytes=QUERY_OUTPUT_BYTES))
    if args.baseline_dim < 1:
        raise InputError("--baseline-dim", f"must be >= 1, got {args.baseline_dim}")
    device = use_device(args.device, "eval")
    memory = load_memory(args.memory)
    text_model = text_model_for(memory, args.model, args.weights, str(device))
    source = args.masks or memory.source
    if not source:
        raise InputError(args.memory, "names no source recording; pass --masks RECORDING")
    if not Path(source).exists():
        raise InputError(source, "recording with the masks does not exist (pass --masks RECORDING)")
    recording = open_recording(source)
    frames = list(recording)
    segm = Path(source) / "segm"
    use_segm = args.mask_source == "segm" or (args.mask_source == "auto" and recording.format_name == "apc2016"
                                               and segm.is_dir())
    if use_segm:
        for frame, masks in zip(frames, apc_segm_masks(source, frames)):
            frame.masks = masks
    views = heldout_views(memory, frames, args.views)
    predictors = [RawMaps(text_model), MemoryMaps(memory, args.model, device=str(device))]
    if args.baseline:
        predictors.append(_baseline(memory, source, text_model, args.baseline_dim, device))
    rows = evaluate(predictors, views, text_model, text_model.canonical_negatives)
    about = {"memory": str(args.memory), "recording": str(source), "model": text_model.checkpoint, "views": len(views),
             "split": args.views, "masks": "segm" if use_segm else "recording"}
    json_path, png_path = write_report(rows, args.out, about)
    if args.json:
        print(json.dumps({**about, "rows": [{k: v for k, v in r.to_json().items() if k != "pairs"} for r in rows]}, indent=1))
    else:
        print(f"{len(views)} {args.views} views, {rows[0].paper.pairs} (view, object) pairs; grounding: cosine + Otsu "
              "(paper), relevancy + Otsu + largest component (query)")
        print(f"  {'row':14s} {'params':>10s} {'PSNR':>6s} {'SSIM':>6s} {'LPIPS':>6s} {'cos':>6s} {'L2':>6s} {'mIoU':>6s} "
              f"{'cIoU':>6s} {'AP50':>5s} {'AP60':>5s} {'mIoU (query)':>12s} {'I2T@1/5/10':>15s} {'T2I@1/5/10':>15s}")
        for r in rows:
            params = "-" if r.parameters is None else f"{r.parameters / 1e6:.2f} M"
            psnr, ssim, lpips = image_cells(r.image)
            i2t, t2i = ("/".join(f"{r.retrieval[f'{d}@{k}']:.2f}" for k in (1, 5, 10)) for d in ("I2T", "T2I"))
            print(f"  {r.name:14s} {params:>10s} {psnr:>6s} {ssim:>6s} {lpips:>6s} {r.cosine:6.3f} {r.l2:6.3f} "
                  f"{r.paper.mIoU:6.3f} {r.paper.cIoU:6.3f} {r.paper.AP50:5.2f} {r.paper.AP60:5.2f} {r.query.mIoU:12.3f} "
                  f"{i2t:>15s} {t2i:>15s}")
        unavailable = next((r.image["lpips_unavailable"] for r in rows if r.image and r.image.get("lpips_unavailable")), None)
        if unavailable:
            print(f"LPIPS not measured: {unavailable}")
        print(f"wrote {json_path}, {png_path}")
    return 0
