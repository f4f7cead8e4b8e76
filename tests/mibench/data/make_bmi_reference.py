#!/usr/bin/env python3
"""Write ``bmi_reference.json``: statistics of the ``benchmark-mi`` package's own samples.

The test ``tests/mibench/test_beyond_normal.py::test_samples_match_package_reference``
compares the toolkit's Beyond-Normal samplers with these numbers, so the check runs
everywhere although the package (JAX, old pins) is not a dependency. Rerun only to
refresh the file, in an environment that has the package, for example::

    python3.11 -m venv /tmp/bmi && /tmp/bmi/bin/pip install benchmark-mi==0.1.3 \
        jax==0.4.23 jaxlib==0.4.23 scipy==1.11.4 chex==0.1.85
    /tmp/bmi/bin/python tests/mibench/data/make_bmi_reference.py

For each task (package id, in the package's order): its MI, and from ``--n`` pairs of
``task.sample(n, seed)``: the deciles of each of the first ``--coords`` coordinates of X
and of Y, and the Spearman rank correlation matrix of those coordinates of ``[X, Y]``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=50000)
    p.add_argument("--coords", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(Path(__file__).with_name("bmi_reference.json")))
    args = p.parse_args()
    import bmi
    from bmi.benchmark import BENCHMARK_TASKS

    probs = [i / 10 for i in range(1, 10)]
    tasks = {}
    for tid, task in BENCHMARK_TASKS.items():
        x, y = (np.asarray(a, dtype=np.float64) for a in task.sample(args.n, seed=args.seed))
        x, y = x[:, : args.coords], y[:, : args.coords]
        xy = np.concatenate([x, y], axis=1)
        rho = spearmanr(xy).statistic if xy.shape[1] > 2 else np.array(
            [[1.0, spearmanr(xy[:, 0], xy[:, 1]).statistic], [0.0, 1.0]])
        rho = np.atleast_2d(rho)
        rho = np.triu(rho) + np.triu(rho, 1).T
        tasks[tid] = {
            "name": task.name, "dim_x": task.dim_x, "dim_y": task.dim_y,
            "mi": float(task.mutual_information),
            "x_deciles": np.quantile(x, probs, axis=0).T.round(6).tolist(),
            "y_deciles": np.quantile(y, probs, axis=0).T.round(6).tolist(),
            "spearman": rho.round(5).tolist(),
        }
    meta = {"package": f"benchmark-mi {getattr(bmi, '__version__', '0.1.3')}", "n": args.n,
            "seed": args.seed, "coords": args.coords, "probs": probs}
    Path(args.out).write_text(json.dumps({"meta": meta, "tasks": tasks}, indent=0) + "\n")
    print(f"{len(tasks)} tasks -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
