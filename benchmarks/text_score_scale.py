#!/usr/bin/env python3
"""The score scale of a text CPC model at initialisation: what the InfoNCE loss sees
before the first step.

    OMP_NUM_THREADS=1 python benchmarks/text_score_scale.py --config \\
        recipes/text/conf/sentence.yaml data.train=DIR [key=value ...]

Builds the run's model and batches as ``text-train`` would (tokeniser, token cache;
``train.out_dir`` defaults to a temporary directory), draws ``--batches`` training
batches and prints, averaged over them: the norms of z and of the predictions, the
standard deviation of the scores ``pred . z`` (over every query and candidate, and within
a query's row), the k-step loss against log(candidates), and the accuracy against chance.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile

import torch

from cpc_seq.text.train import load_text_config, make_text_engine


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("--batches", type=int, default=4)
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_text_config(args.config, [f"train.out_dir={tmp}/run", "train.progress=false",
                                             *args.overrides])
        engine = make_text_engine(cfg)
        task, module = engine.task, engine.module
        rows: list[dict[str, float]] = []
        with torch.no_grad():
            for _ in range(args.batches):
                inputs, _ = task.next_batch()
                z, lengths, pred = module(*inputs)
                out = task.kstep_loss(z, lengths, pred, training=False)
                valid = (torch.arange(z.shape[1]).unsqueeze(0) < lengths.unsqueeze(1))
                zv = z[valid]  # (M, D) the candidates
                q = pred[:, :-1, 0][valid[:, 1:]]  # k = 1 queries with a valid positive
                s = q @ zv.t()
                rows.append({
                    "z_norm": float(zv.norm(dim=1).mean()),
                    "pred_norm": float(q.norm(dim=1).mean()),
                    "score_std": float(s.std()),
                    "score_row_std": float(s.std(dim=1).mean()),
                    "loss": float(out.loss),
                    "log_candidates": math.log(out.num_candidates),
                    "acc": float(out.step_acc.mean()),
                    "chance": 1.0 / out.num_candidates,
                })
    mean = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}
    print(json.dumps({k: round(v, 4) for k, v in mean.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
