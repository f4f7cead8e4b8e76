"""Information-plane analysis: the k-NN estimators against closed-form entropy / MI, and
``cpc-seq mi info-plane`` on a convnet (fake Fashion-MNIST) and on a tiny CPC model."""

from __future__ import annotations

import gzip
import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
from scipy.special import gammaln

from cpc_seq.cli import main
from cpc_seq.errors import ConfigError, DataError
from cpc_seq.mibench.info_plane import (
    compress,
    kl_entropy,
    kl_weights,
    mi_ly,
    mi_xl,
    smooth_curves,
    synthetic_check,
)

ROOT = Path(__file__).resolve().parents[2]
DEV = ROOT / "data" / "tiny" / "dev"


def _gauss_pairs(n: int, d: int, rho: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    return x, rho * x + math.sqrt(1 - rho * rho) * rng.normal(size=(n, d))


def test_weights_cancel_the_bias_terms() -> None:
    for d in (4, 6, 8):
        js, w = kl_weights(5, d)
        assert w.sum() == pytest.approx(1.0)
        for order in range(1, d // 4 + 1):
            assert np.dot(w, np.exp(gammaln(js + 2 * order / d) - gammaln(js))) \
                == pytest.approx(0.0, abs=1e-9)
    assert kl_weights(5, 2)[0].tolist() == [5]
    with pytest.raises(ConfigError, match="too small"):
        kl_weights(1, 8)


@pytest.mark.parametrize("d", [1, 2, 4])
def test_entropy_of_a_gaussian(d: int) -> None:
    rng = np.random.default_rng(d)
    a = rng.normal(size=(d, d))
    cov = a @ a.T + 0.5 * np.eye(d)
    x = rng.multivariate_normal(np.zeros(d), cov, size=3000)
    true = 0.5 * np.linalg.slogdet(2 * math.pi * math.e * cov)[1]
    assert kl_entropy(x) == pytest.approx(true, abs=0.12)


def test_entropy_of_a_uniform_interval() -> None:
    # bounded supports bias k-NN entropies upwards (edge effects grow with d): 1-D only
    x = np.random.default_rng(0).uniform(0, 2, size=3000)  # H = log 2
    assert kl_entropy(x) == pytest.approx(math.log(2), abs=0.05)


@pytest.mark.parametrize("estimator", ["wkl", "ksg"])
def test_mi_of_gaussian_pairs(estimator: str) -> None:
    x, y = _gauss_pairs(3000, 2, 0.8, seed=1)
    assert mi_xl(x, y, estimator=estimator) == pytest.approx(-math.log(1 - 0.64), abs=0.12)
    x, y = _gauss_pairs(3000, 2, 0.0, seed=2)
    assert abs(mi_xl(x, y, estimator=estimator)) < 0.08


def test_mi_with_labels() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, size=2000)
    lay = rng.uniform(size=(2000, 3))
    lay[:, 1] += 3.0 * y
    est, n_classes = mi_ly(lay, y)
    assert n_classes == 5 and est == pytest.approx(math.log(5), abs=0.02)
    est, _ = mi_ly(rng.normal(size=(2000, 3)), y)
    assert abs(est) < 0.08
    # a class too small to estimate is pooled / left out, not a crash
    y2 = y.copy()
    y2[:3] = 9
    assert mi_ly(lay, y2)[1] == 5


def test_synthetic_check_and_compression() -> None:
    rows = synthetic_check(n=2000)
    for r in rows:
        tol = 0.5 if "ksg" in r["check"] or "wkl" in r["check"] else 0.05
        assert abs(r["error"]) < tol, r
    x = np.random.default_rng(0).normal(size=(300, 20))
    for method in ("pca", "ae"):
        assert compress(x, 3, method).shape == (300, 3)
    assert compress(x[:, :2], 3).shape == (300, 2)


def test_estimator_errors_are_clear() -> None:
    with pytest.raises(DataError, match="repeated samples"):
        kl_entropy(np.zeros((50, 2)))
    with pytest.raises(DataError, match="NaN"):
        kl_entropy(np.full((50, 2), np.nan))
    with pytest.raises(DataError, match="rows"):
        mi_xl(np.zeros((10, 2)), np.zeros((11, 2)))


def test_smoothing_keeps_a_single_point() -> None:
    from cpc_seq.mibench.info_plane import Curves

    c = Curves(kind="t", time_label="epoch", times=[0.0])
    c.add("a", 1.0, 2.0)
    assert smooth_curves(c, 1.0) == {"a": {"I_XL": [1.0], "I_LY": [2.0]}}


# --------------------------------------------------------------------------- the command


def _write_idx(path: Path, arr: np.ndarray) -> None:
    head = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(head + arr.astype(np.uint8).tobytes())


def _fake_fmnist(root: Path, n: int = 240) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    for prefix in ("train", "t10k"):
        labels = np.arange(n) % 10
        images = rng.integers(0, 50, (n, 28, 28))
        for i, lab in enumerate(labels):
            images[i, 2 * lab: 2 * lab + 5] += 180
        _write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
        _write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return root


def test_command_on_the_convnet_writes_png_and_json(tmp_path: Path) -> None:
    root = _fake_fmnist(tmp_path / "fm")
    out = tmp_path / "out"
    rc = main(["mi", "info-plane", "--data-root", str(root), "--train-size", "200",
               "--eval-size", "240", "--epochs", "1", "--evals-per-epoch", "2",
               "--check-size", "400", "--out", str(out)])
    assert rc == 0
    assert (out / "info_plane.png").stat().st_size > 10_000
    doc = json.loads((out / "info_plane.json").read_text())
    assert doc["times"] == [0.0, 0.5, 1.0]
    assert set(doc["raw"]) == {"conv1", "conv2", "conv3", "dense", "logits"}
    for d in doc["smoothed"].values():
        assert len(d["I_XL"]) == len(d["I_LY"]) == 3
        assert all(math.isfinite(v) for v in d["I_XL"] + d["I_LY"])
    assert len(doc["synthetic_check"]) == 4 and len(doc["accuracy"]) == 3


def test_command_on_a_cpc_checkpoint(tmp_path: Path) -> None:
    from cpc_seq.audio.train import load_config, make_engine

    cfg = load_config(None, [
        f"data.train={DEV}", "data.dev=null", "data.window=3200", "data.batch_size=4",
        "model.encoder=tiny", "model.encoder_channels=16", "model.dim_c=16",
        "model.n_steps=3", "train.steps=3", "train.log_every=3", "train.save_every=3",
        "train.progress=false", "train.threads=1", "optim.warmup_steps=1",
        "train.precision=fp32", f"train.out_dir={tmp_path / 'run'}"])
    make_engine(cfg).run()
    out = tmp_path / "ip"
    rc = main(["mi", "info-plane", "--model", str(tmp_path / "run" / "last.pt"),
               "--data", str(DEV), "--frames", "500", "--layers", "conv1,conv5,c",
               "--check-size", "400", "--out", str(out)])
    assert rc == 0
    doc = json.loads((out / "info_plane.json").read_text())
    assert doc["times"] == [0.0, 3.0] and doc["frames"] == 500
    assert set(doc["raw"]) == {"conv1", "conv5", "c"}
    assert (out / "info_plane.png").is_file()


def test_command_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                     ) -> None:
    assert main(["mi", "info-plane", "--noise-sigma", "0", "--out", str(tmp_path)]) == 2
    assert "noise-sigma" in capsys.readouterr().err
    rc = main(["mi", "info-plane", "--data-root", str(tmp_path / "nope"), "--check-size",
               "100", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error:") and "\n" not in err
    rc = main(["mi", "info-plane", "--model", str(tmp_path / "missing.pt"), "--check-size",
               "100", "--out", str(tmp_path)])
    assert rc == 2 and "not found" in capsys.readouterr().err
