"""Training throughput (audio-seconds per second) of one CPC step, fp32 and bf16.

    python benchmarks/bench_train.py                 # small preset, all configs
    python benchmarks/bench_train.py --preset paper --negatives cross_batch

Config as in the issue: batch 8 x 20480 samples (10.24 s of audio per step), GRU 256,
12 steps. Prints seconds per step, audio-s/s, GFLOP per step (torch's flop counter:
matmuls and convolutions, forward + backward), achieved GFLOP/s and its fraction of the
measured matmul peak in the same precision, and the process's peak memory.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import count_flops, matmul_peak, peak_rss_mib, time_it  # noqa: E402

from cpc_seq.audio.model import ModelConfig, build_model  # noqa: E402
from cpc_seq.losses import kstep_infonce  # noqa: E402


def make_step(preset: str, negatives: str, n_neg: int, bf16: bool, batch: int, window: int,
              n_steps: int):
    torch.manual_seed(0)
    model = build_model(ModelConfig(encoder=preset, n_steps=n_steps))
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.randn(batch, window)
    gen = torch.Generator().manual_seed(0)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            z, c, fl = model(x)
            out = kstep_infonce(model.predict(c), z, fl, negatives=negatives,
                                n_negatives=n_neg, generator=gen)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="small", choices=["tiny", "small", "paper"])
    ap.add_argument("--negatives", default="cross_batch,all")
    ap.add_argument("--n-negatives", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--window", type=int, default=20480)
    ap.add_argument("--steps", type=int, default=12, help="prediction steps K")
    ap.add_argument("--precision", default="fp32,bf16")
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    audio = args.batch * args.window / 16000
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; preset {args.preset}, "
          f"batch {args.batch} x {args.window} samples ({audio:.2f} audio-s per step), K={args.steps}")
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    print(f"matmul peak (2048^2): fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s")
    print("| preset | negatives | precision | s/step | audio-s/s | GFLOP/step | GFLOP/s | % of peak |")
    print("|---|---|---|---|---|---|---|---|")
    for neg in args.negatives.split(","):
        for prec in args.precision.split(","):
            step = make_step(args.preset, neg, args.n_negatives, prec == "bf16", args.batch,
                             args.window, args.steps)
            flops = count_flops(step) / 1e9
            sec = time_it(step, reps=args.reps)
            gfs = flops / sec
            print(f"| {args.preset} | {neg} | {prec} | {sec:.3f} | {audio / sec:.1f} | "
                  f"{flops:.1f} | {gfs:.0f} | {100 * gfs / peaks[prec]:.0f} % |", flush=True)
    print(f"peak RSS {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
