"""The compositor alone, today's source against this tree's, on training renders.

Both ``csrc/composite.cpp`` versions (the baseline commit's, via ``git show``, and this tree's)
are compiled with the same flags (this tree's ``render.cpu.flags()``) into a temporary folder and called through ctypes on the
same inputs: the packed splats of a training render (fast preset, 320x240, 3 colour + 16 query
channels) of the APC shelf scene and of the 48-frame synthetic scan, with output gradients
shaped like training's (colour and alpha at every pixel, queries at the feature loss's 2000
sampled pixels). CPU seconds per call at one OpenMP thread (so a loaded machine inflates
neither), mean of 3 after a warm-up; the two versions' outputs and gradients are compared.

    python bench/composite_kernel.py    # writes bench/results/composite_kernel.json
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
REALDATA = ROOT.parent / "shared" / "realdata"
APC_SCENE = Path("apc2016_realsense_shelf") / "data" / "sample" / "scene-0000"
BASELINE = "b3670da"
sys.path.insert(0, str(ROOT))


def compile_source(source: str, target: Path) -> ctypes.CDLL:
    from m3_memory.render.cpu import flags

    src = target.with_suffix(".cpp")
    src.write_text(source)
    subprocess.run(["g++", *flags(), "-o", str(target), str(src)], check=True)
    lib = ctypes.CDLL(str(target))
    f, i = ctypes.c_void_p, ctypes.c_int
    lib.m3_composite_forward.argtypes = [i, i, i, i] + [f] * 8
    lib.m3_composite_backward.argtypes = [i, i, i, i] + [f] * 13
    return lib


def training_render(recording: Path, cache: Path) -> list:
    """The compositor's inputs for the first training view of ``recording`` at the start of training."""
    import m3_memory.render.cpu as cpu
    from m3_memory.foundation import load_model
    from m3_memory.training.build import prepare
    from m3_memory.training.config import TrainConfig
    from m3_memory.training.trainer import Trainer, scene_extent

    cfg = TrainConfig.fast()
    prep = prepare(recording, cfg, [load_model("clip-fixture")], cache, show_progress=False)
    trainer = Trainer(prep.gaussians, prep.banks, prep.slices, cfg, scene_extent(prep.train))
    captured = []
    forward = cpu._Composite.forward

    def capture(ctx, *args):
        captured.extend(a.detach().clone() if hasattr(a, "detach") else a for a in args)
        return forward(ctx, *args)

    cpu._Composite.forward = staticmethod(capture)
    try:
        trainer.render(prep.train[0])
    finally:
        cpu._Composite.forward = staticmethod(forward)
    return captured


def measure(lib: ctypes.CDLL, inputs: list, repeats: int = 3) -> dict:
    import torch

    means2d, conics, opac, feats, extent, width, height = inputs
    n, d = feats.shape
    g = torch.Generator().manual_seed(0)
    grad_out = torch.zeros(height, width, d)
    grad_out[..., :3] = torch.randn(height, width, 3, generator=g) * 1e-4
    picked = torch.randint(height * width, (2000,), generator=g)
    grad_out.view(-1, d)[picked, 3:] = torch.randn(2000, d - 3, generator=g) * 1e-3
    grad_alpha = torch.randn(height, width, generator=g) * 1e-4
    p = lambda t: ctypes.c_void_p(t.data_ptr())  # noqa: E731
    out, alpha = torch.zeros(height, width, d), torch.zeros(height, width)
    last = torch.zeros(height, width, dtype=torch.int32)
    grads = [torch.zeros_like(means2d), torch.zeros_like(conics), torch.zeros_like(opac), torch.zeros_like(feats)]
    fwd = bwd = 0.0
    for r in range(repeats + 1):
        out.zero_()
        c0 = time.process_time()
        lib.m3_composite_forward(n, d, width, height, p(means2d), p(conics), p(opac), p(feats), p(extent), p(out),
                                 p(alpha), p(last))
        c1 = time.process_time()
        lib.m3_composite_backward(n, d, width, height, p(means2d), p(conics), p(opac), p(feats), p(extent), p(alpha),
                                  p(last), p(grad_out), p(grad_alpha), *(p(x) for x in grads))
        c2 = time.process_time()
        if r:
            fwd, bwd = fwd + c1 - c0, bwd + c2 - c1
    return {"forward_cpu_s": fwd / repeats, "backward_cpu_s": bwd / repeats, "out": out, "grads": grads,
            "n": n, "channels": d, "mean_list_entries_per_pixel": float(last.float().mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=BASELINE)
    parser.add_argument("--realdata", type=Path, default=REALDATA)
    parser.add_argument("--out", type=Path, default=RESULTS / "composite_kernel.json")
    args = parser.parse_args()
    if os.environ.get("OMP_NUM_THREADS") != "1":  # libgomp reads it at load: re-run with one thread
        os.execve(sys.executable, [sys.executable, __file__, *sys.argv[1:]], {**os.environ, "OMP_NUM_THREADS": "1"})
    from m3_memory.synth import SynthConfig, write_synthetic

    old = subprocess.run(["git", "show", f"{args.baseline}:m3_memory/render/csrc/composite.cpp"], capture_output=True,
                         text=True, check=True, cwd=ROOT).stdout
    new = (ROOT / "m3_memory" / "render" / "csrc" / "composite.cpp").read_text()
    from m3_memory.render.cpu import flags

    result = {"baseline": args.baseline, "threads": 1, "flags": list(flags()), "load": os.getloadavg(), "scenes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        libs = {"today": compile_source(old, tmp / "today.so"), "new": compile_source(new, tmp / "new.so")}
        scenes = {"synthetic": write_synthetic(tmp / "synth", SynthConfig(n_frames=48), show_progress=False).folder}
        if (args.realdata / APC_SCENE).is_dir():
            scenes["apc"] = args.realdata / APC_SCENE
        for name, recording in scenes.items():
            inputs = training_render(recording, tmp / f"cache_{name}")
            rows = {k: measure(lib, inputs) for k, lib in libs.items()}
            a, b = rows["today"], rows["new"]
            rel = [float((x - y).abs().max() / y.abs().max().clamp_min(1e-12)) for x, y in zip(b["grads"], a["grads"])]
            result["scenes"][name] = {
                **{k: {m: v for m, v in r.items() if m not in ("out", "grads")} for k, r in rows.items()},
                "image_max_abs_difference": float((a["out"] - b["out"]).abs().max()),
                "gradient_max_relative_difference": dict(zip(("means2d", "conics", "opacities", "features"), rel)),
                "speedup_forward": a["forward_cpu_s"] / b["forward_cpu_s"],
                "speedup_backward": a["backward_cpu_s"] / b["backward_cpu_s"],
                "speedup_both": (a["forward_cpu_s"] + a["backward_cpu_s"]) / (b["forward_cpu_s"] + b["backward_cpu_s"])}
            print(name, json.dumps(result["scenes"][name]), flush=True)
    result["load_after"] = os.getloadavg()
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
