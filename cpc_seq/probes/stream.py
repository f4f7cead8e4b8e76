"""Probes on more frames than fit in memory: features are read one utterance at a time.

The CPC paper's phone probe on LibriSpeech-100 sees about 30 M frames of 256-dim
features (30 GB as float32). Here the features stay on disk, behind a mapping that
reads an utterance when it is looked up (:func:`cpc_seq.io.feature_index.open_features`),
and the probe sees them in three kinds of pass:

1. :func:`scan_frames`: one pass over the training utterances checks every utterance
   as :func:`~cpc_seq.probes.linear.frames_to_dataset` does (same messages), records
   its length and accumulates the standardisation statistics (float64 sums). When all
   frames fit in ``buffer_frames`` they are kept, and the probe is trained exactly as
   the in-memory :func:`~cpc_seq.probes.linear.train_linear_probe` trains it (same
   batches, same result). Test utterances are checked from their headers only.
2. :func:`shuffled_batches`: each epoch visits the utterances in a fresh random order
   and streams their frames through a shuffle buffer of ``buffer_frames`` frames:
   minibatches are drawn at random from the buffer and the freed rows take the next
   frames. Memory: the buffer plus one utterance.
3. :func:`evaluate_stream`: predictions in chunks of the same rows the in-memory
   evaluation uses, so the accuracy is the same as in memory.

Labels (int64 per frame, 8 bytes where a 256-dim frame takes 1 KiB) stay in memory.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from cpc_seq.errors import ConfigError, DataError
from cpc_seq.probes.linear import (
    _EVAL_BATCH,
    FrameDataset,
    Probe,
    ProbeResult,
    check_train_options,
    confusion_counts,
    evaluate_probe,
    fit_probe,
    label_tensor,
    new_probe,
    paired_length,
    result_from_confusion,
    train_linear_probe,
)

__all__ = [
    "DEFAULT_BUFFER_FRAMES",
    "FrameSet",
    "UtteranceFeatures",
    "scan_frames",
    "shuffled_batches",
    "train_probe_on",
    "evaluate_stream",
    "num_frames_of",
]

#: Frames held in memory by default: 0.5 GB of 256-dim float32 (the CPC paper's
#: features), about 80 minutes of speech at 100 frames per second.
DEFAULT_BUFFER_FRAMES = 500_000


def num_frames_of(feats: Mapping[str, torch.Tensor], utt: str) -> int:
    """Rows of ``feats[utt]``, from the header where the mapping can read only that."""
    counter = getattr(feats, "num_frames", None)
    if counter is not None:
        return int(counter(utt))
    return int(_as_2d(feats[utt], utt).shape[0])


def _as_2d(value: object, utt: str) -> torch.Tensor:
    t = torch.from_numpy(np.asarray(value)) if isinstance(value, np.ndarray) else value
    if not isinstance(t, torch.Tensor) or t.dim() != 2:
        shape = tuple(t.shape) if hasattr(t, "shape") else type(t).__name__
        raise DataError(f"features of utterance {utt!r} must have shape (T, D), got {shape}")
    t = t.detach()
    return t if t.dtype == torch.float32 else t.float()


def _bar(total: int, desc: str, unit: str, progress: bool):  # noqa: ANN202 - tqdm type
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, disable=not progress,
                leave=False)


@dataclass
class FrameSet:
    """The labelled frames of ``utts``, read from ``feats`` when needed.

    ``lengths[i]`` is the number of frames kept of ``utts[i]`` (feature and label
    lengths reconciled within the tolerance); ``sums`` = (sum of x, sum of x**2) in
    float64 over all kept frames, when the set was scanned in full; ``held`` is the
    whole set in memory when it fitted the buffer.
    """

    feats: Mapping[str, torch.Tensor]
    labels: Mapping[str, np.ndarray]
    utts: list[str]
    lengths: list[int]
    dim: int | None
    skipped: list[str] = field(default_factory=list)
    trimmed_frames: int = 0
    sums: tuple[torch.Tensor, torch.Tensor] | None = None
    held: FrameDataset | None = None

    @property
    def n_frames(self) -> int:
        return int(sum(self.lengths))

    def read(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Utterance ``i``: features ``(T, D)`` float32 and labels ``(T,)`` int64."""
        utt = self.utts[i]
        x = _as_2d(self.feats[utt], utt)
        if self.dim is not None and x.shape[1] != self.dim:
            raise DataError(
                f"features of utterance {utt!r} have {x.shape[1]} dims, earlier ones {self.dim}")
        t = self.lengths[i]
        if x.shape[0] < t:
            raise DataError(f"features of utterance {utt!r} have {x.shape[0]} frames, "
                            f"{t} when first read")
        y = label_tensor(self.labels[utt], utt)[:t].to(torch.long)
        return x[:t], y


def scan_frames(
    feats: Mapping[str, torch.Tensor],
    labels: Mapping[str, np.ndarray],
    utts: Sequence[str],
    tolerance: int = 2,
    *,
    full: bool = True,
    hold_frames: int = 0,
    num_classes: int | None = None,
    progress: bool = False,
    desc: str = "scan",
) -> FrameSet:
    """Check the utterances of a probe set in one pass (as
    :func:`~cpc_seq.probes.linear.frames_to_dataset`, with the same messages) and record
    their lengths.

    With ``full``, every utterance is read: dimensions are checked, the float64 sums for
    the standardisation are accumulated, and the frames are kept in ``held`` when all of
    them fit in ``hold_frames``. Without, only lengths are read (from headers where the
    mapping can); dimensions are checked when the frames are read later.

    Raises:
        DataError: an utterance without features, lengths beyond ``tolerance``,
            inconsistent dimensions, non-integer or out-of-range labels (with
            ``num_classes``), non-finite features, or nothing left.
    """
    if isinstance(tolerance, bool) or not isinstance(tolerance, int) or tolerance < 0:
        raise ConfigError(f"tolerance must be an integer >= 0, got {tolerance!r}")
    used: list[str] = []
    lengths: list[int] = []
    skipped: list[str] = []
    trimmed = 0
    scan = _FullScan(hold_frames) if full else None
    bar = _bar(len(utts), desc, "utt", progress)
    try:
        for utt in utts:
            bar.update(1)
            if utt not in feats:
                raise DataError(f"utterance {utt!r} has no features")
            if utt not in labels:
                skipped.append(utt)
                continue
            lab = label_tensor(labels[utt], utt)
            if scan is not None:
                x = scan.read(feats, utt)
                t_feat = x.shape[0]
            else:
                t_feat = num_frames_of(feats, utt)
            t = paired_length(utt, t_feat, lab.shape[0], tolerance)
            trimmed += (t_feat - t) + (lab.shape[0] - t)
            y = lab[:t]
            _check_label_range(y, utt, num_classes)
            if scan is not None:
                scan.add(feats, utt, x[:t], y)
            used.append(utt)
            lengths.append(t)
    finally:
        bar.close()
    if not used:
        raise DataError(
            f"no frames to stack: {len(skipped)} of {len(utts)} utterances have no labels"
        )
    if scan is None:
        return FrameSet(feats, labels, used, lengths, None, skipped, trimmed, None, None)
    held = scan.held(skipped, trimmed, used)
    return FrameSet(feats, labels, used, lengths, scan.dim, skipped, trimmed,
                    scan.sums(sum(lengths)), held)


def _check_label_range(y: torch.Tensor, utt: str, num_classes: int | None) -> None:
    """With ``num_classes``, the ``(T,)`` labels ``y`` must lie in ``[0, num_classes)``."""
    if num_classes is not None and len(y):
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= num_classes:
            raise DataError(f"labels of utterance {utt!r} hold class ids in [{lo}, {hi}], "
                            f"outside [0, {num_classes - 1}]")


@dataclass
class _FullScan:
    """State of a full :func:`scan_frames` pass: the feature dimension ``D``, the float64
    sums of ``x - ref`` and ``(x - ref)**2`` (``(D,)`` each; ``ref`` is the ``(D,)`` mean
    of the first utterance), and the frames held while they fit in ``hold_frames``.
    """

    hold_frames: int
    dim: int | None = None
    s1: torch.Tensor | None = None
    s2: torch.Tensor | None = None
    ref: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    kept_x: list[torch.Tensor] | None = field(default_factory=list)
    kept_y: list[torch.Tensor] = field(default_factory=list)
    n_kept: int = 0

    def read(self, feats: Mapping[str, torch.Tensor], utt: str) -> torch.Tensor:
        """Utterance ``utt`` as ``(T, D)`` float32; the first one read fixes ``D``."""
        x = _as_2d(feats[utt], utt)
        if self.dim is None:
            self.dim = x.shape[1]
            self.s1 = torch.zeros(self.dim, dtype=torch.float64)
            self.s2 = torch.zeros(self.dim, dtype=torch.float64)
            self.ref = x.mean(0) if len(x) else torch.zeros(self.dim)
        elif x.shape[1] != self.dim:
            raise DataError(f"features of utterance {utt!r} have {x.shape[1]} dims, "
                            f"earlier ones {self.dim}")
        return x

    def add(
        self, feats: Mapping[str, torch.Tensor], utt: str, x: torch.Tensor, y: torch.Tensor
    ) -> None:
        """Add the kept ``(t, D)`` frames ``x`` (labels ``(t,)`` ``y``) of ``utt`` to the
        sums, and hold them while everything held so far fits in ``hold_frames``."""
        assert self.s1 is not None and self.s2 is not None
        t = x.shape[0]
        # sums of x - ref in float32 per utterance (no float64 copy of the
        # frames), accumulated in float64: robust when |mean| >> std
        d = x - self.ref
        u1, u2 = d.sum(0).double(), (d * d).sum(0).double()
        del d
        if not (torch.isfinite(u1).all() and torch.isfinite(u2).all()):
            where = getattr(feats, "where", None)
            at = f"{where(utt)}: " if where is not None else ""
            raise DataError(f"{at}features of utterance {utt!r} contain NaN or "
                            "infinite values")
        self.s1 += u1
        self.s2 += u2
        if self.kept_x is not None:
            if self.n_kept + t <= self.hold_frames:
                self.kept_x.append(x)
                self.kept_y.append(y.to(torch.long))
                self.n_kept += t
            else:  # does not fit: stream it instead
                self.kept_x = None
                self.kept_y = []

    def sums(self, n: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(D,)`` float64 sums of x and x**2 over the ``n`` frames added, from those
        of ``x - ref``; ``None`` when nothing was read."""
        if self.s1 is None or self.s2 is None:
            return None
        r = self.ref.double()
        return (self.s1 + n * r, self.s2 + 2 * r * self.s1 + n * r * r)

    def held(self, skipped: list[str], trimmed: int, used: list[str]) -> FrameDataset | None:
        """All frames ``(N, D)`` and labels ``(N,)`` when they fitted, else ``None``."""
        if self.kept_x is None:
            return None
        return FrameDataset(x=torch.cat(self.kept_x), y=torch.cat(self.kept_y),
                            skipped=skipped, trimmed_frames=trimmed, utts=used)


def shuffled_batches(
    frames: FrameSet, batch_size: int, buffer_frames: int, gen: torch.Generator,
    turnover: int = 4,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of minibatches ``(x (B, D), y (B,))`` through a shuffle buffer.

    The utterances are visited in a random order (from ``gen``) and their frames stream
    into a buffer of ``buffer_frames`` rows (whole minibatches, at least one). Once it
    is full, a random ``1 / turnover`` of the buffered frames leaves as minibatches and
    the freed rows take the next frames of the stream, and so on; at the end the buffer
    is emptied in random order. Every frame is seen once per epoch, only the last
    minibatch is short, and a minibatch mixes frames of the many utterances that the
    buffer holds rather than of one fill. Holds the buffer and one utterance.
    """
    if frames.dim is None:
        raise DataError("shuffled_batches needs a set scanned with full=True")
    cap = min(max(batch_size, buffer_frames // batch_size * batch_size), frames.n_frames)
    step = max(batch_size, cap // turnover // batch_size * batch_size)
    bx = torch.empty(cap, frames.dim, dtype=torch.float32)
    by = torch.empty(cap, dtype=torch.long)
    order = iter(torch.randperm(len(frames.utts), generator=gen).tolist())
    cur: tuple[torch.Tensor, torch.Tensor] | None = None
    pos = 0

    def refill(slots: torch.Tensor) -> int:
        """Copy the next frames of the stream into rows ``slots``; returns how many."""
        nonlocal cur, pos
        k = 0
        while k < len(slots):
            if cur is None:
                i = next(order, None)
                if i is None:
                    break
                cur, pos = frames.read(i), 0
            x, y = cur
            take = min(len(slots) - k, len(y) - pos)
            rows = slots[k : k + take]
            bx.index_copy_(0, rows, x[pos : pos + take])
            by.index_copy_(0, rows, y[pos : pos + take])
            k += take
            pos += take
            if pos == len(y):
                cur = None
        return k

    valid = torch.arange(refill(torch.arange(cap)))
    while True:
        perm = valid[torch.randperm(len(valid), generator=gen)]
        out = perm[:step]
        for i in range(0, len(out), batch_size):
            idx = out[i : i + batch_size]
            yield bx.index_select(0, idx), by.index_select(0, idx)
        got = refill(out)
        valid = torch.cat([perm[step:], out[:got]])
        if got < len(out):  # the stream is done: empty the buffer
            perm = valid[torch.randperm(len(valid), generator=gen)]
            for i in range(0, len(perm), batch_size):
                idx = perm[i : i + batch_size]
                yield bx.index_select(0, idx), by.index_select(0, idx)
            return


def train_probe_on(
    frames: FrameSet,
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
    buffer_frames: int = DEFAULT_BUFFER_FRAMES,
) -> Probe:
    """:func:`~cpc_seq.probes.linear.train_linear_probe` on a scanned :class:`FrameSet`.

    A set held in memory is trained on exactly as the in-memory function does; a larger
    one streams through :func:`shuffled_batches` (standardised with the scan's
    statistics), holding ``buffer_frames`` frames.
    """
    if frames.held is not None:
        return train_linear_probe(
            frames.held.x, frames.held.y, num_classes=num_classes, hidden=hidden, epochs=epochs,
            lr=lr, batch_size=batch_size, weight_decay=weight_decay, standardize=standardize,
            seed=seed, progress=progress)
    num_classes, hidden, epochs, batch_size = check_train_options(
        num_classes, hidden, epochs, batch_size, lr, weight_decay)
    if frames.sums is None or frames.dim is None:
        raise DataError("train_probe_on needs a set scanned with full=True")
    if frames.dim == 0:
        raise DataError("the training features have 0 dimensions")
    n = frames.n_frames
    if n == 0:
        raise DataError("no training frames")
    s1, s2 = frames.sums
    probe = new_probe(frames.dim, num_classes, hidden, seed,
                      (s1, s2, n) if standardize else None)
    gen = torch.Generator().manual_seed(seed)
    fit_probe(probe, lambda: shuffled_batches(frames, batch_size, buffer_frames, gen),
              epochs=epochs, n=n, lr=lr, weight_decay=weight_decay, progress=progress,
              frame_bar=True)
    return probe


def evaluate_stream(probe: Probe, frames: FrameSet, num_classes: int,
                    progress: bool = False, desc: str = "evaluate") -> ProbeResult:
    """:func:`~cpc_seq.probes.linear.evaluate_probe` over a :class:`FrameSet`, reading
    it in chunks of the rows the in-memory evaluation predicts together (the same
    predictions), holding one chunk and one utterance."""
    if frames.held is not None:
        return evaluate_probe(probe, frames.held.x, frames.held.y, num_classes)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    xs: list[torch.Tensor] = []
    ys: list[torch.Tensor] = []
    have = 0
    bar = _bar(frames.n_frames, desc, "frame", progress)

    def flush(rows: int) -> None:
        nonlocal xs, ys, have
        x, y = torch.cat(xs), torch.cat(ys)
        confusion[...] += confusion_counts(probe, x[:rows], y[:rows], num_classes)
        bar.update(rows)
        xs, ys, have = [x[rows:]], [y[rows:]], len(y) - rows

    try:
        for i in range(len(frames.utts)):
            x, y = frames.read(i)
            if frames.dim is None:
                frames.dim = x.shape[1]
            if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
                raise DataError(f"labels of utterance {frames.utts[i]!r} hold class ids "
                                f"outside [0, {num_classes - 1}]")
            xs.append(x)
            ys.append(y)
            have += len(y)
            while have >= _EVAL_BATCH:
                flush(_EVAL_BATCH)
        if have:
            flush(have)
    finally:
        bar.close()
    return result_from_confusion(confusion)


class UtteranceFeatures(Sequence[torch.Tensor]):
    """``(T_i, D)`` float32 features of ``utts`` in order, read from ``feats`` at each
    access (nothing is kept); ``lengths[i]`` = ``T_i``, known without reading."""

    def __init__(self, feats: Mapping[str, torch.Tensor], utts: Sequence[str],
                 lengths: Sequence[int]) -> None:
        self.feats = feats
        self.utts = list(utts)
        self.lengths = [int(t) for t in lengths]

    def __len__(self) -> int:
        return len(self.utts)

    def __getitem__(self, i: int) -> torch.Tensor:  # type: ignore[override]
        utt = self.utts[i]
        x = _as_2d(self.feats[utt], utt)
        if x.shape[0] != self.lengths[i]:
            raise DataError(f"features of utterance {utt!r} have {x.shape[0]} frames, "
                            f"{self.lengths[i]} when first read")
        return x
