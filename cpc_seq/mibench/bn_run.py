"""Score every estimator on the "Beyond Normal" tasks; a table, a heat map and raw rows.

For each task x sample size N x seed, one sample of N pairs is drawn
(:mod:`~cpc_seq.mibench.beyond_normal`) and every estimator
(:func:`~cpc_seq.mibench.estimate.estimate_mi`, inputs standardised) estimates its MI
on it; the CPU-seconds of each estimate are recorded. A task counts as solved by an
estimator at N when the mean estimate over seeds satisfies ``|log(I_hat / I)| <
log 1.5``, as in the paper.

Outputs in ``out_dir``: ``rows.jsonl`` (one line per estimate, appended as they finish:
a rerun with the same settings skips what is there), ``results.csv``, ``table.md``
(per N: the mean estimate of each estimator on each task, ``*`` = solved; then the
number of tasks solved and the median CPU-seconds per estimate) and ``heatmap.png``
(per N: tasks x estimators coloured by ``log(I_hat / I)``, solved cells framed).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from cpc_seq.io.checkpoint import atomic_write
from cpc_seq.mibench.beyond_normal import SOLVED_FACTOR, BNTask, solved
from cpc_seq.mibench.estimate import CriticConfig, timed_estimate
from cpc_seq.mibench.mienf import MienfConfig

__all__ = ["run_beyond_normal", "summarise", "format_bn_table", "plot_heatmap"]


def run_beyond_normal(tasks: Sequence[BNTask], estimators: Sequence[str], ns: Sequence[int],
                      seeds: int, out_dir: str | Path, mienf: MienfConfig | None = None,
                      critic: CriticConfig | None = None, progress: bool = True
                      ) -> list[dict[str, Any]]:
    """Every (task, N, seed, estimator) estimate; returns all rows (old and new) and
    writes the outputs (module docstring)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "rows.jsonl"
    rows: list[dict[str, Any]] = []
    if log.exists():
        for line in log.read_text().splitlines():
            if line.strip():
                rows.append(json.loads(line))
    done = {(r["task"], r["n"], r["seed"], r["estimator"]) for r in rows}
    # seed outermost: a run stopped early holds whole grids for the seeds it finished
    jobs = [(t, n, s, e) for s in range(seeds) for n in ns for t in tasks for e in estimators
            if (t.name, n, s, e) not in done]
    bar = tqdm(jobs, desc="beyond-normal", unit="estimate", disable=not progress,
               dynamic_ncols=True)
    cache: dict[tuple[str, int, int], tuple[np.ndarray, np.ndarray]] = {}
    with open(log, "a") as f:
        for task, n, seed, name in bar:
            bar.set_postfix_str(f"{task.name[:28]} N={n} {name}")
            key = (task.name, n, seed)
            if key not in cache:
                cache.clear()
                cache[key] = task.sample(n, seed=1000 * seed + n)
            x, y = cache[key]
            value, cpu = timed_estimate(name, x, y, seed=seed, mienf=mienf, critic=critic)
            row = {"task": task.name, "dim_x": task.dim_x, "dim_y": task.dim_y,
                   "true_mi": task.mi, "n": n, "seed": seed, "estimator": name,
                   "estimate": value, "cpu_seconds": cpu}
            rows.append(row)
            f.write(json.dumps(row) + "\n")
            f.flush()
    keep = {t.name for t in tasks}
    rows = [r for r in rows if r["task"] in keep and r["n"] in ns and r["estimator"] in estimators
            and r["seed"] < seeds]
    write_outputs(rows, out)
    return rows


def summarise(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (task, N, estimator): mean estimate over seeds, solved, seeds solved,
    mean CPU-seconds."""
    groups: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["task"], r["n"], r["estimator"]), []).append(r)
    out = []
    for (task, n, est), rs in groups.items():
        vals = [r["estimate"] for r in rs]
        mean = float(np.mean(vals))
        truth = rs[0]["true_mi"]
        out.append({"task": task, "n": n, "estimator": est, "true_mi": truth,
                    "estimate": mean, "std": float(np.std(vals)), "seeds": len(rs),
                    "solved": solved(mean, truth),
                    "seeds_solved": sum(solved(v, truth) for v in vals),
                    "cpu_seconds": float(np.mean([r["cpu_seconds"] for r in rs]))})
    return out


def write_outputs(rows: Sequence[dict[str, Any]], out: Path) -> None:
    summary = summarise(rows)
    if not summary:
        return
    with atomic_write(out / "results.csv", "w") as f:
        w = csv.DictWriter(f, fieldnames=list(summary[0]))
        w.writeheader()
        w.writerows(summary)
    with atomic_write(out / "table.md", "w") as f:
        f.write(format_bn_table(summary))
    plot_heatmap(summary, out / "heatmap.png")


def _order(summary: Sequence[dict[str, Any]], key: str) -> list[Any]:
    """The values of ``key`` in the order they first appear; sample sizes ``n`` sorted
    (rows joined from several runs need not come in increasing N)."""
    values = list(dict.fromkeys(s[key] for s in summary))
    return sorted(values) if key == "n" else values


def format_bn_table(summary: Sequence[dict[str, Any]]) -> str:
    """Markdown: per N a task x estimator table of mean estimates (``*`` = solved), then
    tasks solved and median CPU-seconds per estimator and N."""
    names, tasks, ns = (_order(summary, k) for k in ("estimator", "task", "n"))
    cell = {(s["task"], s["n"], s["estimator"]): s for s in summary}
    seeds = max(s["seeds"] for s in summary)
    lines = [f"Solved (`*`): |log(I_hat / I)| < log {SOLVED_FACTOR:g} for the mean estimate "
             f"over {seeds} seed(s).\n",
             "| estimator | " + " | ".join(f"solved at N = {n}" for n in ns)
             + " | " + " | ".join(f"median CPU-s at N = {n}" for n in ns) + " |",
             "|---|" + "---|" * (2 * len(ns))]
    for e in names:
        counts, cpus = [], []
        for n in ns:
            ss = [s for s in summary if s["n"] == n and s["estimator"] == e]
            counts.append(f"{sum(s['solved'] for s in ss)} / {len(ss)}")
            cpus.append(f"{np.median([s['cpu_seconds'] for s in ss]):.1f}" if ss else "")
        lines.append(f"| {e} | " + " | ".join(counts) + " | " + " | ".join(cpus) + " |")
    for n in ns:
        lines += ["", f"N = {n}: mean estimate in nats (`*` = solved)", "",
                  "| task | true MI | " + " | ".join(names) + " |",
                  "|---|---|" + "---|" * len(names)]
        for t in tasks:
            first = next((s for s in summary if s["task"] == t), None)
            if first is None:
                continue
            vals = []
            for e in names:
                s = cell.get((t, n, e))
                vals.append("" if s is None else f"{s['estimate']:.2f}{'*' if s['solved'] else ''}")
            lines.append(f"| {t} | {first['true_mi']:.3f} | " + " | ".join(vals) + " |")
    return "\n".join(lines) + "\n"


def plot_heatmap(summary: Sequence[dict[str, Any]], path: str | Path) -> None:
    """PNG: one panel per N, tasks x estimators coloured by ``log(I_hat / I)`` (clipped to
    +-log 3), the estimate written in each cell, solved cells framed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    names, tasks, ns = (_order(summary, k) for k in ("estimator", "task", "n"))
    cell = {(s["task"], s["n"], s["estimator"]): s for s in summary}
    lim = math.log(3.0)
    fig, axes = plt.subplots(1, len(ns), figsize=(0.55 * len(names) * len(ns) + 4.5,
                                                  0.3 * len(tasks) + 2.0), squeeze=False)
    for k, (ax, n) in enumerate(zip(axes[0], ns)):
        m = np.full((len(tasks), len(names)), np.nan)
        for i, t in enumerate(tasks):
            for j, e in enumerate(names):
                s = cell.get((t, n, e))
                if s is None:
                    continue
                ratio = s["estimate"] / s["true_mi"] if s["true_mi"] > 0 else np.nan
                m[i, j] = np.clip(math.log(ratio), -lim, lim) if ratio > 0 else -lim
                ax.text(j, i, f"{s['estimate']:.2f}", ha="center", va="center", fontsize=5.5)
                if s["solved"]:
                    ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=1.2,
                                           ec="black"))
        im = ax.imshow(m, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(tasks)), tasks if k == 0 else [""] * len(tasks), fontsize=6.5)
        solved_n = sum(s["solved"] for s in summary if s["n"] == n)
        ax.set_title(f"N = {n} ({solved_n} solved)", fontsize=9)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.6, label="log(estimate / true MI)")
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)
