"""Extraction speed (x real time) of a CPC model's features, fp32 and bf16.

    python benchmarks/bench_extract.py --preset paper

Runs what ``cpc-seq extract`` runs per batch (utterances sorted by length, grouped into
padded batches of at most ``--batch-seconds`` of audio, per-utterance normalisation,
the model under no_grad, features copied out per utterance) on random 16 kHz
utterances of 2-15 s, and prints audio seconds per wall second (x real time). Reading
audio and writing the ark are not included (``cpc-seq extract`` reports its own rate).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import peak_rss_mib, time_it  # noqa: E402

from cpc_seq.audio.extract import model_featurizer  # noqa: E402
from cpc_seq.io.features import length_batches  # noqa: E402
from cpc_seq.audio.model import ModelConfig, build_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="paper", choices=["tiny", "small", "paper"])
    ap.add_argument("--utterances", type=int, default=16)
    ap.add_argument("--layer", default="c")
    ap.add_argument("--precision", default="fp32,bf16")
    ap.add_argument("--batch-seconds", default="10",
                    help="comma-separated padded-batch sizes to try (cpc-seq extract: 10)")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(2 * 16000, 15 * 16000, (args.utterances,), generator=g)
    waves = {f"utt{i:03d}": torch.randn(int(n), generator=g) for i, n in enumerate(lengths)}
    audio = float(lengths.sum()) / 16000
    model = build_model(ModelConfig(encoder=args.preset)).eval()
    print(f"preset {args.preset}, layer {args.layer}, {args.utterances} utterances, "
          f"{audio:.1f} s of audio, {torch.get_num_threads()} threads")
    for prec in args.precision.split(","):
        featurize = model_featurizer(model, args.layer, bf16=prec == "bf16")
        for bs in (float(b) for b in args.batch_seconds.split(",")):
            batches = list(length_batches({u: len(w) for u, w in waves.items()},
                                          int(bs * 16000)))

            def run(batches: list[list[str]] = batches, featurize=featurize) -> None:
                for batch in batches:
                    featurize([waves[u] for u in batch])

            sec = time_it(run, warmup=1, reps=args.reps)
            print(f"{prec}, batches of <= {bs:g} s ({len(batches)} batches): {sec:.2f} s "
                  f"-> {audio / sec:.1f}x real time", flush=True)
    print(f"peak RSS {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
