"""Sentence-level probes for text features, and a bag-of-words baseline.

- :class:`HashedBow`: hashed unigram + bigram counts (lower-cased words), weighted
  ``log(1 + tf) * idf`` with the idf fitted on the probe's training sentences, each row
  L2-normalised. Plain numpy (``zlib.crc32`` hashing, so it is the same on every run).
  Its probe is a plain logistic regression on these rows (no per-feature
  standardisation: dividing sparse n-gram columns by their tiny std blows rare n-grams up
  and the probe overfits; on the KJV book-group task that costs about 10 points).
- :func:`run_probe`: a linear (or MLP) probe on per-item vectors with
  :func:`cpc_seq.probes.linear.train_linear_probe`, scored with ``evaluate_probe``; the
  result dict also carries the majority-class accuracy for reference.
- :func:`markdown_table`: the results as a markdown table.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from cpc_seq.errors import DataError
from cpc_seq.probes.linear import evaluate_probe, result_to_dict, train_linear_probe

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def words(text: str) -> list[str]:
    """Lower-cased word tokens (letters/digits, with an inner apostrophe)."""
    return _WORD.findall(text.lower())


class HashedBow:
    """Hashed n-gram TF-IDF features: ``fit(texts)`` then ``transform(texts) -> (N, dim)``."""

    def __init__(self, dim: int = 8192, ngrams: int = 2) -> None:
        if dim < 1 or ngrams < 1:
            raise DataError(f"bag of words: dim={dim} and ngrams={ngrams} must be positive")
        self.dim, self.ngrams = dim, ngrams
        self.idf: np.ndarray | None = None

    def _bins(self, text: str) -> list[int]:
        w = words(text)
        grams = []
        for n in range(1, self.ngrams + 1):
            grams += [" ".join(w[i : i + n]) for i in range(len(w) - n + 1)]
        return [zlib.crc32(g.encode("utf-8")) % self.dim for g in grams]

    def counts(self, texts: Sequence[str]) -> np.ndarray:
        """Raw hashed counts (N, dim) float32."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            np.add.at(out[i], self._bins(t), 1.0)
        return out

    def fit(self, texts: Sequence[str]) -> HashedBow:
        df = (self.counts(texts) > 0).sum(0)
        self.idf = (np.log((1.0 + len(texts)) / (1.0 + df)) + 1.0).astype(np.float32)
        return self

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        """(N, dim) float32 TF-IDF rows with unit L2 norm (all-zero rows stay zero)."""
        if self.idf is None:
            raise DataError("HashedBow.transform before fit")
        x = np.log1p(self.counts(texts)) * self.idf
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        return x / np.maximum(norm, 1e-12)


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
    """``| features | dim | test acc | macro acc | train acc |`` for probe result dicts,
    followed by the majority-class line of the first result."""
    lines = ["| features | dim | test accuracy | macro accuracy | train accuracy |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r.get('name', '?')} | {r.get('feature_dim', '?')} | "
            f"{100 * r['accuracy']:.1f} % | {100 * r.get('macro_accuracy', float('nan')):.1f} % | "
            f"{100 * r.get('train_accuracy', float('nan')):.1f} % |"
        )
    if rows:
        r = rows[0]
        n_cls = len(r.get("labels", []))
        lines.append(f"| majority class | - | {100 * r.get('majority_accuracy', float('nan')):.1f} % "
                     f"| {100 / max(n_cls, 1):.1f} % | - |")
        lines.append("")
        lines.append(f"Task: {r.get('task', '?')}, {n_cls} classes; {r.get('train_items', '?')} "
                     f"training and {r.get('n', '?')} test items; {r.get('probe', 'linear')} probe.")
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
