"""Extraction speed (real-time factor) of a CPC model's c features, fp32 and bf16.

    python benchmarks/bench_extract.py --preset paper

Runs the extraction path (per-utterance normalisation, padded batch by length) on
random 16 kHz utterances of 2-15 s and prints audio seconds per wall second (x real time).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import peak_rss_mib, time_it  # noqa: E402

from cpc_seq.features.extract import run_layers  # noqa: E402
from cpc_seq.models import ModelConfig, build_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="paper", choices=["tiny", "small", "paper"])
    ap.add_argument("--utterances", type=int, default=16)
    ap.add_argument("--layer", default="c")
    ap.add_argument("--precision", default="fp32,bf16")
    args = ap.parse_args()
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(2 * 16000, 15 * 16000, (args.utterances,), generator=g)
    waves = [torch.randn(int(n), generator=g) for n in lengths]
    audio = float(lengths.sum()) / 16000
    model = build_model(ModelConfig(encoder=args.preset)).eval()
    print(f"preset {args.preset}, {args.utterances} utterances, {audio:.1f} s of audio, "
          f"{torch.get_num_threads()} threads")
    for prec in args.precision.split(","):
        def run(bf16: bool = prec == "bf16") -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                for i in range(0, len(waves), 8):
                    run_layers(model, waves[i : i + 8], [args.layer])

        sec = time_it(run, warmup=1, reps=3)
        print(f"{prec}: {sec:.2f} s -> {audio / sec:.1f}x real time")
    print(f"peak RSS {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
