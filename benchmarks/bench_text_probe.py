#!/usr/bin/env python3
"""Time and accuracy of the tuned logistic-regression text probe on a set of the size
that matters (about 20 k training items x 2,400 dims).

Features: a random-weight bag-of-words sentence model, the shape of the sentence CPC's
default encoder with random weights (every word of the training vocabulary gets a seeded
N(0, 1) vector of ``--dim`` dimensions; a sentence is the mean of its words' vectors;
words never seen in training are skipped), i.e. a random projection of each sentence's
normalised word counts. Data: a directory with ``probe_train/{text,utt2label}`` and
``probe_test/{text,utt2label}`` (``recipes/text/local/make_shakespeare.py`` or
``make_fortunes.py``).

    OMP_NUM_THREADS=1 python benchmarks/bench_text_probe.py --data DIR --solver lbfgs \\
        --solver sklearn --out result.json

Each solver runs in this process one after the other; CPU seconds are this process's
(``time.process_time``), so they do not depend on what else the machine runs.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import time
from pathlib import Path

import numpy as np

from cpc_seq.text.data import read_labels, read_text_items
from cpc_seq.text.probe import label_table, logreg_probe, words


def bag_features(train: list[str], test: list[str], dim: int, seed: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(N, dim) float32 means of seeded random word vectors (training vocabulary)."""
    vocab: dict[str, int] = {}
    for t in train:
        for w in words(t):
            vocab.setdefault(w, len(vocab))
    table = np.random.default_rng(seed).standard_normal((len(vocab), dim), dtype=np.float32)

    def embed(texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), dim), dtype=np.float32)
        for i, t in enumerate(texts):
            ids = [vocab[w] for w in words(t) if w in vocab]
            if ids:
                out[i] = table[ids].mean(0)
        return out

    return embed(train), embed(test)


def load(split_dir: Path) -> tuple[list[str], list[str]]:
    items = dict(read_text_items(split_dir / "text"))
    labels = read_labels(split_dir / "utt2label")
    keys = sorted(k for k in labels if k in items)
    return [items[k] for k in keys], [labels[k] for k in keys]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--dim", type=int, default=2400)
    p.add_argument("--max-train", type=int, default=0, help="keep this many (seeded; 0 = all)")
    p.add_argument("--solver", action="append", default=None,
                   help="probe solver(s) to time, in order (default: lbfgs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="")
    args = p.parse_args()
    d = Path(args.data)
    tr_text, tr_lab = load(d / "probe_train")
    te_text, te_lab = load(d / "probe_test")
    if args.max_train and len(tr_text) > args.max_train:
        keep = np.sort(np.random.default_rng(args.seed).permutation(len(tr_text))[: args.max_train])
        tr_text, tr_lab = [tr_text[i] for i in keep], [tr_lab[i] for i in keep]
    classes = label_table(dict(enumerate(tr_lab)))
    index = {c: i for i, c in enumerate(classes)}
    te = [(t, index[lab]) for t, lab in zip(te_text, te_lab) if lab in index]
    ytr = np.array([index[lab] for lab in tr_lab])
    yte = np.array([y for _, y in te])
    t0 = time.process_time()
    xtr, xte = bag_features(tr_text, [t for t, _ in te], args.dim, args.seed)
    print(f"features: train {xtr.shape}, test {xte.shape}, {len(classes)} classes "
          f"({time.process_time() - t0:.1f} CPU s)", file=sys.stderr)
    has_solver = "solver" in inspect.signature(logreg_probe).parameters
    results = []
    for solver in args.solver or ["lbfgs"]:
        kw = {"solver": solver} if has_solver else {}
        c0, w0 = time.process_time(), time.perf_counter()
        r = logreg_probe(xtr, ytr, xte, yte, classes, seed=args.seed, **kw)
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        row = {"solver": solver if has_solver else "sklearn (before)", "cpu_s": round(cpu, 1),
               "wall_s": round(wall, 1), "accuracy": r["accuracy"], "C": r["C"],
               "dev_accuracy_by_C": r["dev_accuracy_by_C"],
               "train_accuracy": r["train_accuracy"], "train_items": int(xtr.shape[0]),
               "dim": int(xtr.shape[1]), "classes": len(classes), "test_items": int(len(yte))}
        results.append(row)
        print(json.dumps(row), flush=True)
    print("| solver | CPU s | wall s | test accuracy | C | dev accuracy by C |")
    print("|---|---|---|---|---|---|")
    for r in results:
        by_c = ", ".join(f"{c}: {100 * a:.1f}" for c, a in r["dev_accuracy_by_C"].items())
        print(f"| {r['solver']} | {r['cpu_s']} | {r['wall_s']} | {100 * r['accuracy']:.2f} % "
              f"| {r['C']:g} | {by_c} |")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
