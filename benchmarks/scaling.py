"""How the training-step cost grows with batch size, window, number of negatives and K.

    python benchmarks/scaling.py --out docs/scaling      # writes docs/scaling.md and .png

Each sweep varies one factor around the base config (small preset, batch 8, window 20480,
128 cross-batch negatives, K=12, fp32) and reports seconds per step and audio-s/s.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_train import make_step  # noqa: E402
from common import time_it  # noqa: E402

BASE = {"batch": 8, "window": 20480, "n_neg": 128, "n_steps": 12}
SWEEPS = {
    "batch": [2, 4, 8, 16],
    "window": [5120, 10240, 20480, 40960],
    "n_neg": [16, 64, 128, 512],
    "n_steps": [2, 4, 8, 12, 16],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--out", default="docs/scaling")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    rows = []
    for factor, values in SWEEPS.items():
        for v in values:
            cfg = {**BASE, factor: v}
            step = make_step(args.preset, "cross_batch", cfg["n_neg"], args.precision == "bf16",
                             cfg["batch"], cfg["window"], cfg["n_steps"])
            sec = time_it(step, warmup=1, reps=args.reps)
            audio = cfg["batch"] * cfg["window"] / 16000
            rows.append((factor, v, sec, audio / sec))
            print(f"{factor}={v}: {sec:.3f} s/step, {audio / sec:.1f} audio-s/s", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"Training-step cost, {args.preset} preset, {args.precision}, "
             f"{torch.get_num_threads()} threads (`python benchmarks/scaling.py`). Base: "
             + ", ".join(f"{k}={v}" for k, v in BASE.items()), "",
             "| factor | value | s/step | audio-s/s |", "|---|---|---|---|"]
    lines += [f"| {f} | {v} | {s:.3f} | {a:.1f} |" for f, v, s, a in rows]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(14, 3.2))
    for ax, factor in zip(axes, SWEEPS):
        pts = [(v, s) for f, v, s, _ in rows if f == factor]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-")
        ax.set_xlabel(factor)
        ax.set_ylabel("s / step")
        ax.grid(alpha=0.3)
    fig.suptitle(f"CPC training step cost ({args.preset}, {args.precision})")
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=90)
    print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
