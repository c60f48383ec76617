"""Held-out fidelity and grounding (``m3 eval``) on the synthetic tabletop and the real APC shelf.

Memories are built with the fixture CLIP and ``TrainConfig.fast`` (or given); each is evaluated
on its held-out views (every 8th) against its recording's object masks (APC: the ``segm/``
label images). Rows: the fixture's raw 2D maps (upper bound) and the M3 memory; a distillation
baseline is a third predictor (``m3_memory.query.eval.Predictor``) once it exists.

    python bench/eval.py [--synthetic scene.m3] [--apc apc.m3]
    # writes bench/results/eval_synthetic.{json,png} and eval_apc.{json,png}
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
APC = Path(__file__).resolve().parents[2] / "shared" / "realdata" / "apc2016_realsense_shelf" / "data" / "sample" / "scene-0000"


def build(recording: Path, out: Path) -> Path:
    from m3_memory.training.build import build_memory
    from m3_memory.training.config import TrainConfig

    report = build_memory(recording, out, model="clip-fixture", config=TrainConfig.fast(), cache_root=out.parent / "cache",
                          show_progress=False)
    print("\n".join(report.lines()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--synthetic", help="memory of the synthetic scan (48 views, 320x240); default: build one (~4 min)")
    ap.add_argument("--apc", help="memory of the APC scene; default: build one (~5 min)")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()

    import torch

    from m3_memory.cli import main as m3

    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        synthetic = Path(args.synthetic) if args.synthetic else None
        if synthetic is None:
            from m3_memory.synth import SynthConfig, write_synthetic

            scan = write_synthetic(tmp / "synth", SynthConfig(width=320, height=240, n_frames=48), realsense=False,
                                   rosbag2=False, show_progress=False)
            synthetic = build(scan.folder, tmp / "synthetic.m3")
        runs = [("synthetic", synthetic)]
        if args.apc or APC.is_dir():
            runs.append(("apc", Path(args.apc) if args.apc else build(APC, tmp / "apc.m3")))
        else:
            print(f"APC scene not found at {APC}: skipped")
        for name, memory in runs:
            out = tmp / f"eval_{name}"
            if m3(["eval", str(memory), "--out", str(out)]) != 0:
                raise SystemExit(f"m3 eval failed on {memory}")
            target = Path(args.out)
            target.mkdir(parents=True, exist_ok=True)
            for suffix in ("json", "png"):
                (target / f"eval_{name}.{suffix}").write_bytes((out / f"eval.{suffix}").read_bytes())


if __name__ == "__main__":
    main()
