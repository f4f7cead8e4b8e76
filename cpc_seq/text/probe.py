"""Sentence-level probes for text features, and a tuned bag-of-words baseline.

- :func:`tfidf_probe`: the bag-of-words baseline, scikit-learn's ``TfidfVectorizer``
  (lower-cased word 1+2-grams, sublinear tf, L2-normalised rows) and a multinomial
  ``LogisticRegression`` whose inverse regularisation ``C`` is chosen on a dev split
  carved from the training items (stratified, seeded), then refitted on all of them.
- :func:`logreg_probe`: the same tuned logistic regression on dense per-item vectors
  (standardised with the training mean/std), so CPC features and the bag of words are
  scored by the same probe family. Dense features are fitted by :func:`fit_softmax`
  (scikit-learn's objective and stopping rule, torch's L-BFGS in float32, each C of the
  grid starting from the previous C's solution): about 1.5 CPU-minutes at 20 k items x
  2,400 dims where scikit-learn's from-scratch fits took 4.5x longer (docs/text.md);
  a line per C goes to stderr.
- :func:`run_probe`: the older Adam-trained linear (or MLP) probe of
  :func:`cpc_seq.probes.linear.train_linear_probe` (``--probe adam``).
- :func:`majority_result`: the always-the-commonest-training-class row.
- :func:`markdown_table`: the results as a markdown table.

Every result dict carries ``accuracy``, ``macro_accuracy``, ``train_accuracy``,
``majority_accuracy``, the confusion matrix and, for the tuned probes, ``C`` and the
dev accuracy of every tried ``C`` (``dev_accuracy_by_C``).
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from cpc_seq.errors import ConfigError, DataError
from cpc_seq.probes.linear import ProbeResult, evaluate_probe, result_to_dict, train_linear_probe

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")

#: Default grid of the logistic regression's inverse regularisation strength.
C_GRID = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)


def words(text: str) -> list[str]:
    """Lower-cased word tokens (letters/digits, with an inner apostrophe)."""
    return _WORD.findall(text.lower())


def _scores(pred: np.ndarray, y: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """``result_to_dict`` of predictions ``pred`` (N,) against labels ``y`` (N,)."""
    n_cls = len(classes)
    conf = np.zeros((n_cls, n_cls), dtype=np.int64)
    np.add.at(conf, (y, pred), 1)
    present = [c for c in range(n_cls) if conf[c].sum()]
    res = ProbeResult(accuracy=float((pred == y).mean()),
                      per_class_accuracy={c: float(conf[c, c] / conf[c].sum()) for c in present},
                      confusion=conf, n=int(len(y)))
    return result_to_dict(res, list(classes))


def dev_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (fit, dev) of a stratified split of labels ``y`` (N,): about ``fraction``
    of every class with at least two items goes to dev (at least one item each)."""
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"dev fraction {fraction}: must be in (0, 1)")
    rng = np.random.default_rng(seed)
    fit, dev = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_dev = int(round(fraction * len(idx))) if len(idx) > 1 else 0
        n_dev = min(max(n_dev, 1 if len(idx) > 1 else 0), len(idx) - 1)
        dev.append(idx[:n_dev])
        fit.append(idx[n_dev:])
    fit_idx, dev_idx = np.sort(np.concatenate(fit)), np.sort(np.concatenate(dev))
    if len(dev_idx) == 0:
        raise DataError("too few training items to carve a dev split for choosing C")
    return fit_idx, dev_idx


#: C values in a row scoring below the best after which the warm-started path stops.
C_PATIENCE = 2

#: Probe solvers: ``lbfgs`` (torch, warm-started along the C path; dense features) or
#: ``sklearn`` (scikit-learn's lbfgs from scratch for every C; dense or sparse).
SOLVERS = ("lbfgs", "sklearn")


class LinearSoftmax:
    """A fitted multinomial logistic regression: ``coef_`` (K, D), ``intercept_`` (K,);
    ``predict(x (N, D)) -> (N,)`` class ids (the argmax of ``x @ coef_.T + intercept_``)."""

    def __init__(self, coef: np.ndarray, intercept: np.ndarray) -> None:
        self.coef_, self.intercept_ = coef, intercept

    def decision_function(self, x: Any) -> np.ndarray:
        return np.asarray(x @ self.coef_.T) + self.intercept_

    def predict(self, x: Any) -> np.ndarray:
        return self.decision_function(x).argmax(1)


def _say(progress: bool, msg: str) -> None:
    if progress:
        print(f"[logreg] {msg}", file=sys.stderr, flush=True)


def fit_softmax(
    x: Tensor, y: Tensor, n_classes: int, c: float, w: Tensor | None = None,
    b: Tensor | None = None, max_iter: int = 1000, tol: float = 1e-4,
) -> tuple[Tensor, Tensor, int]:
    """Minimise scikit-learn's multinomial logistic-regression objective,
    ``mean_i CE(x_i W^T + b, y_i) + ||W||^2 / (2 C N)`` (intercept not penalised), with
    torch's L-BFGS (strong-Wolfe line search) from ``(w, b)`` (zeros when not given)
    until the largest gradient entry is at most ``tol`` (scikit-learn's stopping rule) or
    ``max_iter`` iterations. ``x`` (N, D) float, ``y`` (N,) int64. Returns
    ``(W (K, D), b (K,), iterations)``.
    """
    n, d = x.shape
    w = (torch.zeros(n_classes, d, dtype=x.dtype) if w is None else w.clone()).requires_grad_()
    b = (torch.zeros(n_classes, dtype=x.dtype) if b is None else b.clone()).requires_grad_()
    lam = 1.0 / (c * n)
    rows = torch.arange(n)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, max_eval=2 * max_iter,
                            tolerance_grad=tol, tolerance_change=1e-12, history_size=10,
                            line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        with torch.no_grad():  # the gradient by hand: one matmul each way
            logits = torch.addmm(b, x, w.t())
            lse = torch.logsumexp(logits, 1, keepdim=True)
            loss = (lse.squeeze(1) - logits[rows, y]).mean() + 0.5 * lam * (w * w).sum()
            g = torch.exp(logits - lse)
            g[rows, y] -= 1.0
            g /= n
            w.grad = g.t() @ x + lam * w
            b.grad = g.sum(0)
        return loss

    opt.step(closure)
    iters = int(opt.state[w].get("n_iter", 0))
    return w.detach(), b.detach(), iters


@dataclass
class _CPath:
    """The selection rule along the C grid, walked in increasing order: the best dev
    accuracy wins (ties: the smaller C), and the walk stops once ``patience`` C values in
    a row (0: never) scored strictly below the best. A tie breaks the row: a plateau
    (e.g. every small C predicting the majority class, as TF-IDF rows do) must not stop
    the path before the C values that learn."""

    patience: int
    last_c: float  # the grid's largest C: nothing is left to skip after it
    best_c: float | None = None
    best_acc: float = -1.0
    best_state: Any = None  # the solver's solution at best_c (the torch warm start)
    below: int = 0

    def update(self, c: float, acc: float, state: Any, progress: bool) -> bool:
        """Record C's dev accuracy (and the solution); True when the path stops here."""
        if acc > self.best_acc:
            self.best_c, self.best_acc, self.best_state, self.below = c, acc, state, 0
        else:
            self.below = self.below + 1 if acc < self.best_acc else 0
        stop = bool(self.patience) and self.below >= self.patience and c != self.last_c
        if stop:
            _say(progress, f"the dev accuracy fell at {self.below} C values in a row: "
                           "the larger C values are not fitted")
        return stop


def _tuned_torch(
    train_x: np.ndarray, train_y: np.ndarray, c_grid: Sequence[float], fit_idx: np.ndarray,
    dev_idx: np.ndarray, max_iter: int, tol: float, progress: bool, patience: int = 0,
) -> tuple[LinearSoftmax, float, dict[str, float]]:
    """:func:`tuned_logreg` with :func:`fit_softmax`: the C grid in increasing order, each
    fit starting from the previous C's solution (the regularisation path), stopped by
    :class:`_CPath`, then the refit on all items from the chosen C's solution."""
    x = torch.as_tensor(np.ascontiguousarray(train_x, dtype=np.float32))
    y = torch.as_tensor(np.asarray(train_y, dtype=np.int64))
    k = int(y.max()) + 1
    xf, yf = x[torch.as_tensor(fit_idx)], y[torch.as_tensor(fit_idx)]
    xd, yd = x[torch.as_tensor(dev_idx)], y[torch.as_tensor(dev_idx)]
    by_c: dict[str, float] = {}
    path = _CPath(patience, max(c_grid))
    w = b = None
    t0 = time.perf_counter()
    _say(progress, f"{len(fit_idx)} fit / {len(dev_idx)} dev items x {x.shape[1]} dims, "
                   f"{k} classes; C grid {', '.join(f'{c:g}' for c in sorted(c_grid))}")
    for c in sorted(c_grid):
        w, b, it = fit_softmax(xf, yf, k, c, w, b, max_iter, tol)
        acc = float(((xd @ w.t() + b).argmax(1) == yd).double().mean())
        by_c[f"{c:g}"] = acc
        _say(progress, f"C={c:g}: dev {100 * acc:.2f} % ({it} iterations, "
                       f"{time.perf_counter() - t0:.1f} s)")
        if path.update(c, acc, (w, b), progress):
            break
    c, (w, b) = path.best_c, path.best_state
    w, b, it = fit_softmax(x, y, k, c, w, b, max_iter, tol)
    _say(progress, f"refit on all {len(y)} items with C={c:g} ({it} iterations, "
                   f"{time.perf_counter() - t0:.1f} s)")
    return LinearSoftmax(w.double().numpy(), b.double().numpy()), float(c), by_c


def tuned_logreg(
    train_x: Any, train_y: np.ndarray, c_grid: Sequence[float] = C_GRID,
    dev_fraction: float = 0.1, seed: int = 0, max_iter: int = 1000, solver: str = "lbfgs",
    tol: float = 1e-4, progress: bool = False, patience: int = C_PATIENCE,
) -> tuple[Any, float, dict[str, float]]:
    """Multinomial logistic regression with ``C`` chosen on a dev split.

    ``train_x``: (N, D) dense array or scipy sparse matrix; ``train_y``: (N,) class ids.
    Each ``C`` of ``c_grid`` is fitted on the fit part and scored on the dev part; the
    best (ties: the smaller C) is refitted on all N items. Returns (model, C,
    {str(C): dev accuracy}); the model has ``predict``.

    ``solver``: ``lbfgs`` (dense input; sparse input falls back to ``sklearn``) minimises
    the same objective as scikit-learn with torch's L-BFGS in float32, the C values in
    increasing order each starting from the previous solution and the refit from the
    chosen C's, all to scikit-learn's stopping rule (largest gradient entry <= ``tol``,
    at most ``max_iter`` iterations); ``sklearn`` fits every C from scratch with
    scikit-learn's lbfgs (the probe before the warm starts: 4.5x the CPU time at 20 k x
    2,400, docs/text.md). Both stop the path once ``patience`` C values in a row
    (0: never) scored strictly below the best so far (a tie, such as a plateau at the
    majority class, breaks the row): the larger C values cost the most
    iterations, and the dev accuracy rarely recovers after falling twice. ``progress`` prints a line per C to stderr.
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    if not c_grid or any(c <= 0 for c in c_grid):
        raise ConfigError(f"C grid {list(c_grid)}: needs positive values")
    if solver not in SOLVERS:
        raise ConfigError(f"logreg solver {solver!r}: one of {SOLVERS}")
    fit_idx, dev_idx = dev_split(np.asarray(train_y), dev_fraction, seed)
    if solver == "lbfgs" and isinstance(train_x, np.ndarray):
        out = _tuned_torch(train_x, np.asarray(train_y), c_grid, fit_idx, dev_idx, max_iter,
                           tol, progress, patience)
        _edge_note(out[1], c_grid, progress)
        return out
    by_c: dict[str, float] = {}
    path = _CPath(patience, max(c_grid))
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for c in sorted(c_grid):
            m = LogisticRegression(C=c, max_iter=max_iter, tol=tol)
            m.fit(train_x[fit_idx], train_y[fit_idx])
            acc = float((m.predict(train_x[dev_idx]) == train_y[dev_idx]).mean())
            by_c[f"{c:g}"] = acc
            _say(progress, f"C={c:g}: dev {100 * acc:.2f} % ({int(m.n_iter_.max())} "
                           f"iterations, {time.perf_counter() - t0:.1f} s)")
            if path.update(c, acc, None, progress):
                break
        best_c = path.best_c
        model = LogisticRegression(C=best_c, max_iter=max_iter, tol=tol).fit(train_x, train_y)
    _say(progress, f"refit on all {train_x.shape[0]} items with C={best_c:g} "
                   f"({time.perf_counter() - t0:.1f} s)")
    _edge_note(float(best_c), c_grid, progress)
    return model, float(best_c), by_c


def _edge_note(c: float, c_grid: Sequence[float], progress: bool) -> None:
    """Say when the chosen C is the grid's smallest or largest: the best may lie beyond."""
    if len(c_grid) > 1 and c in (min(c_grid), max(c_grid)):
        side = "smallest" if c == min(c_grid) else "largest"
        _say(progress, f"note: C={c:g} is the {side} value of the grid; a C beyond it may "
                       "score higher on dev (--C-grid)")


def _finish(
    model: Any, train_x: Any, train_y: np.ndarray, test_x: Any, test_y: np.ndarray,
    classes: Sequence[str], extra: dict[str, Any],
) -> dict[str, Any]:
    d = _scores(model.predict(test_x), test_y, classes)
    counts = np.bincount(train_y, minlength=len(classes))
    d.update({
        "train_accuracy": float((model.predict(train_x) == train_y).mean()),
        "majority_accuracy": float((test_y == int(counts.argmax())).mean()),
        "train_items": int(train_x.shape[0]),
        "feature_dim": int(train_x.shape[1]),
        **extra,
    })
    return d


def logreg_probe(
    train_x: Tensor | np.ndarray, train_y: Tensor | np.ndarray,
    test_x: Tensor | np.ndarray, test_y: Tensor | np.ndarray, classes: Sequence[str],
    c_grid: Sequence[float] = C_GRID, dev_fraction: float = 0.1, seed: int = 0,
    standardize: bool = True, solver: str = "lbfgs", progress: bool = True,
) -> dict[str, Any]:
    """Tuned logistic regression on dense vectors (N, D); see :func:`tuned_logreg`
    (``solver``; ``progress``: a line per C on stderr).

    Features are standardised with the training mean and std (floor 1e-6) first.
    """
    xtr = np.asarray(train_x, dtype=np.float64)
    xte = np.asarray(test_x, dtype=np.float64)
    ytr, yte = np.asarray(train_y, dtype=np.int64), np.asarray(test_y, dtype=np.int64)
    if standardize:
        mu, sd = xtr.mean(0), np.maximum(xtr.std(0), 1e-6)
        xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
    model, c, by_c = tuned_logreg(xtr, ytr, c_grid, dev_fraction, seed, solver=solver,
                                  progress=progress)
    return _finish(model, xtr, ytr, xte, yte, classes, {
        "probe": "logreg", "C": c, "dev_accuracy_by_C": by_c, "dev_fraction": dev_fraction,
        "standardize": standardize, "solver": solver})


def tfidf_probe(
    train_texts: Sequence[str], train_y: Sequence[int] | np.ndarray,
    test_texts: Sequence[str], test_y: Sequence[int] | np.ndarray, classes: Sequence[str],
    ngrams: int = 2, min_df: int = 1, max_features: int = 0, c_grid: Sequence[float] = C_GRID,
    dev_fraction: float = 0.1, seed: int = 0, progress: bool = True,
) -> dict[str, Any]:
    """The tuned bag-of-words baseline: TF-IDF word 1..``ngrams``-grams (vocabulary and
    idf fitted on the training texts) + logistic regression with ``C`` chosen on a dev
    split of the training items. ``max_features`` 0 keeps every n-gram."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    if ngrams < 1 or min_df < 1 or max_features < 0:
        raise ConfigError(f"bag of words: ngrams={ngrams}, min_df={min_df} must be >= 1 and "
                          f"max_features={max_features} >= 0")
    vec = TfidfVectorizer(lowercase=True, ngram_range=(1, ngrams), min_df=min_df,
                          max_features=max_features or None, sublinear_tf=True,
                          token_pattern=_WORD.pattern)
    xtr = vec.fit_transform(list(train_texts))
    xte = vec.transform(list(test_texts))
    ytr, yte = np.asarray(train_y, dtype=np.int64), np.asarray(test_y, dtype=np.int64)
    model, c, by_c = tuned_logreg(xtr, ytr, c_grid, dev_fraction, seed, solver="sklearn",
                                  progress=progress)
    return _finish(model, xtr, ytr, xte, yte, classes, {
        "probe": "logreg", "C": c, "dev_accuracy_by_C": by_c, "dev_fraction": dev_fraction,
        "features": f"tfidf 1-{ngrams}-grams, min_df {min_df}"})


def majority_result(
    train_y: Sequence[int] | np.ndarray, test_y: Sequence[int] | np.ndarray,
    classes: Sequence[str],
) -> dict[str, Any]:
    """Scores of always answering the commonest training class."""
    ytr, yte = np.asarray(train_y, dtype=np.int64), np.asarray(test_y, dtype=np.int64)
    top = int(np.bincount(ytr, minlength=len(classes)).argmax())
    d = _scores(np.full_like(yte, top), yte, classes)
    d.update({"probe": "majority", "train_accuracy": float((ytr == top).mean()),
              "majority_accuracy": d["accuracy"], "train_items": int(len(ytr)),
              "feature_dim": 0, "majority_class": classes[top]})
    return d


def label_table(train_labels: Mapping[str, str]) -> list[str]:
    """Class names, sorted, from the training labels."""
    return sorted(set(train_labels.values()))


def stack(
    feats: Mapping[str, Tensor | np.ndarray], labels: Mapping[str, str], classes: Sequence[str],
    pool: str = "mean", what: str = "train",
) -> tuple[Tensor, Tensor, list[str], int]:
    """Per-item vectors and class ids for the items that have both features and a label.

    (T, D) features are pooled over rows (``mean``/``max``); returns x (N, D), y (N,),
    the ids used, and the number of labelled items left out because their label is not in
    ``classes`` (a test class never seen in training). Labelled items without features
    are an error.
    """
    index = {c: i for i, c in enumerate(classes)}
    xs, ys, ids = [], [], []
    unknown = 0
    for key in sorted(labels):
        if key not in feats:
            raise DataError(f"{what}: item {key!r} has a label but no features")
        if labels[key] not in index:
            unknown += 1
            continue
        f = torch.tensor(np.asarray(feats[key]), dtype=torch.float32)
        if f.dim() == 1:
            f = f.unsqueeze(0)
        if f.dim() != 2 or f.shape[0] == 0:
            raise DataError(f"{what}: item {key!r} has features of shape {tuple(f.shape)}")
        xs.append(f.mean(0) if pool == "mean" else f.max(0).values)
        ys.append(index[labels[key]])
        ids.append(key)
    if not xs:
        raise DataError(f"{what}: no item has both features and a known label")
    return torch.stack(xs), torch.tensor(ys, dtype=torch.long), ids, unknown


def run_probe(
    train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, classes: Sequence[str],
    hidden: int = 0, epochs: int = 30, lr: float = 1e-3, batch_size: int = 256,
    weight_decay: float = 0.0, seed: int = 0, standardize: bool = True,
) -> dict[str, Any]:
    """Train and score a probe; returns ``result_to_dict`` plus ``train_accuracy``,
    ``majority_accuracy`` (test accuracy of always answering the commonest training class),
    sizes and the feature dimension."""
    n_cls = len(classes)
    probe = train_linear_probe(train_x, train_y, num_classes=n_cls, hidden=hidden,
                               epochs=epochs, lr=lr, batch_size=batch_size,
                               weight_decay=weight_decay, standardize=standardize, seed=seed)
    res = evaluate_probe(probe, test_x, test_y, n_cls)
    train_acc = evaluate_probe(probe, train_x, train_y, n_cls).accuracy
    majority = int(torch.bincount(train_y, minlength=n_cls).argmax())
    d = result_to_dict(res, list(classes))
    d.update({
        "probe": "mlp" if hidden else "linear",
        "train_accuracy": float(train_acc),
        "majority_accuracy": float((test_y == majority).float().mean()),
        "train_items": int(train_x.shape[0]),
        "feature_dim": int(train_x.shape[1]),
        "standardize": standardize, "lr": lr, "epochs": epochs, "weight_decay": weight_decay,
    })
    return d


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """``| features | dim | test acc | macro acc | train acc |`` for probe result dicts.

    A majority-class line (from the first result) is added unless one of the rows is a
    :func:`majority_result`; a footnote names the task, sizes and probe.
    """
    lines = ["| features | dim | test accuracy | macro accuracy | train accuracy |",
             "|---|---|---|---|---|"]
    for r in rows:
        dim = r.get("feature_dim", "?") if r.get("probe") != "majority" else "-"
        lines.append(
            f"| {r.get('name', '?')} | {dim} | "
            f"{100 * r['accuracy']:.1f} % | {100 * r.get('macro_accuracy', float('nan')):.1f} % | "
            f"{100 * r.get('train_accuracy', float('nan')):.1f} % |"
        )
    if rows:
        r = rows[0]
        n_cls = len(r.get("labels", []))
        if not any(x.get("probe") == "majority" for x in rows):
            lines.append(f"| majority class | - | "
                         f"{100 * r.get('majority_accuracy', float('nan')):.1f} % "
                         f"| {100 / max(n_cls, 1):.1f} % | - |")
        probes = sorted({str(x.get("probe", "linear")) for x in rows} - {"majority"})
        lines.append("")
        lines.append(f"Task: {r.get('task', '?')}, {n_cls} classes; {r.get('train_items', '?')} "
                     f"training and {r.get('n', '?')} test items; probe: {', '.join(probes)}"
                     " (logreg: logistic regression, C chosen on a dev split of the training "
                     "items).")
    return "\n".join(lines) + "\n"


def read_vectors(rspec: str) -> dict[str, np.ndarray]:
    """``scp:F.scp`` (Kaldi, via kaldiio) or ``npy:DIR`` -> {id: (T, D) float32}."""
    from pathlib import Path

    import kaldiio

    if rspec.startswith("scp:"):
        path = Path(rspec[4:])
        if not path.is_file():
            raise DataError(f"{path}: feature scp not found")
        return {k: np.asarray(v, dtype=np.float32) for k, v in kaldiio.load_scp(str(path)).items()}
    if rspec.startswith("npy:"):
        d = Path(rspec[4:])
        files = sorted(d.glob("*.npy")) if d.is_dir() else []
        if not files:
            raise DataError(f"{d}: no .npy feature files")
        return {p.stem: np.load(p).astype(np.float32) for p in files}
    raise DataError(f"{rspec}: expected scp:FEATS.scp or npy:DIR")
