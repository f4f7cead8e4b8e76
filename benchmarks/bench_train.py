"""Training throughput (audio-seconds per second) of one CPC step, fp32 and bf16.

    python benchmarks/bench_train.py                 # small preset, all configs
    python benchmarks/bench_train.py --preset paper --negatives cross_batch
    python benchmarks/bench_train.py --vs 6766a5a    # side by side against another commit
    python benchmarks/bench_train.py --profile --negatives cross_batch --precision bf16

Config as in the issue: batch 8 x 20480 samples (10.24 s of audio per step), GRU 256,
12 steps. Prints seconds per step, audio-s/s, GFLOP per step (torch's flop counter:
matmuls and convolutions, forward + backward), achieved GFLOP/s and its fraction of the
measured matmul peak in the same precision, and the process's peak memory.

``--vs REF`` checks REF out into a temporary git worktree (removed afterwards) and
times the same step (this file's ``make_step``) with both trees' ``cpc_seq``, in
alternating subprocesses with the same interpreter: ``--reps`` pairs, each process
timing ``--inner`` steps after two warm-up steps. It prints both medians, the median of
the per-pair ratios, and both trees' loss at the first step (same seed, same init,
same negatives), which must agree within ``--loss-tol``. % of peak uses the reference
tree's FLOP count for both (the model's FLOPs, not whatever a tree executes).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


sys.path.insert(0, str(HERE))
from common import root_from_argv  # noqa: E402

# worker processes (--root DIR) import the cpc_seq of the tree they time
sys.path.insert(0, str(root_from_argv(sys.argv, HERE.parent)))

import torch  # noqa: E402
from common import (  # noqa: E402
    count_flops,
    describe_trees,
    matmul_peak,
    matmul_peak_cpu,
    memory_as_the_cli_runs,
    peak_rss_mib,
    profile_table,
    ref_worktree,
    run_json_worker,
    run_times2,
    time_it,
)


def make_step(preset: str, negatives: str, n_neg: int, bf16: bool, batch: int, window: int,
              n_steps: int, losses: list[float] | None = None):
    """One training step (forward, k-step InfoNCE, backward, clip, Adam) as a closure,
    with the tree's own optimizer, in a process whose CPU memory is handled as
    ``cpc-seq audio train`` handles it.

    Seeded: the same model init, input and negatives in every tree. If ``losses`` is
    given, every step appends its loss to it.
    """
    try:
        from cpc_seq.audio.model.cpc import ModelConfig, build_model
    except ImportError:  # trees before audio/model/ was a package
        from cpc_seq.audio.model import ModelConfig, build_model
    from cpc_seq.losses import kstep_infonce

    memory_as_the_cli_runs()
    torch.manual_seed(0)
    model = build_model(ModelConfig(encoder=preset, n_steps=n_steps))
    try:  # the tree's own optimizer, as its engine builds it
        from cpc_seq.engine.schedule import adam
        opt = adam(model.parameters(), lr=1e-4)
    except ImportError:  # older trees: plain Adam
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
        if losses is not None:
            losses.append(float(out.loss))

    return step


def _worker(args: argparse.Namespace) -> None:
    """Time one config in this process and print one JSON line."""
    import cpc_seq

    torch.set_num_threads(args.threads)
    losses: list[float] = []
    step = make_step(args.preset, args.negatives, args.n_negatives, args.precision == "bf16",
                     args.batch, args.window, args.steps, losses)
    step()  # warm-up, and the first step's loss: same init, input and negatives in every tree
    loss0 = losses[0]
    flops = count_flops(step) if args.flops else 0
    wall, cpu = run_times2(step, warmup=0, reps=args.inner)
    print(json.dumps({"wall": statistics.median(wall), "cpu": statistics.median(cpu),
                      "times": wall, "loss0": loss0,
                      "loss_last": losses[-1], "flops": flops, "cpc_seq": cpc_seq.__file__,
                      "rss_mib": peak_rss_mib()}), flush=True)


def _run_worker(root: Path, args: argparse.Namespace, neg: str, prec: str, flops: bool) -> dict:
    cmd = [sys.executable, str(HERE / "bench_train.py"), "--worker", "--root", str(root),
           "--preset", args.preset, "--negatives", neg, "--precision", prec,
           "--n-negatives", str(args.n_negatives), "--batch", str(args.batch),
           "--window", str(args.window), "--steps", str(args.steps),
           "--threads", str(args.threads), "--inner", str(args.inner)]
    if flops:
        cmd.append("--flops")
    return run_json_worker(cmd, root, args.threads)


def _side_by_side(args: argparse.Namespace) -> None:
    repo = HERE.parent
    with ref_worktree(repo, args.vs, args.ref_dir) as ref_dir:
        torch.set_num_threads(args.threads)
        peaks = {"wall": {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)},
                 "cpu": {"fp32": matmul_peak_cpu(torch.float32),
                         "bf16": matmul_peak_cpu(torch.bfloat16)}}
        print(f"torch {torch.__version__}, {args.threads} threads; preset {args.preset}, batch "
              f"{args.batch} x {args.window}, K={args.steps}; {describe_trees(repo, ref_dir, args.vs)}"
              f"; {args.reps} alternating process pairs x {args.inner} steps")
        for clock in ("wall", "cpu"):
            print(f"matmul peak (2048^2, {args.threads} threads, by {clock} time): fp32 "
                  f"{peaks[clock]['fp32']:.0f}, bf16 {peaks[clock]['bf16']:.0f} GFLOP/s")
        print(f"load average before: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
        audio = args.batch * args.window / 16000
        print("| negatives | precision | clock | ref s/step | new s/step | speed-up (median of "
              "pair ratios, range) | new audio-s/s | ref % of peak | new % of peak | "
              "loss at step 1 ref / new | within tol |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        ok = True
        for neg in args.negatives.split(","):
            for prec in args.precision.split(","):
                runs: list[dict[str, dict]] = []
                for rep in range(args.reps):
                    pair = [("ref", ref_dir), ("new", repo)]
                    if rep % 2:
                        pair.reverse()  # alternate which tree goes first
                    runs.append({name: _run_worker(root, args, neg, prec, flops=rep == 0)
                                 for name, root in pair})
                flops = runs[0]["ref"]["flops"] / 1e9
                loss_ref, loss_new = runs[0]["ref"]["loss0"], runs[0]["new"]["loss0"]
                tol = args.loss_tol * (1 if prec == "fp32" else args.bf16_tol_factor)
                close = abs(loss_ref - loss_new) <= tol * max(1.0, abs(loss_ref))
                ok &= close
                for clock in ("wall", "cpu"):
                    ref_t = [r["ref"][clock] for r in runs]
                    new_t = [r["new"][clock] for r in runs]
                    ratios = [a / b for a, b in zip(ref_t, new_t)]
                    r_med, n_med = statistics.median(ref_t), statistics.median(new_t)
                    pk = peaks[clock][prec]
                    print(f"| {neg} | {prec} | {clock} | {r_med:.3f} | {n_med:.3f} | "
                          f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f}) | "
                          f"{audio / n_med:.1f} | {100 * flops / r_med / pk:.0f} % | "
                          f"{100 * flops / n_med / pk:.0f} % | {loss_ref:.6f} / {loss_new:.6f} | "
                          f"{'yes' if close else 'NO'} (rel {tol:g}) |", flush=True)
        print(f"GFLOP/step {flops:.1f} (reference tree, torch flop counter); load average after: "
              f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if not ok:
        raise SystemExit("error: loss values differ beyond the tolerance")


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
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--vs", metavar="REF", help="time against this git ref, side by side")
    ap.add_argument("--ref-dir", help="worktree path for --vs (default: a fresh temp dir)")
    ap.add_argument("--inner", type=int, default=3, help="--vs: timed steps per process")
    ap.add_argument("--loss-tol", type=float, default=1e-5,
                    help="--vs: relative tolerance of the first-step loss in fp32")
    ap.add_argument("--bf16-tol-factor", type=float, default=100.0,
                    help="--vs: bf16 tolerance = loss-tol x this (bf16 rounding; 1e-3)")
    ap.add_argument("--profile", action="store_true",
                    help="print torch.profiler's op table for each config instead of timing")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--root", help=argparse.SUPPRESS)
    ap.add_argument("--flops", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    for p in args.precision.split(","):
        if p not in ("fp32", "bf16"):
            ap.error(f"--precision: unknown {p!r} (fp32, bf16)")
    if args.worker:
        _worker(args)
        return
    if args.vs:
        _side_by_side(args)
        return
    torch.set_num_threads(args.threads)
    if args.profile:
        for neg in args.negatives.split(","):
            for prec in args.precision.split(","):
                print(f"## {args.preset}, {neg}, {prec}, {torch.get_num_threads()} threads")
                print(profile_table(make_step(args.preset, neg, args.n_negatives, prec == "bf16",
                                              args.batch, args.window, args.steps),
                                    reps=args.reps), flush=True)
        return
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
