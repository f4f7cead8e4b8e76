#!/usr/bin/env python3
"""One markdown row per feature set over seeds, from the run folders of ``lever_row.sh``.

Each argument is ``NAME=DIR[,DIR...][:LAYER]`` (one folder per seed, each holding
``probe_LAYER/result.json``, LAYER z by default, c or zc as lever_row.sh's LAYER; trained runs also ``final.json`` and ``time.txt``) or
``NAME=FILE.json`` (one probe result, e.g. the bag of words). Prints, per row: the test
accuracy of every seed, their mean and spread (max - min), and for trained runs the
training CPU-seconds, the steps and the final InfoNCE accuracy on training and dev
batches (``final.json``: the last metrics line the training command printed).

    python recipes/text/local/seed_table.py "CPC z=exp/fort/cpc_s0,exp/fort/cpc_s1" \\
        "random z=exp/fort/rand_s0,exp/fort/rand_s1" "bag of words=exp/fort/bow/result.json"
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path


def _accuracy(path: Path) -> float:
    return 100.0 * json.loads(path.read_text())["accuracy"]


def _training(run: Path) -> tuple[float, int, float, float] | None:
    """(CPU-seconds, steps, train InfoNCE acc %, dev InfoNCE acc %) of a trained run."""
    final, timing = run / "final.json", run / "time.txt"
    if not final.exists() or not timing.exists() or (run / "cpc").is_symlink():
        return None
    lines = [ln for ln in final.read_text().splitlines() if ln.startswith("{")]
    if not lines:
        return None
    m = json.loads(lines[-1])
    cpu = sum(float(v) for v in re.findall(r"(?:User|System) time \(seconds\): ([\d.]+)",
                                           timing.read_text()))
    steps = json.loads((run / "cpc" / "log.jsonl").read_text().splitlines()[-1])["step"]
    return cpu, steps, 100 * m.get("train/acc", float("nan")), 100 * m.get("dev/acc", float("nan"))


def row(spec: str) -> str:
    name, _, paths = spec.partition("=")
    if not paths:
        raise SystemExit(f"error: {spec!r}: expected NAME=DIR[,DIR...] or NAME=FILE.json")
    paths, _, layer = paths.partition(":")
    accs, train = [], []
    for p in (Path(s) for s in paths.split(",")):
        result = p if p.suffix == ".json" else p / f"probe_{layer or 'z'}" / "result.json"
        if not result.exists():
            raise SystemExit(f"error: {result}: no probe result (run lever_row.sh first)")
        accs.append(_accuracy(result))
        if p.is_dir() and (t := _training(p)):
            train.append(t)
    cells = [name, ", ".join(f"{a:.1f}" for a in accs), f"{sum(accs) / len(accs):.1f}",
             f"{max(accs) - min(accs):.1f}"]
    if train:
        cells += [", ".join(f"{t[0]:.0f}" for t in train), ", ".join(str(t[1]) for t in train),
                  ", ".join(f"{t[2]:.1f}" for t in train), ", ".join(f"{t[3]:.2f}" for t in train)]
    else:
        cells += [""] * 4
    return "| " + " | ".join(cells) + " |"


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    print("| features | test accuracy per seed (%) | mean | spread | training CPU-s | steps "
          "| InfoNCE acc, train (%) | InfoNCE acc, dev (%) |")
    print("|---|---|---|---|---|---|---|---|")
    for spec in sys.argv[1:]:
        print(row(spec))
    return 0


if __name__ == "__main__":
    sys.exit(main())
