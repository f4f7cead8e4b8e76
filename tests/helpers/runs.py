"""Tiny audio training runs and their logs, shared by the tests."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEV = ROOT / "data" / "tiny" / "dev"

#: a tiny audio CPC run on the embedded corpus's dev split (seconds per run)
TINY_AUDIO = [
    f"data.train={DEV}", "data.window=3200", "data.batch_size=4", "model.encoder=tiny",
    "model.encoder_channels=16", "model.dim_c=16", "model.n_steps=3", "train.progress=false",
    "train.threads=1", "optim.warmup_steps=2", "train.log_every=1", "loss.n_negatives=8",
    "train.precision=fp32",
]


def logged_losses(log: Path) -> dict[int, float]:
    """The last logged ``train/loss`` of every step in ``log.jsonl`` (a killed run may
    leave a partial last line, which is skipped)."""
    out = {}
    for line in log.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        out[rec["step"]] = rec["train/loss"]
    return out
