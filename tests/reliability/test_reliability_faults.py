"""Fault injection (issue 13): SIGKILL a training run and an extraction at 3 random
points each, resume after every kill, nothing lost or duplicated. The 20-point version is
``python benchmarks/fault_injection.py --points 20``."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _faults():  # noqa: ANN202
    spec = importlib.util.spec_from_file_location("fault_injection",
                                                  ROOT / "benchmarks" / "fault_injection.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_training_killed_at_3_random_steps_resumes_exactly(tmp_path: Path) -> None:
    res = _faults().train_faults(tmp_path, points=3, seed=1, steps=16)
    assert res["kills"] == 3, res


def test_extraction_killed_at_3_random_points_reads_back_every_utterance_once(
        tmp_path: Path) -> None:
    fi = _faults()
    res = fi.extract_faults(tmp_path, points=3, seed=2, data=fi.DEV, tear=1.0)
    assert res["kills"] == 3, res
    assert all(e["torn"] for e in res["events"])
