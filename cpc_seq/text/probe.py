"""Sentence-level probes for text features, and a tuned bag-of-words baseline.

- :func:`tfidf_probe`: the bag-of-words baseline, scikit-learn's ``TfidfVectorizer``
  (lower-cased word 1+2-grams, sublinear tf, L2-normalised rows) and a multinomial
  ``LogisticRegression`` whose inverse regularisation ``C`` is chosen on a dev split
  carved from the training items (stratified, seeded), then refitted on all of them.
- :func:`logreg_probe`: the same tuned logistic regression on dense per-item vectors
  (standardised with the training mean/std), so CPC features and the bag of words are
  scored by the same probe family.
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
from collections.abc import Mapping, Sequence
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


def tuned_logreg(
    train_x: Any, train_y: np.ndarray, c_grid: Sequence[float] = C_GRID,
    dev_fraction: float = 0.1, seed: int = 0, max_iter: int = 1000,
) -> tuple[Any, float, dict[str, float]]:
    """Multinomial logistic regression (lbfgs) with ``C`` chosen on a dev split.

    ``train_x``: (N, D) dense array or scipy sparse matrix; ``train_y``: (N,) class ids.
    Each ``C`` of ``c_grid`` is fitted on the fit part and scored on the dev part; the
    best (ties: the smaller C) is refitted on all N items. Returns (model, C,
    {str(C): dev accuracy}).
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    if not c_grid or any(c <= 0 for c in c_grid):
        raise ConfigError(f"C grid {list(c_grid)}: needs positive values")
    fit_idx, dev_idx = dev_split(np.asarray(train_y), dev_fraction, seed)
    by_c: dict[str, float] = {}
    best_c, best_acc = None, -1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for c in sorted(c_grid):
            m = LogisticRegression(C=c, max_iter=max_iter)
            m.fit(train_x[fit_idx], train_y[fit_idx])
            acc = float((m.predict(train_x[dev_idx]) == train_y[dev_idx]).mean())
            by_c[f"{c:g}"] = acc
            if acc > best_acc:
                best_c, best_acc = c, acc
        model = LogisticRegression(C=best_c, max_iter=max_iter).fit(train_x, train_y)
    return model, float(best_c), by_c


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
    standardize: bool = True,
) -> dict[str, Any]:
    """Tuned logistic regression on dense vectors (N, D); see :func:`tuned_logreg`.

    Features are standardised with the training mean and std (floor 1e-6) first.
    """
    xtr = np.asarray(train_x, dtype=np.float64)
    xte = np.asarray(test_x, dtype=np.float64)
    ytr, yte = np.asarray(train_y, dtype=np.int64), np.asarray(test_y, dtype=np.int64)
    if standardize:
        mu, sd = xtr.mean(0), np.maximum(xtr.std(0), 1e-6)
        xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
    model, c, by_c = tuned_logreg(xtr, ytr, c_grid, dev_fraction, seed)
    return _finish(model, xtr, ytr, xte, yte, classes, {
        "probe": "logreg", "C": c, "dev_accuracy_by_C": by_c, "dev_fraction": dev_fraction,
        "standardize": standardize})


def tfidf_probe(
    train_texts: Sequence[str], train_y: Sequence[int] | np.ndarray,
    test_texts: Sequence[str], test_y: Sequence[int] | np.ndarray, classes: Sequence[str],
    ngrams: int = 2, min_df: int = 1, max_features: int = 0, c_grid: Sequence[float] = C_GRID,
    dev_fraction: float = 0.1, seed: int = 0,
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
    model, c, by_c = tuned_logreg(xtr, ytr, c_grid, dev_fraction, seed)
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
