"""The benchmark scripts' own logic: the profiler table and the scaling summary."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def test_bench_train_profile_prints_op_table() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH / "bench_train.py"), "--profile", "--preset", "tiny",
         "--batch", "2", "--window", "3200", "--steps", "2", "--negatives", "cross_batch",
         "--n-negatives", "4", "--precision", "fp32", "--reps", "1", "--threads", "1"],
        capture_output=True, text=True, check=True, timeout=300).stdout
    assert "## tiny, cross_batch, fp32, 1 threads" in out
    assert "| op | input shapes | calls/run | self ms/run | % | GFLOP/s |" in out
    assert "matmuls (mm, addmm, bmm)" in out
    # the fp32 encoder's Winograd products are bmm, the rest mm / addmm: each with a rate
    mm = [line for line in out.splitlines()
          if line.startswith(("| aten::mm ", "| aten::addmm ", "| aten::bmm "))]
    assert mm and any(float(line.rsplit("|", 2)[-2].strip() or 0) > 0 for line in mm)  # GFLOP/s column


def test_scaling_growth_lines() -> None:
    sys.path.insert(0, str(BENCH))
    try:
        import scaling
    finally:
        sys.path.remove(str(BENCH))
    rows = []
    for factor, values in scaling.SWEEPS.items():
        for v in values:  # cost linear in batch, quadratic in window, flat otherwise
            cost = {"batch": v, "window": v * v}.get(factor, 1.0)
            rows.append((factor, v, "fp32", float(cost), 0.0, 0.0, 0.0))
    lines = scaling.growth_lines(rows, ["fp32"])
    text = "\n".join(lines)
    assert "- batch 2 -> 16 (x8): fp32 x8.00 (slope 1.00)" in text
    assert "- window 5120 -> 40960 (x8): fp32 x64.00 (slope 2.00)" in text
    assert "- n_neg 16 -> 512 (x32): fp32 x1.00 (slope 0.00)" in text
    with pytest.raises(KeyError):
        scaling.growth_lines(rows, ["bf16"])  # no bf16 rows measured
