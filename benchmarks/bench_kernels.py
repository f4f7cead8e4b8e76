"""What each CPU speed kernel buys: the kernel against the plain path it replaces.

    OMP_NUM_THREADS=2 python benchmarks/bench_kernels.py --threads 2
    python benchmarks/bench_kernels.py --only encoder,gru --precision fp32

Shapes of one training step of the ``small`` preset (batch 8 x 20480 samples, 256
channels, GRU 256, K = 12, 128 negatives): the encoder, the GRU context and the k-step
loss, each forward + backward, timed with ``model.kernels: auto`` and ``reference``
alternately in one process (``--reps`` rounds, each timing both), plus the whole step
with ``train.cpu_memory: keep`` against ``release`` in alternating subprocesses (the
allocator policy cannot be undone in a process). Prints one markdown row per kernel and
precision: the median seconds of each, and the median and range of the per-round ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def _timed(fn: Callable[[], object], inner: int) -> float:
    t = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - t) / inner


def _encoder(bf16: bool, batch: int, window: int) -> Callable[[str], Callable[[], None]]:
    from cpc_seq.audio.model.encoder import ConvEncoder, paper_layers

    enc = ConvEncoder(paper_layers(256))
    x = torch.randn(batch, window)

    def make(kernels: str) -> Callable[[], None]:
        def run() -> None:
            enc.kernels = kernels
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                z, _ = enc(x)
            z.float().square().mean().backward()
        return run
    return make


def _gru(bf16: bool, batch: int, window: int) -> Callable[[str], Callable[[], None]]:
    from cpc_seq.nn.context import RNNContext

    ctx = RNNContext("gru", 256, 256)
    z = torch.randn(batch, window // 160, 256, requires_grad=True)

    def make(kernels: str) -> Callable[[], None]:
        def run() -> None:
            ctx.kernels = kernels
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                c = ctx(z)
            c.float().square().mean().backward()
        return run
    return make


def _xent(negatives: str) -> Callable[[bool, int, int], Callable[[str], Callable[[], None]]]:
    def build(bf16: bool, batch: int, window: int) -> Callable[[str], Callable[[], None]]:
        from cpc_seq.losses import kstep_infonce

        frames = window // 160
        pred = torch.randn(batch, frames, 12, 256, requires_grad=True)
        z = torch.randn(batch, frames, 256, requires_grad=True)
        gen = torch.Generator().manual_seed(0)

        def make(kernels: str) -> Callable[[], None]:
            def run() -> None:
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    out = kstep_infonce(pred, z, negatives=negatives, n_negatives=128,
                                        generator=gen, kernels=kernels)
                out.loss.backward()
            return run
        return make
    return build


KERNELS = {"encoder": _encoder, "gru": _gru, "xent_cross_batch": _xent("cross_batch"),
           "xent_all": _xent("all")}


def _step_worker(args: argparse.Namespace) -> None:
    """One process: the whole training step with ``--memory`` keep or release."""
    from cpc_seq.audio.model.cpc import ModelConfig, build_model
    from cpc_seq.kernels.memory import apply_cpu_memory
    from cpc_seq.losses import kstep_infonce

    apply_cpu_memory(args.step_worker)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model(ModelConfig(encoder="small"))
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.randn(args.batch, args.window)
    gen = torch.Generator().manual_seed(0)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            z, c, fl = model(x)
            out = kstep_infonce(model.predict(c), z, fl, negatives="cross_batch",
                                generator=gen)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()

    step()
    step()
    print(json.dumps({"s": _timed(step, args.inner)}), flush=True)


def _row(name: str, prec: str, a: list[float], b: list[float], labels: tuple[str, str]) -> str:
    ratios = [y / x for x, y in zip(a, b)]
    return (f"| {name} | {prec} | {statistics.median(a):.4f} ({labels[0]}) | "
            f"{statistics.median(b):.4f} ({labels[1]}) | {statistics.median(ratios):.2f}x "
            f"({min(ratios):.2f}-{max(ratios):.2f}) |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default=",".join([*KERNELS, "memory"]))
    ap.add_argument("--precision", default="fp32,bf16")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--window", type=int, default=20480)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--inner", type=int, default=3)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--step-worker", choices=["keep", "release"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.step_worker:
        args.precision = args.precision.split(",")[0]
        _step_worker(args)
        return
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch} x "
          f"{args.window}; {args.reps} alternating rounds x {args.inner} calls")
    print("| kernel | precision | kernel s | plain s | speed-up (median of rounds, range) |")
    print("|---|---|---|---|---|")
    for name in args.only.split(","):
        for prec in args.precision.split(","):
            if name == "memory":
                runs: dict[str, list[float]] = {"keep": [], "release": []}
                for rep in range(args.reps):
                    order = ["keep", "release"] if rep % 2 == 0 else ["release", "keep"]
                    for mode in order:
                        cmd = [sys.executable, __file__, "--step-worker", mode, "--precision",
                               prec, "--threads", str(args.threads), "--batch", str(args.batch),
                               "--window", str(args.window), "--inner", str(args.inner)]
                        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
                        runs[mode].append(json.loads(res.stdout.strip().splitlines()[-1])["s"])
                print(_row("memory (whole step)", prec, runs["keep"], runs["release"],
                           ("keep", "release")), flush=True)
                continue
            make = KERNELS[name](prec == "bf16", args.batch, args.window)
            fns = {k: make(k) for k in ("auto", "reference")}
            for fn in fns.values():  # warm-up
                fn()
            times: dict[str, list[float]] = {"auto": [], "reference": []}
            for rep in range(args.reps):
                order = ["auto", "reference"] if rep % 2 == 0 else ["reference", "auto"]
                for k in order:
                    times[k].append(_timed(fns[k], args.inner))
            print(_row(name, prec, times["auto"], times["reference"], ("auto", "reference")),
                  flush=True)


if __name__ == "__main__":
    main()
