"""The "Beyond Normal" tasks: known MI values, samplers, scoring and the table/heat map."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import integrate, stats

from cpc_seq.cli import main
from cpc_seq.mibench.baselines import ksg_mi
from cpc_seq.mibench.beyond_normal import (
    additive_mi,
    beyond_normal_tasks,
    package_ids,
    solved,
    student_mi,
)
from cpc_seq.mibench.bn_run import run_beyond_normal

TASKS = {t.name: t for t in beyond_normal_tasks()}


def test_forty_tasks_with_the_reference_values() -> None:
    assert len(TASKS) == 40
    ref = {"Bivariate normal 1x1": 0.413, "Multinormal 2x2 (dense)": 0.294,
           "Multinormal 3x3 (dense)": 0.413, "Multinormal 5x5 (dense)": 0.593,
           "Multinormal 25x25 (dense)": 1.292, "Multinormal 50x50 (dense)": 1.624,
           "Multinormal 3x3 (2-pair)": 1.022, "Student-t 2x2 (dof=1)": 0.432,
           "Spiral @ Normal CDF @ Multinormal 25x25 (2-pair)": 1.022}
    for name, mi in ref.items():
        assert TASKS[name].mi == pytest.approx(mi, abs=1e-3), name
    for t in TASKS.values():
        x, y = t.sample(50, seed=0)
        assert x.shape == (50, t.dim_x) and y.shape == (50, t.dim_y), t.name
        assert np.isfinite(x).all() and np.isfinite(y).all(), t.name
        assert np.array_equal(t.sample(50, seed=0)[0], x)  # seeded


def test_student_mi_matches_monte_carlo() -> None:
    rng = np.random.default_rng(0)
    d, nu = 2, 2
    x, y = TASKS["Student-t 2x2 (dof=2)"].sampler(20000, rng)
    joint = stats.multivariate_t(np.zeros(2 * d), np.eye(2 * d), df=nu)
    marg = stats.multivariate_t(np.zeros(d), np.eye(d), df=nu)
    pmi = joint.logpdf(np.concatenate([x, y], 1)) - marg.logpdf(x) - marg.logpdf(y)
    assert pmi.mean() == pytest.approx(student_mi(d, d, nu), abs=0.02)


@pytest.mark.parametrize("eps", [0.1, 0.75])
def test_additive_noise_mi_by_integration(eps: float) -> None:
    def p(t: float) -> float:  # density of Y = U(0, 1) + U(-eps, eps)
        return max(0.0, min(t + eps, 1.0) - max(t - eps, 0.0)) / (2 * eps)

    h_y = integrate.quad(lambda t: -p(t) * math.log(p(t)) if p(t) > 0 else 0.0,
                         -eps, 1 + eps, points=[eps, 1 - eps, -eps + 1, 1 + eps - 1],
                         limit=200)[0]
    assert additive_mi(eps) == pytest.approx(h_y - math.log(2 * eps), abs=1e-6)


def test_transformed_one_dimensional_tasks_keep_the_mi() -> None:
    # invertible maps of each variable: a k-NN estimate on 4000 pairs lands near 0.413
    for name in ("Uniform margins 1x1", "Bimodal 1x1", "Wiggly 1x1", "Half-cube 1x1",
                 "Swiss roll 2x1"):
        x, y = TASKS[name].sample(4000, seed=1)
        assert ksg_mi(x, y) == pytest.approx(0.413, abs=0.06), name


def test_spiral_keeps_the_norm() -> None:
    t = TASKS["Spiral @ Multinormal 5x5 (2-pair)"]
    base = TASKS["Multinormal 5x5 (2-pair)"]
    x, y = t.sampler(100, np.random.default_rng(3))
    bx, by = base.sampler(100, np.random.default_rng(3))
    assert np.allclose(np.linalg.norm(x, axis=1), np.linalg.norm(bx, axis=1))
    assert np.allclose(x[:, 2:], bx[:, 2:]) and np.allclose(y[:, [0, 3, 4]], by[:, [0, 3, 4]])
    assert not np.allclose(x, bx)


def test_solved_rule() -> None:
    assert solved(0.41, 0.413) and solved(0.413 * 1.49, 0.413)
    assert not solved(0.413 * 1.51, 0.413) and not solved(0.413 / 1.51, 0.413)
    assert not solved(-0.1, 0.4) and not solved(float("nan"), 0.4)


def test_table_orders_sample_sizes() -> None:
    """Rows joined from two runs (N = 5000 first) still give the columns in increasing N."""
    from cpc_seq.mibench.bn_run import format_bn_table

    row = {"estimator": "cca", "task": "t", "true_mi": 1.0, "estimate": 1.0, "solved": True,
           "cpu_seconds": 0.0, "seeds": 1}
    table = format_bn_table([{**row, "n": 5000}, {**row, "n": 1000}, {**row, "n": 10000}])
    assert "| estimator | solved at N = 1000 | solved at N = 5000 | solved at N = 10000 |" in table
    assert table.index("N = 1000: mean") < table.index("N = 5000: mean")


def test_run_writes_table_heatmap_and_resumes(tmp_path: Path) -> None:
    tasks = [TASKS["Bivariate normal 1x1"], TASKS["Multinormal 3x3 (2-pair)"]]
    rows = run_beyond_normal(tasks, ["cca", "ksg"], [300], 2, tmp_path, progress=False)
    assert len(rows) == 2 * 2 * 2
    table = (tmp_path / "table.md").read_text()
    assert "| cca | 2 / 2 |" in table and "Multinormal 3x3 (2-pair)" in table
    assert (tmp_path / "heatmap.png").stat().st_size > 1000
    lines = (tmp_path / "rows.jsonl").read_text().splitlines()
    run_beyond_normal(tasks, ["cca", "ksg"], [300], 2, tmp_path, progress=False)
    assert (tmp_path / "rows.jsonl").read_text().splitlines() == lines  # nothing redone
    assert {json.loads(ln)["estimator"] for ln in lines} == {"cca", "ksg"}


def test_cli_beyond_normal(tmp_path: Path, capsys) -> None:
    rc = main(["mi", "bench", "--suite", "beyond-normal", "--tasks", "bivariate", "--ns", "200",
               "--estimators", "cca", "--out", str(tmp_path), "--no-progress"])
    assert rc == 0
    assert "| Bivariate normal 1x1 | 0.413 |" in capsys.readouterr().out
    rc = main(["mi", "bench", "--suite", "beyond-normal", "--tasks", "nothing-like-this",
               "--out", str(tmp_path), "--no-progress"])
    assert rc == 2 and "matches no task" in capsys.readouterr().err


REFERENCE = Path(__file__).with_name("data") / "bmi_reference.json"


def _reference_mismatches(name: str, ref: dict, meta: dict, n: int) -> list[str]:
    """How our samples of task ``name`` differ from the package's reference statistics:
    our empirical CDF at the package's deciles (each should read its decile) and the
    Spearman matrix of the first coordinates of [X, Y]."""
    task = TASKS[name]
    out = []
    if (task.dim_x, task.dim_y) != (ref["dim_x"], ref["dim_y"]):
        out.append(f"dims {(task.dim_x, task.dim_y)} vs {(ref['dim_x'], ref['dim_y'])}")
    if abs(task.mi - ref["mi"]) > 1e-3:
        out.append(f"MI {task.mi:.4f} vs {ref['mi']:.4f}")
    k = meta["coords"]
    x, y = task.sample(n, seed=123)
    x, y = x[:, :k], y[:, :k]
    probs = np.asarray(meta["probs"])
    for label, ours, deciles in (("x", x, ref["x_deciles"]), ("y", y, ref["y_deciles"])):
        for j, q in enumerate(deciles):
            cdf = (ours[:, j, None] <= np.asarray(q)[None, :]).mean(0)
            worst = float(np.abs(cdf - probs).max())
            if worst > 0.012:  # binomial sd at n = 50,000 pairs each: < 0.003
                out.append(f"{label}[{j}] CDF at the package's deciles off by {worst:.3f}")
    xy = np.concatenate([x, y], axis=1)
    rho = np.atleast_2d(stats.spearmanr(xy).statistic)
    if rho.shape == ():
        rho = np.array([[1.0, rho], [rho, 1.0]])
    if xy.shape[1] == 2:
        r = stats.spearmanr(xy[:, 0], xy[:, 1]).statistic
        rho = np.array([[1.0, r], [r, 1.0]])
    diff = float(np.abs(rho - np.asarray(ref["spearman"])).max())
    if diff > 0.03:  # sd of a rank correlation at n = 50,000: < 0.0045 per sample
        out.append(f"Spearman correlations off by up to {diff:.3f}")
    return out


def test_samples_match_package_reference() -> None:
    """Every task against statistics of 50,000 pairs drawn by the benchmark-mi package
    itself (tests/mibench/data/make_bmi_reference.py wrote them): the same MI, the same
    marginal distributions (our CDF at the package's deciles) and the same rank
    dependence between the first 8 coordinates of X and Y."""
    data = json.loads(REFERENCE.read_text())
    ids = package_ids()
    assert sorted(ids) == sorted(TASKS) and sorted(ids.values()) == sorted(data["tasks"])
    bad = {name: m for name, tid in ids.items()
           if (m := _reference_mismatches(name, data["tasks"][tid], data["meta"],
                                          data["meta"]["n"]))}
    assert not bad, bad
