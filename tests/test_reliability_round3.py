"""Reliability round 3 (issue 28): non-finite ABX features, duplicated YAML keys, ids that
would become paths, quadratic sentence splitting, huge seeds and TextGrid spans,
validation that matches the readers, truncated MP3, image size mismatches, label-file
errors, checkpoint writes past the file-size limit, concurrent trainings, last-good
checkpoints that are finite on a probe batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cpc_seq.cli import main
from cpc_seq.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
DEV = ROOT / "data" / "tiny" / "dev"

HEADER = "#file onset offset #phone prev-phone next-phone speaker\n"


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _err(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


# ------------------------------------------------------------ 1: ABX on non-finite features


def _abx_case(d: Path, nan_file: str | None) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    d.mkdir(parents=True, exist_ok=True)
    lines = []
    for k, (spk, phone) in enumerate([("s1", "a"), ("s1", "a"), ("s1", "b"), ("s1", "b"),
                                      ("s2", "a"), ("s2", "b")]):
        arr = rng.standard_normal((5, 3)).astype(np.float32)
        if f"f{k}" == nan_file:
            arr[:] = np.nan
        np.save(d / f"f{k}.npy", arr)
        lines.append(f"f{k} 0.0 0.05 {phone} x y {spk}\n")
    item = d / "x.item"
    item.write_text(HEADER + "".join(lines))
    return d, item


def test_abx_refuses_non_finite_features_naming_the_file(tmp_path: Path, capsys) -> None:
    """All-NaN features scored 0.00 % error with exit 0."""
    d, item = _abx_case(tmp_path / "ok", None)
    assert main(["abx", "--feats", f"npy:{d}", "--item", str(item)]) == 0
    capsys.readouterr()
    d, item = _abx_case(tmp_path / "nan", "f3")
    assert main(["abx", "--feats", f"npy:{d}", "--item", str(item)]) == 2
    err = _err(capsys)
    assert "'f3'" in err and "not finite" in err and "x.item:5" in err, err


# ------------------------------------------------------------ 3: duplicated YAML keys


def test_yaml_duplicated_key_is_an_error_naming_both_lines(tmp_path: Path, capsys) -> None:
    """``steps: 2`` ... ``steps: 3000000``: the last value won silently."""
    from cpc_seq.config import apply_overrides, load_yaml

    conf = tmp_path / "c.yaml"
    conf.write_text("train:\n  steps: 2\n  log_every: 1\n  steps: 3000000\n")
    with pytest.raises(ConfigError, match=r"c\.yaml:4: duplicated key 'steps' \(first at line 2\)"):
        load_yaml(conf)
    assert main(["train", "--config", str(conf), f"train.out_dir={tmp_path / 'o'}"]) == 2
    assert "c.yaml:4" in _err(capsys)
    assert not (tmp_path / "o").exists()
    # a merge (<<: *base) may still override a key it brought in
    conf.write_text("base: &b\n  x: 1\nrun:\n  <<: *b\n  x: 2\n")
    assert load_yaml(conf)["run"] == {"x": 2}
    with pytest.raises(ConfigError, match="duplicated key 'x'"):
        apply_overrides({}, ["model.extra={x: 1, x: 2}"])


# ------------------------------------------------------------ 6: seeds out of range


def test_huge_seed_is_a_config_error(tmp_path: Path, capsys) -> None:
    """``train.seed=99999999999999999999999`` gave ``Overflow when unpacking long long``."""
    for cmd in (["train", f"data.train={DEV}"], ["text-train"], ["image-train"]):
        assert main([*cmd, "train.seed=99999999999999999999999",
                     f"train.out_dir={tmp_path / cmd[0]}"]) == 2, cmd
        assert "train.seed" in _err(capsys)
    assert main(["probe", "phone", "--feats", "npy:x", "--labels", "l", "--out", "o",
                 "--seed", "-1"]) == 2
    assert "--seed" in _err(capsys)
