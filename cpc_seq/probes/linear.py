"""Linear (and one-hidden-layer MLP) probes on frozen features.

Typical use, frame-level phone probe::

    train = frames_to_dataset(feats, phone_labels, train_utts)
    test = frames_to_dataset(feats, phone_labels, test_utts)
    probe = train_linear_probe(train.x, train.y, num_classes=len(phones))
    result = evaluate_probe(probe, test.x, test.y, num_classes=len(phones))
    save_confusion_png(result, "phone_confusion.png", phones)

and utterance-level speaker probe::

    x = pool_utterances(feats, utts)  # (U, D)
    probe = train_linear_probe(x, speaker_ids, num_classes=n_speakers)
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from cpc_seq.errors import ConfigError, DataError
from cpc_seq.io.atomic import atomic_write

__all__ = [
    "Probe",
    "ProbeResult",
    "FrameDataset",
    "train_linear_probe",
    "evaluate_probe",
    "save_confusion_csv",
    "save_confusion_png",
    "result_to_dict",
    "frames_to_dataset",
    "pool_utterances",
    "check_train_options",
    "new_probe",
    "fit_probe",
    "confusion_counts",
    "result_from_confusion",
    "label_tensor",
    "paired_length",
]

_STD_FLOOR = 1e-6
_EVAL_BATCH = 65536


# --------------------------------------------------------------------------- model


class Probe(nn.Module):
    """A linear classifier (``hidden == 0``) or a one-hidden-layer ReLU MLP.

    The input is standardised with the training-set ``mean`` and ``std`` stored as
    buffers (identity when trained with ``standardize=False``), so the probe is applied
    to raw features and is fully described by its ``state_dict``: rebuild with
    ``Probe(in_dim, num_classes, hidden)`` and ``load_state_dict``.
    """

    def __init__(self, in_dim: int, num_classes: int, hidden: int = 0) -> None:
        super().__init__()
        self.in_dim = int(in_dim)
        self.num_classes = int(num_classes)
        self.hidden = int(hidden)
        self.register_buffer("mean", torch.zeros(self.in_dim))
        self.register_buffer("std", torch.ones(self.in_dim))
        if self.hidden > 0:
            self.net: nn.Module = nn.Sequential(
                nn.Linear(self.in_dim, self.hidden),
                nn.ReLU(),
                nn.Linear(self.hidden, self.num_classes),
            )
        else:
            self.net = nn.Linear(self.in_dim, self.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes)`` for raw features ``x`` of shape ``(N, in_dim)``."""
        x = x.to(dtype=self.mean.dtype, device=self.mean.device)
        return self.net((x - self.mean) / self.std)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = _EVAL_BATCH) -> torch.Tensor:
        """Predicted class ids, a LongTensor of shape ``(N,)`` (computed in batches)."""
        x = _check_features(x, "x")
        if x.shape[1] != self.in_dim:
            raise DataError(f"probe expects {self.in_dim}-dim features, got {x.shape[1]}")
        was_training = self.training
        self.eval()
        try:
            out = [self(x[i : i + batch_size]).argmax(dim=1) for i in range(0, len(x), batch_size)]
        finally:
            self.train(was_training)
        if not out:
            return torch.empty(0, dtype=torch.long)
        return torch.cat(out).cpu()


# ---------------------------------------------------------------------- validation


def _check_features(x: torch.Tensor | np.ndarray, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise DataError(f"{name} must be a tensor, got {type(x).__name__}")
    if x.dim() != 2:
        raise DataError(f"{name} must have shape (N, D), got {tuple(x.shape)}")
    if not x.is_floating_point():
        x = x.float()
    return x.detach()


def _check_labels(
    y: torch.Tensor | np.ndarray, n: int, num_classes: int, name: str
) -> torch.Tensor:
    if isinstance(y, np.ndarray):
        y = torch.from_numpy(y)
    if not isinstance(y, torch.Tensor):
        raise DataError(f"{name} must be a tensor, got {type(y).__name__}")
    if y.dim() != 1 or y.shape[0] != n:
        raise DataError(
            f"{name} must have shape ({n},) to match the features, got {tuple(y.shape)}"
        )
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise DataError(f"{name} must hold integer class ids, got dtype {y.dtype}")
    y = y.detach().to(device="cpu", dtype=torch.long)
    if n:
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= num_classes:
            raise DataError(
                f"{name} holds class ids in [{lo}, {hi}], outside [0, {num_classes - 1}] "
                f"for num_classes={num_classes}"
            )
    return y


def _check_num_classes(num_classes: int) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise ConfigError(f"num_classes must be an integer, got {num_classes!r}")
    if num_classes < 1:
        raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
    return int(num_classes)


def _check_int(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


# ------------------------------------------------------------------------ training


def train_linear_probe(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    *,
    num_classes: int,
    hidden: int = 0,
    epochs: int = 20,
    lr: float = 1e-3,
    batch_size: int = 4096,
    weight_decay: float = 0.0,
    standardize: bool = True,
    seed: int = 0,
    progress: bool = False,
) -> Probe:
    """Train a probe with Adam and cross-entropy on shuffled minibatches.

    Args:
        train_x: features ``(N, D)`` (any float dtype; kept on the CPU).
        train_y: class ids ``(N,)`` in ``[0, num_classes)``.
        num_classes: number of output classes.
        hidden: 0 for a linear probe, ``> 0`` for one hidden ReLU layer of that width.
        epochs: passes over the data; a fresh shuffle each epoch.
        lr: Adam learning rate.
        batch_size: minibatch size.
        weight_decay: Adam's (coupled, L2) weight decay.
        standardize: standardise each feature with the training mean and std (stored in
            the probe and applied by it at prediction time; constant features get std 1).
        seed: seeds the weight initialisation and the shuffling, without touching the
            global RNG state.
        progress: show a tqdm bar over epochs with the mean training loss.

    Returns:
        The trained :class:`Probe`, in eval mode.

    Raises:
        DataError: shapes that do not match, out-of-range labels, non-finite features,
            or an empty training set.
        ConfigError: a non-positive ``epochs``/``lr``/``batch_size``, negative
            ``hidden``/``weight_decay``.
    """
    num_classes, hidden, epochs, batch_size = check_train_options(
        num_classes, hidden, epochs, batch_size, lr, weight_decay)

    x = _check_features(train_x, "train_x").cpu()
    n, dim = x.shape
    if n == 0:
        raise DataError("train_x is empty: no training frames")
    if dim == 0:
        raise DataError("train_x has 0 feature dimensions")
    y = _check_labels(train_y, n, num_classes, "train_y")

    # Statistics in float64 chunks: one pass, no full-size temporary, exact enough.
    s1 = torch.zeros(dim, dtype=torch.float64)
    s2 = torch.zeros(dim, dtype=torch.float64)
    for i in range(0, n, _EVAL_BATCH):
        chunk = x[i : i + _EVAL_BATCH].to(torch.float64)
        s1 += chunk.sum(0)
        s2 += (chunk * chunk).sum(0)
    if not (torch.isfinite(s1).all() and torch.isfinite(s2).all()):
        raise DataError("train_x contains NaN or infinite values")

    probe = new_probe(dim, num_classes, hidden, seed,
                      (s1, s2, n) if standardize else None)
    gen = torch.Generator().manual_seed(seed)

    def epoch_batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, batch_size):
            idx = perm[i : i + batch_size]
            yield x.index_select(0, idx), y.index_select(0, idx)

    fit_probe(probe, epoch_batches, epochs=epochs, n=n, lr=lr, weight_decay=weight_decay,
              progress=progress)
    return probe


def check_train_options(num_classes: int, hidden: int, epochs: int, batch_size: int,
                        lr: float, weight_decay: float) -> tuple[int, int, int, int]:
    """Validate the options of :func:`train_linear_probe`; returns them as ints
    ``(num_classes, hidden, epochs, batch_size)``.

    Raises:
        ConfigError: naming the first bad option.
    """
    num_classes = _check_num_classes(num_classes)
    hidden = _check_int("hidden", hidden, 0)
    epochs = _check_int("epochs", epochs, 1)
    batch_size = _check_int("batch_size", batch_size, 1)
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ConfigError(f"lr must be a positive number, got {lr!r}")
    if not (
        isinstance(weight_decay, (int, float)) and math.isfinite(weight_decay) and weight_decay >= 0
    ):
        raise ConfigError(f"weight_decay must be a number >= 0, got {weight_decay!r}")
    return num_classes, hidden, epochs, batch_size


def new_probe(dim: int, num_classes: int, hidden: int, seed: int,
              sums: tuple[torch.Tensor, torch.Tensor, int] | None) -> Probe:
    """An untrained probe seeded with ``seed`` (the global RNG is left alone).

    ``sums`` = (sum of x, sum of x**2, count) over the training frames, float64 ``(D,)``
    each, sets the standardisation (population std; constant features get std 1);
    None leaves it the identity.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        probe = Probe(dim, num_classes, hidden)
    if sums is not None:
        s1, s2, n = sums
        mean = s1 / n
        var = (s2 / n - mean * mean).clamp_min(0.0)
        std = var.sqrt()
        std = torch.where(std > _STD_FLOOR * (1.0 + mean.abs()), std, torch.ones_like(std))
        probe.mean.copy_(mean.float())
        probe.std.copy_(std.float())
    return probe


def fit_probe(
    probe: Probe,
    epoch_batches: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]],
    *,
    epochs: int,
    n: int,
    lr: float,
    weight_decay: float,
    progress: bool,
    frame_bar: bool = False,
) -> Probe:
    """Train ``probe`` in place with Adam and cross-entropy; ``epoch_batches()`` yields
    one epoch's minibatches ``(x (B, D), y (B,))``, ``n`` items in all.

    ``progress`` shows a tqdm bar over epochs, or with ``frame_bar`` over the items of
    all epochs (for passes long enough to want one), with the epoch's mean loss.
    Leaves the probe in eval mode.
    """
    opt = torch.optim.Adam(probe.parameters(), lr=float(lr), weight_decay=float(weight_decay))
    loss_fn = nn.CrossEntropyLoss()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = (tqdm(total=epochs * n, desc="probe", unit="frame", unit_scale=True)
               if frame_bar else tqdm(total=epochs, desc="probe", unit="epoch"))
    probe.train()
    for epoch in range(epochs):
        total, seen = 0.0, 0
        for xb, yb in epoch_batches():
            loss = loss_fn(probe(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(yb)
            seen += len(yb)
            if bar is not None and frame_bar:
                bar.update(len(yb))
        if bar is not None:
            if not frame_bar:
                bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{total / max(seen, 1):.4f}")
    if bar is not None:
        bar.close()
    probe.eval()
    return probe


# ---------------------------------------------------------------------- evaluation


@dataclass
class ProbeResult:
    """Scores of a probe on one labelled set.

    ``confusion[i, j]`` counts frames of true class ``i`` predicted as ``j``;
    ``per_class_accuracy`` only has the classes present in the evaluated labels.
    """

    accuracy: float
    per_class_accuracy: dict[int, float]
    confusion: np.ndarray
    n: int

    @property
    def class_counts(self) -> np.ndarray:
        """Number of evaluated items of each true class (row sums of the confusion)."""
        return self.confusion.sum(axis=1)


def evaluate_probe(probe: Probe, x: torch.Tensor, y: torch.Tensor, num_classes: int) -> ProbeResult:
    """Accuracy, per-class accuracy and ``(C, C)`` confusion of ``probe`` on ``(x, y)``."""
    num_classes = _check_num_classes(num_classes)
    x = _check_features(x, "x")
    y = _check_labels(y, x.shape[0], num_classes, "y")
    n = int(y.shape[0])
    if n == 0:
        raise DataError("cannot evaluate a probe on an empty set")
    return result_from_confusion(confusion_counts(probe, x, y, num_classes))


def confusion_counts(probe: Probe, x: torch.Tensor, y: torch.Tensor, num_classes: int
                     ) -> np.ndarray:
    """``(C, C)`` int64 counts of (true ``y``, predicted) over the rows of ``x`` ``(N, D)``;
    sums over chunks of a set give the set's confusion."""
    pred = probe.predict(x)
    if len(pred) and int(pred.max()) >= num_classes:
        raise ConfigError(f"probe predicts class {int(pred.max())} but num_classes={num_classes}")
    yy = y.numpy()
    pp = pred.numpy()
    confusion = np.bincount(yy * num_classes + pp, minlength=num_classes * num_classes)
    return confusion.reshape(num_classes, num_classes).astype(np.int64)


def result_from_confusion(confusion: np.ndarray) -> ProbeResult:
    """The :class:`ProbeResult` of a ``(C, C)`` confusion matrix of counts."""
    n = int(confusion.sum())
    if n == 0:
        raise DataError("cannot evaluate a probe on an empty set")
    counts = confusion.sum(axis=1)
    diag = np.diag(confusion)
    per_class = {int(c): float(diag[c] / counts[c]) for c in np.flatnonzero(counts)}
    return ProbeResult(
        accuracy=float(diag.sum() / n),
        per_class_accuracy=per_class,
        confusion=confusion,
        n=n,
    )


# ------------------------------------------------------------------------- output


def _atomic_write(path: str | os.PathLike[str], write: Callable[[io.BufferedWriter], None]) -> None:
    """``write(f)`` into ``path`` through :func:`cpc_seq.io.atomic.atomic_write`."""
    with atomic_write(path, "wb") as f:
        write(f)


def _label_names(result: ProbeResult, labels: Sequence[str] | None) -> list[str]:
    c = result.confusion.shape[0]
    if labels is None:
        return [str(i) for i in range(c)]
    names = [str(lab) for lab in labels]
    if len(names) != c:
        raise DataError(f"got {len(names)} label names for a {c}-class confusion matrix")
    return names


def save_confusion_csv(
    result: ProbeResult, path: str | os.PathLike[str], labels: Sequence[str] | None
) -> None:
    """Write the raw-count confusion matrix as CSV: header ``true\\pred,<labels>``,
    then one row per true class starting with its label."""
    names = _label_names(result, labels)

    def write(f: io.BufferedWriter) -> None:
        buf = io.StringIO(newline="")
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["true\\pred", *names])
        for name, row in zip(names, result.confusion):
            w.writerow([name, *(int(v) for v in row)])
        f.write(buf.getvalue().encode("utf-8"))

    _atomic_write(path, write)


def save_confusion_png(
    result: ProbeResult,
    path: str | os.PathLike[str],
    labels: Sequence[str] | None,
    title: str | None = None,
) -> None:
    """Plot the row-normalised confusion matrix (each true class sums to 1; classes
    absent from the evaluated set are left at 0) as a PNG.

    Uses matplotlib's Agg canvas directly, so it neither needs a display nor changes
    the pyplot backend of the calling program.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = _label_names(result, labels)
    c = len(names)
    conf = result.confusion.astype(np.float64)
    rows = conf.sum(axis=1, keepdims=True)
    norm = np.divide(conf, rows, out=np.zeros_like(conf), where=rows > 0)

    side = float(min(40.0, max(4.0, 0.22 * c + 2.0)))
    fig = Figure(figsize=(side + 1.2, side))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(norm, vmin=0.0, vmax=1.0, cmap="Blues", interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if c <= 120:
        fontsize = 8 if c <= 40 else 6
        ax.set_xticks(range(c))
        ax.set_xticklabels(names, rotation=90, fontsize=fontsize)
        ax.set_yticks(range(c))
        ax.set_yticklabels(names, fontsize=fontsize)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or f"accuracy {100 * result.accuracy:.2f}% (n={result.n})")
    fig.tight_layout()

    _atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))


def result_to_dict(result: ProbeResult, labels: Sequence[str] | None = None) -> dict:
    """A JSON-serialisable summary: accuracy, n, per-class accuracy and counts keyed
    by label name, the macro (class-balanced) accuracy, and the confusion matrix."""
    names = _label_names(result, labels)
    counts = result.class_counts
    per_class = {names[c]: float(a) for c, a in sorted(result.per_class_accuracy.items())}
    macro = float(np.mean(list(per_class.values()))) if per_class else float("nan")
    return {
        "n": int(result.n),
        "accuracy": float(result.accuracy),
        "macro_accuracy": macro,
        "per_class_accuracy": per_class,
        "class_counts": {names[c]: int(counts[c]) for c in range(len(names)) if counts[c]},
        "labels": names,
        "confusion": [[int(v) for v in row] for row in result.confusion],
    }


# ------------------------------------------------------------------ dataset helpers


@dataclass
class FrameDataset:
    """Frames of several utterances stacked for a probe.

    Unpacks like the pair ``x, y = frames_to_dataset(...)``; ``skipped`` lists the
    utterances left out because they had no labels, and ``trimmed_frames`` counts the
    frames dropped to reconcile feature and label lengths.
    """

    x: torch.Tensor
    y: torch.Tensor
    skipped: list[str] = field(default_factory=list)
    trimmed_frames: int = 0
    utts: list[str] = field(default_factory=list)

    @property
    def n_skipped(self) -> int:
        return len(self.skipped)

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter((self.x, self.y))


def _as_tensor_2d(value: object, utt: str) -> torch.Tensor:
    t = torch.from_numpy(np.asarray(value)) if isinstance(value, np.ndarray) else value
    if not isinstance(t, torch.Tensor) or t.dim() != 2:
        shape = tuple(t.shape) if hasattr(t, "shape") else type(t).__name__
        raise DataError(f"features of utterance {utt!r} must have shape (T, D), got {shape}")
    return t.detach()


def label_tensor(lab: object, utt: str) -> torch.Tensor:
    """The frame labels of ``utt`` as a 1-D integer tensor (not copied when possible).

    Raises:
        DataError: not 1-D, or not integers, naming the utterance.
    """
    lab_t = lab if isinstance(lab, torch.Tensor) else torch.as_tensor(np.asarray(lab))
    if lab_t.dim() != 1:
        raise DataError(
            f"labels of utterance {utt!r} must have shape (T,), got {tuple(lab_t.shape)}"
        )
    if lab_t.is_floating_point() or lab_t.is_complex() or lab_t.dtype == torch.bool:
        raise DataError(f"labels of utterance {utt!r} must be integers, got {lab_t.dtype}")
    return lab_t


def paired_length(utt: str, t_feat: int, t_lab: int, tolerance: int) -> int:
    """Frames kept of an utterance with ``t_feat`` feature and ``t_lab`` label frames:
    the shorter length, when they differ by at most ``tolerance``.

    Raises:
        DataError: a larger difference, naming the utterance and both lengths.
    """
    if abs(t_feat - t_lab) > tolerance:
        raise DataError(
            f"utterance {utt!r}: {t_feat} feature frames but {t_lab} label frames "
            f"(difference {abs(t_feat - t_lab)} > tolerance {tolerance})"
        )
    return min(t_feat, t_lab)


def frames_to_dataset(
    features: Mapping[str, torch.Tensor],
    labels: Mapping[str, np.ndarray],
    utts: Sequence[str],
    tolerance: int = 2,
) -> FrameDataset:
    """Stack the frames of ``utts`` with their frame labels.

    Feature frame ``t`` is paired with label ``t``.  When the lengths differ by at most
    ``tolerance`` frames (rounding at the end of an utterance) both are trimmed to the
    shorter one; a larger difference means the two do not share a frame convention and
    is an error.  Utterances without labels are skipped (listed in ``skipped``).

    Raises:
        DataError: an utterance without features, a length mismatch above
            ``tolerance`` (naming the utterance and both lengths), inconsistent
            feature dimensions, non-integer labels, or nothing left to stack.
        ConfigError: a negative ``tolerance``.
    """
    tolerance = _check_int("tolerance", tolerance, 0)
    xs: list[torch.Tensor] = []
    ys: list[torch.Tensor] = []
    used: list[str] = []
    skipped: list[str] = []
    trimmed = 0
    dim: int | None = None
    for utt in utts:
        if utt not in features:
            raise DataError(f"utterance {utt!r} has no features")
        if utt not in labels:
            skipped.append(utt)
            continue
        feat = _as_tensor_2d(features[utt], utt)
        if dim is None:
            dim = feat.shape[1]
        elif feat.shape[1] != dim:
            raise DataError(
                f"features of utterance {utt!r} have {feat.shape[1]} dims, earlier ones {dim}"
            )
        lab_t = label_tensor(labels[utt], utt)
        t_feat, t_lab = feat.shape[0], lab_t.shape[0]
        t = paired_length(utt, t_feat, t_lab, tolerance)
        trimmed += (t_feat - t) + (t_lab - t)
        xs.append(feat[:t])
        ys.append(lab_t[:t].to(torch.long))
        used.append(utt)
    if not xs:
        raise DataError(
            f"no frames to stack: {len(skipped)} of {len(utts)} utterances have no labels"
        )
    return FrameDataset(
        x=torch.cat(xs), y=torch.cat(ys), skipped=skipped, trimmed_frames=trimmed, utts=used
    )


def pool_utterances(
    features: Mapping[str, torch.Tensor], utts: Sequence[str], how: str = "mean",
    progress: bool = False,
) -> torch.Tensor:
    """One vector per utterance, for utterance-level (speaker) probes.

    ``how`` is ``"mean"`` or ``"max"`` over frames (``(U, D)``), or ``"meanstd"``: the
    mean and population std concatenated (``(U, 2 D)``).  Rows follow ``utts``. Each
    utterance is looked up once, so a lazy mapping (features read from disk on lookup)
    is pooled holding one utterance at a time; ``progress`` shows a bar.
    """
    if how not in ("mean", "max", "meanstd"):
        raise ConfigError(f"how must be 'mean', 'max' or 'meanstd', got {how!r}")
    if len(utts) == 0:
        raise DataError("no utterances to pool")
    rows = []
    dim: int | None = None
    from tqdm.auto import tqdm

    for utt in tqdm(utts, desc=f"pool ({how})", unit="utt", disable=not progress, leave=False):
        if utt not in features:
            raise DataError(f"utterance {utt!r} has no features")
        feat = _as_tensor_2d(features[utt], utt)
        if feat.shape[0] == 0:
            raise DataError(f"utterance {utt!r} has no frames to pool")
        if dim is None:
            dim = feat.shape[1]
        elif feat.shape[1] != dim:
            raise DataError(
                f"features of utterance {utt!r} have {feat.shape[1]} dims, earlier ones {dim}"
            )
        f = feat if feat.is_floating_point() else feat.float()
        if how == "mean":
            rows.append(f.mean(0))
        elif how == "max":
            rows.append(f.max(0).values)
        else:
            rows.append(torch.cat([f.mean(0), f.std(0, unbiased=False)]))
    return torch.stack(rows)
