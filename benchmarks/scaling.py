"""How the training-step cost grows with batch size, window, number of negatives and K.

    python benchmarks/scaling.py --out docs/scaling      # writes docs/scaling.md and .png

Each sweep varies one factor around the base config (small preset, batch 8, window 20480,
128 cross-batch negatives, K=12) in fp32 and bf16 autocast and reports seconds per step
(CPU time of this process: on a shared machine wall time mostly measures the other
jobs; with one thread CPU time is the step's own cost), the wall time alongside, and
audio-s/s by CPU time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import os  # noqa: E402

from bench_train import make_step  # noqa: E402
from common import run_times2  # noqa: E402

BASE = {"batch": 8, "window": 20480, "n_neg": 128, "n_steps": 12}
SWEEPS = {
    "batch": [2, 4, 8, 16],
    "window": [5120, 10240, 20480, 40960],
    "n_neg": [16, 64, 128, 512],
    "n_steps": [2, 4, 8, 12, 16],
}


def growth_lines(rows: list[tuple], precisions: list[str]) -> list[str]:
    """How the step cost grows along each sweep: from its smallest to its largest value,
    the factor's ratio, the cost's ratio and the log-log slope (1 = linear, 2 = quadratic)."""
    import math

    out = ["How the cost grows (smallest to largest value of each sweep; slope = "
           "log(cost ratio) / log(factor ratio): 0 = flat, 1 = linear, 2 = quadratic):", ""]
    for factor, values in SWEEPS.items():
        lo, hi = min(values), max(values)
        parts = []
        for prec in precisions:
            cost = {v: s for f, v, p, s, *_ in rows if f == factor and p == prec}
            ratio = cost[hi] / cost[lo]
            parts.append(f"{prec} x{ratio:.2f} (slope {math.log(ratio) / math.log(hi / lo):.2f})")
        out.append(f"- {factor} {lo} -> {hi} (x{hi / lo:g}): " + ", ".join(parts))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--precision", default="fp32,bf16", help="comma-separated: fp32, bf16")
    ap.add_argument("--out", default="docs/scaling")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    precisions = args.precision.split(",")
    bad = [p for p in precisions if p not in ("fp32", "bf16")]
    if bad:
        ap.error(f"--precision: unknown {', '.join(bad)} (fp32, bf16)")
    rows = []
    for factor, values in SWEEPS.items():
        for v in values:
            cfg = {**BASE, factor: v}
            audio = cfg["batch"] * cfg["window"] / 16000
            for prec in precisions:
                step = make_step(args.preset, "cross_batch", cfg["n_neg"], prec == "bf16",
                                 cfg["batch"], cfg["window"], cfg["n_steps"])
                wall, times = run_times2(step, warmup=1, reps=args.reps)
                sec = statistics.median(times)
                spread = (max(times) - min(times)) / sec
                rows.append((factor, v, prec, sec, audio / sec, spread, statistics.median(wall)))
                print(f"{factor}={v} {prec}: {sec:.3f} CPU-s/step, {audio / sec:.1f} audio-s/s "
                      f"(spread {100 * spread:.0f} %, wall {statistics.median(wall):.3f} s)",
                      flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    lines = [f"Training-step cost (forward, loss, backward, Adam step), {args.preset} preset, "
             f"{torch.get_num_threads()} thread(s), median of {args.reps} steps after one warm-up "
             f"(`OMP_NUM_THREADS={torch.get_num_threads()} python benchmarks/scaling.py --reps "
             f"{args.reps}`), in CPU seconds of the process (wall seconds alongside; load "
             f"average {load} when the sweep ended, its own threads included). Base: "
             + ", ".join(f"{k}={v}" for k, v in BASE.items())
             + ", cross-batch negatives. Spread = (slowest - fastest) / median of the CPU times.",
             "", "| factor | value | precision | CPU-s/step | audio-s/s (CPU) | spread | wall s/step |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {f} | {v} | {p} | {s:.3f} | {a:.1f} | {100 * sp:.0f} % | {w:.3f} |"
              for f, v, p, s, a, sp, w in rows]
    lines += ["", *growth_lines(rows, precisions)]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(14, 3.2))
    for ax, factor in zip(axes, SWEEPS):
        for prec in precisions:
            pts = [(v, s) for f, v, p, s, *_ in rows if f == factor and p == prec]
            ax.plot([q[0] for q in pts], [q[1] for q in pts], "o-", label=prec)
        ax.set_xlabel(factor)
        ax.set_ylabel("CPU s / step")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"CPC training step cost ({args.preset} preset; base: "
                 + ", ".join(f"{k}={v}" for k, v in BASE.items()) + ")")
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=90)
    print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
