"""Train one critic per estimator x task, estimate the MI, write a table and a plot.

For every (task, estimator): a fresh critic (same seed for every estimator of a task) is
trained with Adam on ``steps`` fresh batches of ``batch_size`` pairs, minimising the
estimator's loss on the ``(N, N)`` score matrix (diagonal = positives, off-diagonal =
the product of marginals). Then, in eval mode, the estimate is the mean over
``eval_batches`` fresh batches; ``std`` is its spread over those batches (the per-batch
variance the estimators are known for), ``bias = estimate - truth``.

Estimators (all from the loss core, estimates in nats): ``infonce``, ``dv``, ``nwj``,
``mine`` (DV value; the critic is trained with MINE's moving-average gradient), ``smile``
(clipped DV, critic trained with the JS loss). InfoNCE cannot exceed ``log N``: the plot
draws that ceiling.

Outputs in ``out_dir``: ``results.csv``, ``results.json`` (rows + settings),
``table.md`` and ``mi_bench.png``.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from cpc_seq.config import check, check_literals
from cpc_seq.io.checkpoint import atomic_write
from cpc_seq.losses.bounds import MineEstimator, smile
from cpc_seq.losses.estimators import EstimatorOutput
from cpc_seq.losses.select import estimate
from cpc_seq.mibench.critics import CriticKind, build_critic
from cpc_seq.mibench.tasks import TRANSFORMS, Task

__all__ = ["BENCH_ESTIMATORS", "BenchConfig", "default_tasks", "full_tasks", "run_one",
           "run_bench", "format_table", "plot"]

BENCH_ESTIMATORS = ("infonce", "dv", "nwj", "mine", "smile")

Objective = Callable[[Tensor, Tensor], EstimatorOutput]


def default_tasks() -> list[Task]:
    """The quick grid: Gaussians in 2 dimensions at 0, 2, 4, 6, 8 nats, and each
    transform at 2 nats (8 tasks)."""
    tasks = [Task(mi=float(mi), dim=2) for mi in (0, 2, 4, 6, 8)]
    tasks += [Task(mi=2.0, dim=2, transform=t) for t in TRANSFORMS if t != "gaussian"]
    return tasks


def full_tasks() -> list[Task]:
    """The full grid: every transform x dimension {2, 5} x MI {0, 2, 4, 6, 8, 10} (48)."""
    return [Task(mi=float(mi), dim=d, transform=t) for t in TRANSFORMS for d in (2, 5)
            for mi in (0, 2, 4, 6, 8, 10)]


@dataclass
class BenchConfig:
    """Settings of one benchmark run (plain data, written into ``results.json``)."""

    estimators: list[str] = field(default_factory=lambda: list(BENCH_ESTIMATORS))
    batch_size: int = 128
    steps: int = 800
    eval_batches: int = 20
    lr: float = 1e-3
    critic: CriticKind = "separable"
    hidden: int = 64
    embed: int = 32
    layers: int = 2
    smile_tau: float = 5.0
    mine_rate: float = 0.01
    seed: int = 0

    def validate(self) -> None:
        check_literals(self)
        bad = [e for e in self.estimators if e not in BENCH_ESTIMATORS]
        check(not bad and bool(self.estimators), "estimators",
              f"choose from {', '.join(BENCH_ESTIMATORS)} (got {', '.join(bad) or 'none'})")
        check(self.batch_size >= 2, "batch_size", "must be >= 2")
        for key in ("steps", "eval_batches", "hidden", "embed", "layers"):
            check(getattr(self, key) > 0, key, "must be positive")
        check(self.lr > 0, "lr", "must be positive")
        check(self.smile_tau > 0, "smile_tau", "must be positive")
        check(0 < self.mine_rate <= 1, "mine_rate", "must be in (0, 1]")


def make_objective(name: str, cfg: BenchConfig) -> Objective:
    """``(scores, pos_mask) -> EstimatorOutput`` for a benchmark estimator name; MINE's
    moving average lives in the returned object (one per critic)."""
    if name == "mine":
        return MineEstimator(cfg.mine_rate)
    if name == "smile":
        return lambda s, p: smile(s, p, tau=cfg.smile_tau)
    return lambda s, p: estimate(name, s, p)


def run_one(task: Task, name: str, cfg: BenchConfig, seed: int) -> dict[str, Any]:
    """Train a critic for ``task`` with estimator ``name``; returns one result row."""
    t0 = time.process_time()
    torch.manual_seed(seed)
    critic = build_critic(cfg.critic, task.dim, task.dim, cfg.hidden, cfg.embed, cfg.layers)
    opt = torch.optim.Adam(critic.parameters(), lr=cfg.lr)
    objective = make_objective(name, cfg)
    gen = torch.Generator().manual_seed(seed + 1)
    pos = torch.eye(cfg.batch_size, dtype=torch.bool)
    critic.train()
    for _ in range(cfg.steps):
        x, y = task.sample(cfg.batch_size, gen)
        out = objective(critic(x, y), pos)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
    critic.eval()
    values = []
    eval_gen = torch.Generator().manual_seed(seed + 2)
    with torch.no_grad():
        for _ in range(cfg.eval_batches):
            x, y = task.sample(cfg.batch_size, eval_gen)
            values.append(float(objective(critic(x, y), pos).mi))
    v = torch.tensor(values, dtype=torch.float64)
    est = float(v.mean())
    return {
        "task": task.name, "transform": task.transform, "dim": task.dim, "true_mi": task.mi,
        "estimator": name, "estimate": est,
        "std": float(v.std()) if len(values) > 1 else 0.0,
        "bias": est - task.mi, "finite": bool(torch.isfinite(v).all()),
        "cpu_seconds": time.process_time() - t0,
    }


def run_bench(tasks: Sequence[Task], cfg: BenchConfig, out_dir: str | Path | None = None,
              progress: bool = True) -> list[dict[str, Any]]:
    """Every estimator of ``cfg`` on every task; writes the outputs to ``out_dir`` (when
    given) and returns the rows (task-major order)."""
    cfg.validate()
    rows = []
    jobs = [(ti, t, e) for ti, t in enumerate(tasks) for e in cfg.estimators]
    bar = tqdm(jobs, desc="mi-bench", unit="critic", disable=not progress, dynamic_ncols=True)
    for ti, task, name in bar:
        bar.set_postfix_str(f"{task.name} {name}")
        rows.append(run_one(task, name, cfg, seed=cfg.seed * 1000 + ti))
    if out_dir is not None:
        write_outputs(rows, cfg, Path(out_dir))
    return rows


def write_outputs(rows: list[dict[str, Any]], cfg: BenchConfig, out: Path) -> None:
    """``results.csv``, ``results.json``, ``table.md``, ``mi_bench.png`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    keys = list(rows[0]) if rows else []
    with atomic_write(out / "results.csv", "w") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    with atomic_write(out / "results.json", "w") as f:
        json.dump({"config": asdict(cfg), "log_n": math.log(cfg.batch_size), "rows": rows}, f,
                  indent=1)
    with atomic_write(out / "table.md", "w") as f:
        f.write(format_table(rows, cfg))
    plot(rows, out / "mi_bench.png", math.log(cfg.batch_size))


def format_table(rows: Sequence[dict[str, Any]], cfg: BenchConfig) -> str:
    """Markdown: one row per task, one column per estimator, ``estimate +- std``."""
    names = list(dict.fromkeys(r["estimator"] for r in rows))
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    cell = {(r["task"], r["estimator"]): r for r in rows}
    lines = [f"MI estimates in nats (mean +- std over {cfg.eval_batches} batches of "
             f"{cfg.batch_size}; {cfg.critic} critic, {cfg.steps} steps; InfoNCE ceiling "
             f"log N = {math.log(cfg.batch_size):.2f})\n",
             "| task | true MI | " + " | ".join(names) + " |",
             "|---|---|" + "---|" * len(names)]
    for t in tasks:
        first = next(r for r in rows if r["task"] == t)
        vals = [f"{cell[(t, n)]['estimate']:.2f} +- {cell[(t, n)]['std']:.2f}"
                if (t, n) in cell else "" for n in names]
        lines.append(f"| {t} | {first['true_mi']:g} | " + " | ".join(vals) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: Sequence[dict[str, Any]], path: str | Path, log_n: float) -> None:
    """PNG: estimate vs truth per estimator (error bars = std over batches), one panel
    per (transform, dim), the identity line and InfoNCE's ``log N`` ceiling."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(dict.fromkeys((r["transform"], r["dim"]) for r in rows))
    names = list(dict.fromkeys(r["estimator"] for r in rows))
    n = len(panels)
    cols = min(n, 4)
    nrows = math.ceil(n / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.8 * nrows), squeeze=False)
    top = max([r["true_mi"] for r in rows] + [log_n]) + 1.0
    for ax, (tr, d) in zip(axes.flat, panels):
        sub = [r for r in rows if r["transform"] == tr and r["dim"] == d]
        ax.plot([0, top], [0, top], color="0.6", lw=1, label="truth")
        ax.axhline(log_n, color="0.3", ls="--", lw=1, label=f"log N = {log_n:.2f}")
        for k, name in enumerate(names):
            pts = sorted((r["true_mi"], r["estimate"], r["std"]) for r in sub
                         if r["estimator"] == name and math.isfinite(r["estimate"]))
            if not pts:
                continue
            xs = [p[0] + 0.08 * (k - len(names) / 2) for p in pts]
            ax.errorbar(xs, [p[1] for p in pts], yerr=[p[2] for p in pts], marker="o", ms=3,
                        lw=1, capsize=2, label=name)
        ax.set_title(f"{tr}, d = {d}")
        ax.set_xlabel("true MI (nats)")
        ax.set_ylabel("estimate (nats)")
        ax.set_xlim(-0.5, top)
        ax.set_ylim(-1.0, top)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
