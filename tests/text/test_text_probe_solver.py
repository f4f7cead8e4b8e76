"""The text probe's warm-started torch L-BFGS solver against scikit-learn's lbfgs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cpc_seq.errors import ConfigError
from cpc_seq.text.probe import fit_softmax, logreg_probe, tuned_logreg

pytestmark = pytest.mark.usefixtures("one_thread")


def _data(n: int = 600, d: int = 20, k: int = 4, seed: int = 0
          ) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    x = rng.standard_normal((n, d)) + 0.8 * rng.standard_normal((k, d))[y]
    return x, y


@pytest.mark.parametrize("c", [0.01, 1.0])
def test_fit_softmax_matches_sklearn_objective(c: float) -> None:
    from sklearn.linear_model import LogisticRegression

    x, y = _data()
    ref = LogisticRegression(C=c, tol=1e-8, max_iter=5000).fit(x, y)
    w, b, iters = fit_softmax(torch.tensor(x), torch.tensor(y), 4, c, tol=1e-8)
    assert iters > 0
    # the same minimiser (sklearn's coefficients are identified up to a shared shift of
    # the intercepts only when unpenalised; the penalised W is unique)
    np.testing.assert_allclose(w.numpy(), ref.coef_, atol=2e-4)
    np.testing.assert_allclose((b - b.mean()).numpy(), ref.intercept_ - ref.intercept_.mean(),
                               atol=2e-4)


def test_tuned_lbfgs_picks_the_same_c_and_accuracy_as_sklearn(
    capsys: pytest.CaptureFixture[str],
) -> None:
    x, y = _data(n=800, d=40, seed=1)
    xtr, ytr, xte, yte = x[:600], y[:600], x[600:], y[600:]
    classes = ["a", "b", "c", "d"]
    new = logreg_probe(xtr, ytr, xte, yte, classes, solver="lbfgs")
    err = capsys.readouterr().err
    old = logreg_probe(xtr, ytr, xte, yte, classes, solver="sklearn", progress=False)
    assert new["C"] == old["C"]
    assert abs(new["accuracy"] - old["accuracy"]) <= 0.01
    for c, acc in new["dev_accuracy_by_C"].items():
        assert abs(old["dev_accuracy_by_C"][c] - acc) <= 0.02
    # progress: one line per C fitted and one for the refit
    assert err.count("[logreg] C=") == len(new["dev_accuracy_by_C"])
    assert "refit on all 600 items" in err


def test_c_path_stops_after_two_worse_c_values(capsys: pytest.CaptureFixture[str]) -> None:
    # the classes differ in 2 of 200 dimensions: the dev accuracy peaks at a small C
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 300)
    x = rng.standard_normal((300, 200))
    x[:, :2] += 1.2 * rng.standard_normal((4, 2))[y]
    full = tuned_logreg(x, y, patience=0)
    short = tuned_logreg(x, y, patience=2, progress=True)
    assert len(full[2]) == 7
    assert 2 < len(short[2]) < 7  # stopped early ...
    assert short[1] == full[1]  # ... with the same choice of C
    vals = list(short[2].values())
    assert max(vals[-2:]) < max(vals[:-2])  # the last two fell below the best
    err = capsys.readouterr().err
    assert "the larger C values are not fitted" in err
    assert ("smallest value of the grid" in err) == (short[1] == 0.001)


def test_warm_start_path_is_cheaper_than_cold_starts() -> None:
    x, y = _data(n=600, d=60, seed=2)
    xt, yt = torch.tensor(x), torch.tensor(y)
    w = b = None
    warm = 0
    for c in (0.1, 1.0, 10.0):
        w, b, it = fit_softmax(xt, yt, 4, c, w, b, tol=1e-6)
        warm += it
    cold = sum(fit_softmax(xt, yt, 4, c, tol=1e-6)[2] for c in (0.1, 1.0, 10.0))
    assert warm < cold


def test_sparse_input_and_bad_solver() -> None:
    import scipy.sparse as sp

    x, y = _data(n=300, d=10)
    model, c, by_c = tuned_logreg(sp.csr_matrix(x), y, (0.1, 1.0))  # falls back to sklearn
    assert set(by_c) == {"0.1", "1"} and model.predict(x[:3]).shape == (3,)
    with pytest.raises(ConfigError, match="solver"):
        tuned_logreg(x, y, solver="newton")


@pytest.mark.parametrize("solver", ["lbfgs", "sklearn"])
def test_c_path_does_not_stop_on_a_majority_plateau(solver: str) -> None:
    # tiny features (as L2-normalised TF-IDF rows are): every small C predicts the
    # majority class, so the dev accuracy is flat until C is large enough to learn; a
    # plateau is not a fall, and the path must reach the C values that learn
    rng = np.random.default_rng(0)
    y = rng.choice(3, 400, p=[0.5, 0.25, 0.25])
    x = 0.01 * np.hstack([np.eye(3)[y] + 0.3 * rng.standard_normal((400, 3)),
                          rng.standard_normal((400, 5))])
    model, c, by_c = tuned_logreg(x, y, patience=2, solver=solver)
    assert by_c["0.001"] == by_c["0.01"] == by_c["0.1"]  # the plateau
    assert c >= 100 and max(by_c.values()) > by_c["0.001"] + 0.3
    assert float((model.predict(x) == y).mean()) > 0.9
