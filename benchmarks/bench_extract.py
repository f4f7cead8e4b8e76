"""Extraction speed (x real time) of a CPC model's features, fp32 and bf16.

    python benchmarks/bench_extract.py --preset paper
    python benchmarks/bench_extract.py --preset paper --precision fp32 --vs 06f2031 \
        --ref-batch-seconds 10
    python benchmarks/bench_extract.py --preset paper --precision fp32 --profile

Runs what ``cpc-seq audio extract`` runs per batch (utterances sorted by length, grouped into
padded batches of at most ``--batch-seconds`` of audio, per-utterance normalisation,
the model under no_grad - the encoder in groups of at most 10 s, the GRU once per batch -
features copied out per utterance) on random 16 kHz
utterances of 2-15 s, and prints audio seconds per wall second (x real time) and per
CPU second of the process. Reading audio and writing the ark are not included
(``cpc-seq audio extract`` reports its own rate).

``--vs REF`` times the same thing with another commit's ``cpc_seq`` (a temporary git
worktree, removed afterwards) in alternating subprocesses, ``--reps`` pairs, and prints
both rates and the median of the per-pair ratios.
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

sys.path.insert(0, str(root_from_argv(sys.argv, HERE.parent)))

import torch  # noqa: E402
from common import (  # noqa: E402
    describe_trees,
    memory_as_the_cli_runs,
    peak_rss_mib,
    profile_table,
    ref_worktree,
    run_json_worker,
    run_times2,
)


def _setup(preset: str, n_utt: int):
    try:
        from cpc_seq.audio.model.cpc import ModelConfig, build_model
    except ImportError:  # trees before audio/model/ was a package
        from cpc_seq.audio.model import ModelConfig, build_model

    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(2 * 16000, 15 * 16000, (n_utt,), generator=g)
    waves = {f"utt{i:03d}": torch.randn(int(n), generator=g) for i, n in enumerate(lengths)}
    torch.manual_seed(0)
    model = build_model(ModelConfig(encoder=preset)).eval()
    return waves, float(lengths.sum()) / 16000, model


def _runner(model, waves, layer: str, prec: str, batch_seconds: float):
    from cpc_seq.audio.extract import model_featurizer

    try:
        from cpc_seq.io.features import length_batches
    except ImportError:  # older trees
        from cpc_seq.audio.extract import length_batches

    memory_as_the_cli_runs()  # as cpc-seq audio extract runs
    featurize = model_featurizer(model, layer, bf16=prec == "bf16")
    batches = list(length_batches({u: len(w) for u, w in waves.items()},
                                  int(batch_seconds * 16000)))
    last: dict[str, object] = {}

    def run() -> None:
        last["feats"] = [f for batch in batches for f in featurize([waves[u] for u in batch])]

    return run, batches, last


def _worker(args: argparse.Namespace) -> None:
    import cpc_seq

    torch.set_num_threads(args.threads)
    waves, audio, model = _setup(args.preset, args.utterances)
    run, _, last = _runner(model, waves, args.layer, args.precision, float(args.batch_seconds))
    wall, cpu = run_times2(run, warmup=1, reps=args.inner)
    first = last["feats"][0]  # type: ignore[index]
    print(json.dumps({"wall": statistics.median(wall), "cpu": statistics.median(cpu),
                      "audio": audio, "checksum": float(abs(first).sum()),
                      "cpc_seq": cpc_seq.__file__}), flush=True)


def _side_by_side(args: argparse.Namespace) -> None:
    repo = HERE.parent
    with ref_worktree(repo, args.vs, args.ref_dir) as ref_dir:
        print(f"torch {torch.__version__}, {args.threads} threads; preset {args.preset}, layer "
              f"{args.layer}, {args.utterances} utterances, batches of <= {args.batch_seconds} s"
              f"{f' (reference: {args.ref_batch_seconds} s)' if args.ref_batch_seconds else ''}; "
              f"{describe_trees(repo, ref_dir, args.vs)}; {args.reps} alternating process pairs "
              f"x {args.inner} passes; load average before: "
              f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print("| precision | clock | ref x real time | new x real time | speed-up (median of "
              "pair ratios, range) | feature checksum ref / new |")
        print("|---|---|---|---|---|---|")
        for prec in args.precision.split(","):
            runs = []
            for rep in range(args.reps):
                pair = [("ref", ref_dir), ("new", repo)]
                if rep % 2:
                    pair.reverse()
                got = {}
                for name, root in pair:
                    bs = args.ref_batch_seconds if name == "ref" and args.ref_batch_seconds \
                        else args.batch_seconds
                    cmd = [sys.executable, str(HERE / "bench_extract.py"), "--worker", "--root",
                           str(root), "--preset", args.preset, "--layer", args.layer,
                           "--precision", prec, "--utterances", str(args.utterances),
                           "--batch-seconds", str(bs), "--inner",
                           str(args.inner), "--threads", str(args.threads)]
                    got[name] = run_json_worker(cmd, root, args.threads)
                runs.append(got)
            audio = runs[0]["ref"]["audio"]
            for clock in ("wall", "cpu"):
                ref_t = [r["ref"][clock] for r in runs]
                new_t = [r["new"][clock] for r in runs]
                ratios = [a / b for a, b in zip(ref_t, new_t)]
                print(f"| {prec} | {clock} | {audio / statistics.median(ref_t):.1f} | "
                      f"{audio / statistics.median(new_t):.1f} | "
                      f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f}) | "
                      f"{runs[0]['ref']['checksum']:.2f} / {runs[0]['new']['checksum']:.2f} |",
                      flush=True)
        print(f"load average after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="paper", choices=["tiny", "small", "paper"])
    ap.add_argument("--utterances", type=int, default=16)
    ap.add_argument("--layer", default="c")
    ap.add_argument("--precision", default="fp32,bf16")
    ap.add_argument("--batch-seconds", default="60",
                    help="comma-separated padded-batch sizes to try (cpc-seq audio extract: 60 on CPU)")
    ap.add_argument("--ref-batch-seconds",
                    help="--vs: the reference tree's batch size, if its cpc-seq audio extract used "
                    "another default (10 before the encoder took batches in 10 s groups)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--vs", metavar="REF", help="time against this git ref, side by side")
    ap.add_argument("--ref-dir", help="worktree path for --vs (default: a fresh temp dir)")
    ap.add_argument("--inner", type=int, default=2, help="--vs: timed passes per process")
    ap.add_argument("--profile", action="store_true",
                    help="print torch.profiler's op table for each precision instead of timing")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--root", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        _worker(args)
        return
    if args.vs:
        if "," in args.batch_seconds:
            ap.error("--vs takes one --batch-seconds value")
        _side_by_side(args)
        return
    torch.set_num_threads(args.threads)
    waves, audio, model = _setup(args.preset, args.utterances)
    print(f"preset {args.preset}, layer {args.layer}, {args.utterances} utterances, "
          f"{audio:.1f} s of audio, {torch.get_num_threads()} threads")
    if args.profile:
        for prec in args.precision.split(","):
            run, _, _ = _runner(model, waves, args.layer, prec, float(args.batch_seconds.split(",")[0]))
            print(f"## {prec}")
            print(profile_table(run, reps=1), flush=True)
        return
    for prec in args.precision.split(","):
        for bs in (float(b) for b in args.batch_seconds.split(",")):
            run, batches, _ = _runner(model, waves, args.layer, prec, bs)
            wall, cpu = run_times2(run, warmup=1, reps=args.reps)
            w, c = statistics.median(wall), statistics.median(cpu)
            print(f"{prec}, batches of <= {bs:g} s ({len(batches)} batches): {w:.2f} s "
                  f"-> {audio / w:.1f}x real time (wall), {audio / c:.1f}x per CPU-second",
                  flush=True)
    print(f"peak RSS {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
