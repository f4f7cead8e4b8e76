"""A small CTC phone recogniser on frozen features (SUPERB PR style) and its phone
error rate.

Targets come from frame labels (``phone_frames.txt`` / the CPC paper's
``converted_aligned_phones.txt``): runs of equal labels are collapsed to one phone, then
the ``ignore`` symbols (e.g. ``SIL``) are dropped, so ``a a SIL a b b`` -> ``a a b``.
The model is a per-dimension input normalisation (train-set mean and std), then either
a ``bilstm`` (``layers`` bidirectional LSTM layers of ``hidden`` units per direction,
dropout between them) or ``linear``, then a linear layer to the phones plus the CTC
blank (index 0).  Training: Adam, CTC loss (mean over utterances of the loss divided
by the target length; ``zero_infinity``), utterances batched by length.  Decoding:
greedy (best class per frame, repeats merged, blanks dropped).

PER = (substitutions + deletions + insertions) / reference phones, summed over the
test utterances (corpus-level, as SUPERB reports it), from a Levenshtein distance
(:func:`edit_distance`).  Utterances whose target is empty are left out (counted).

``cpc-seq audio ctc-probe`` trains and scores one feature set; ``cpc-seq table`` prints a
markdown table of several ``result.json`` files.
"""

from __future__ import annotations

import json
import math
import sys
import time
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from cpc_seq.config import check, check_literals
from cpc_seq.errors import ConfigError, DataError
from cpc_seq.probes.frames import check_label_length

__all__ = ["CTCOptions", "CTCRecognizer", "collapse_targets", "edit_distance", "greedy_decode",
           "train_ctc", "phone_error_rate", "ctc_probe", "ctc_table"]

CTCModelKind = Literal["bilstm", "linear"]
MODELS = typing.get_args(CTCModelKind)


@dataclass
class CTCOptions:
    """CTC recogniser and training options (plain data, see the module doc)."""

    model: CTCModelKind = "bilstm"
    hidden: int = 256
    layers: int = 2
    dropout: float = 0.2
    epochs: int = 20
    lr: float = 1e-3
    batch_size: int = 16
    seed: int = 0
    threads: int = 0
    progress: bool = False

    def validate(self) -> None:
        check_literals(self)
        check(self.hidden >= 1, "hidden", f"must be >= 1, got {self.hidden}")
        check(self.layers >= 1, "layers", f"must be >= 1, got {self.layers}")
        check(0.0 <= self.dropout < 1.0, "dropout", f"must be in [0, 1), got {self.dropout}")
        check(self.epochs >= 1, "epochs", f"must be >= 1, got {self.epochs}")
        check(self.lr > 0 and math.isfinite(self.lr), "lr", f"must be > 0, got {self.lr}")
        check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        check(self.threads >= 0, "threads", f"must be >= 0, got {self.threads}")

    def describe(self) -> str:
        if self.model == "linear":
            return "CTC linear"
        return f"CTC BiLSTM {self.layers}x{self.hidden}"


# ------------------------------------------------------------------ sequences


def collapse_targets(frame_labels: Iterable[int], ignore: Iterable[int] = ()) -> list[int]:
    """Frame labels -> phone sequence: merge runs, then drop ``ignore`` labels."""
    skip = set(ignore)
    out: list[int] = []
    prev: int | None = None
    for lab in frame_labels:
        lab = int(lab)
        if lab != prev and lab not in skip:
            out.append(lab)
        prev = lab
    return out


def edit_distance(ref: Sequence[Any], hyp: Sequence[Any]) -> int:
    """Levenshtein distance (substitution, insertion, deletion all cost 1)."""
    if len(ref) < len(hyp):
        ref, hyp = hyp, ref
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, start=1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def greedy_decode(log_probs: torch.Tensor, length: int | None = None, blank: int = 0) -> list[int]:
    """Best path of one ``(T, V)`` output: argmax per frame, merge repeats, drop blanks."""
    best = log_probs[: length if length is not None else log_probs.shape[0]].argmax(-1).tolist()
    out, prev = [], None
    for k in best:
        if k != prev and k != blank:
            out.append(k)
        prev = k
    return out


# ----------------------------------------------------------------------- model


class CTCRecognizer(nn.Module):
    """Normalise, encode (BiLSTM or nothing), project to ``n_classes`` (blank = 0).

    ``forward(x (B, T, D), lengths (B,))`` -> log-probabilities ``(B, T, n_classes)``.
    """

    def __init__(self, in_dim: int, n_classes: int, opts: CTCOptions,
                 mean: torch.Tensor | None = None, std: torch.Tensor | None = None) -> None:
        super().__init__()
        self.register_buffer("mean", mean if mean is not None else torch.zeros(in_dim))
        self.register_buffer("std", std if std is not None else torch.ones(in_dim))
        self.kind = opts.model
        if opts.model == "bilstm":
            self.rnn: nn.LSTM | None = nn.LSTM(
                in_dim, opts.hidden, num_layers=opts.layers, bidirectional=True,
                batch_first=True, dropout=opts.dropout if opts.layers > 1 else 0.0)
            width = 2 * opts.hidden
        else:
            self.rnn = None
            width = in_dim
        self.drop = nn.Dropout(opts.dropout)
        self.out = nn.Linear(width, n_classes)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        h = (x - self.mean) / self.std
        if self.rnn is not None:
            packed = nn.utils.rnn.pack_padded_sequence(h, lengths.cpu(), batch_first=True,
                                                       enforce_sorted=False)
            h, _ = self.rnn(packed)
            h, _ = nn.utils.rnn.pad_packed_sequence(h, batch_first=True,
                                                    total_length=x.shape[1])
        return self.out(self.drop(h)).log_softmax(-1)


def _pad(seqs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([s.shape[0] for s in seqs], dtype=torch.long)
    return nn.utils.rnn.pad_sequence(list(seqs), batch_first=True), lengths


def _batches(lengths: Sequence[int], batch_size: int, rng: np.random.Generator | None
             ) -> list[np.ndarray]:
    """Indices grouped by similar length (less padding); batch order shuffled by ``rng``."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    groups = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if rng is not None:
        rng.shuffle(groups)
    return groups


def _lengths(feats: Sequence[torch.Tensor]) -> list[int]:
    """Frames of each utterance; from ``feats.lengths`` when the sequence reads its
    features lazily (:class:`cpc_seq.probes.stream.UtteranceFeatures`)."""
    known = getattr(feats, "lengths", None)
    return list(known) if known is not None else [f.shape[0] for f in feats]


def train_ctc(
    feats: Sequence[torch.Tensor], targets: Sequence[Sequence[int]], n_classes: int,
    opts: CTCOptions, stats: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[CTCRecognizer, list[float]]:
    """Train a recogniser on ``(T_i, D)`` features and non-empty target sequences
    (class ids ``1 .. n_classes - 1``).  Returns the model (eval mode) and the mean loss
    of each epoch.

    ``feats`` may read each utterance from disk when indexed (one batch is held at a
    time); its input normalisation is then ``stats`` = (mean, std) ``(D,)`` computed in
    a streaming pass, else it is computed here from all frames in memory."""
    opts.validate()
    if not feats:
        raise DataError("CTC probe: no training utterance")
    if opts.threads:
        torch.set_num_threads(opts.threads)
    torch.manual_seed(opts.seed)
    rng = np.random.default_rng(opts.seed)
    if stats is None:
        allf = torch.cat([f.float() for f in feats])
        stats = allf.mean(0), allf.std(0).clamp_min(1e-5)
        del allf
    mean, std = stats
    model = CTCRecognizer(mean.shape[0], n_classes, opts, mean, std)
    lengths_all = _lengths(feats)
    optim = torch.optim.Adam(model.parameters(), lr=opts.lr)
    ctc = nn.CTCLoss(blank=0, reduction="mean", zero_infinity=True)
    tgt = [torch.tensor(t, dtype=torch.long) for t in targets]
    losses = []
    model.train()
    for epoch in range(opts.epochs):
        t0, total, n = time.perf_counter(), 0.0, 0
        for idx in _batches(lengths_all, opts.batch_size, rng):
            x, lengths = _pad([feats[i].float() for i in idx])
            y = torch.cat([tgt[i] for i in idx])
            y_len = torch.tensor([len(tgt[i]) for i in idx], dtype=torch.long)
            logp = model(x, lengths)
            loss = ctc(logp.transpose(0, 1), y, lengths, y_len)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optim.step()
            total += float(loss.detach()) * len(idx)
            n += len(idx)
        losses.append(total / n)
        if opts.progress:
            print(f"[ctc] epoch {epoch + 1}/{opts.epochs}: loss {losses[-1]:.3f} "
                  f"({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
    return model.eval(), losses


@torch.no_grad()
def phone_error_rate(
    model: CTCRecognizer, feats: Sequence[torch.Tensor], targets: Sequence[Sequence[int]],
    batch_size: int = 32,
) -> tuple[float, int, int, list[list[int]]]:
    """Corpus PER of greedy decoding: ``(per, edits, reference phones, hypotheses)``."""
    model.eval()
    hyps: list[list[int]] = [[] for _ in feats]
    for idx in _batches(_lengths(feats), batch_size, None):
        x, lengths = _pad([feats[i].float() for i in idx])
        logp = model(x, lengths)
        for row, i in enumerate(idx):
            hyps[i] = greedy_decode(logp[row], int(lengths[row]))
    edits = sum(edit_distance(t, h) for t, h in zip(targets, hyps))
    n_ref = sum(len(t) for t in targets)
    return edits / max(n_ref, 1), edits, n_ref, hyps


# ------------------------------------------------------------------------ task


def _sets(
    feats: Mapping[str, torch.Tensor], labels: Mapping[str, np.ndarray], utts: Sequence[str],
    class_of: Mapping[int, int], ignore: set[int], tolerance: int, where: str, *,
    full: bool = False, hold_frames: int = 0, progress: bool = False, desc: str = "scan",
) -> tuple[Sequence[torch.Tensor], list[list[int]], dict[str, int],
           tuple[torch.Tensor, torch.Tensor] | None]:
    """The utterances with labels and a non-empty target, their targets and the counts
    of those left out, in one pass that reads feature lengths only (from headers where
    ``feats`` can).

    With ``full``, the kept utterances are read too: the float64 sums give the input
    normalisation (mean, unbiased std), returned unless all frames fit in
    ``hold_frames``, in which case the features themselves are returned (a list in
    memory, normalised from it as before). Otherwise the features come back as a
    sequence that reads each utterance when indexed."""
    from tqdm.auto import tqdm

    from cpc_seq.probes.stream import UtteranceFeatures, num_frames_of

    kept: list[str] = []
    lengths: list[int] = []
    ys: list[list[int]] = []
    held: list[torch.Tensor] | None = [] if full else None
    n_held = 0
    s1 = s2 = None
    counts = {"no_labels": 0, "empty_target": 0, "too_short": 0}
    for utt in tqdm(utts, desc=desc, unit="utt", disable=not progress, leave=False):
        if utt not in labels:
            counts["no_labels"] += 1
            continue
        if utt not in feats:
            raise DataError(f"utterance {utt!r} has no features")
        t = num_frames_of(feats, utt)
        check_label_length(utt, len(labels[utt]), t, tolerance, path=where)
        target = [class_of[p] for p in collapse_targets(labels[utt], ignore)]
        if not target:
            counts["empty_target"] += 1
            continue
        if t < len(target):
            counts["too_short"] += 1
        if full:
            f = torch.as_tensor(feats[utt])
            f64 = f.to(torch.float64)
            if s1 is None:
                s1 = torch.zeros(f.shape[1], dtype=torch.float64)
                s2 = torch.zeros(f.shape[1], dtype=torch.float64)
            elif f.shape[1] != s1.shape[0]:
                raise DataError(f"features of utterance {utt!r} have {f.shape[1]} dims, "
                                f"earlier ones {s1.shape[0]}")
            s1 += f64.sum(0)
            s2 += (f64 * f64).sum(0)
            del f64
            if held is not None and n_held + t <= hold_frames:
                held.append(f)
                n_held += t
            else:
                held = None
        kept.append(utt)
        lengths.append(t)
        ys.append(target)
    if held is not None and full:
        return held, ys, counts, None
    stats = None
    if s1 is not None and s2 is not None:
        n = sum(lengths)
        mean = s1 / n
        var = ((s2 - n * mean * mean) / max(n - 1, 1)).clamp_min(0.0)
        stats = mean.float(), var.sqrt().float().clamp_min(1e-5)
    return UtteranceFeatures(feats, kept, lengths), ys, counts, stats


def ctc_probe(
    train_feats: Mapping[str, torch.Tensor], test_feats: Mapping[str, torch.Tensor],
    labels: Mapping[str, np.ndarray], phones: Mapping[str, int], out: str | Path, name: str,
    opts: CTCOptions, train_utts: Sequence[str], test_utts: Sequence[str],
    ignore: Iterable[str] = (), tolerance: int = 2, labels_path: str = "labels",
    test_labels: Mapping[str, np.ndarray] | None = None, buffer_frames: int = 500_000,
) -> dict[str, Any]:
    """Train on ``train_utts``, score PER on ``test_utts``, write ``out/result.json``.

    Args:
        train_feats, test_feats: utterance -> ``(T, D)`` features.
        labels: utterance -> frame label ids (``read_frame_labels``); ``test_labels``
            for the test utterances when they come from another file.
        phones: symbol -> id (``phones.txt``); ``ignore``: symbols left out of targets.
        tolerance: allowed difference between label and feature frame counts.
        buffer_frames: a training set of at most this many frames is held in memory;
            a larger one (and the test set) is read from ``train_feats`` (which may be a
            lazy :class:`~cpc_seq.io.feature_index.FeatureIndex`) one batch at a time,
            normalised with statistics from a streaming pass.

    Returns:
        The result dict (also in ``result.json``): ``per``, ``train_per``, ``edits``,
        ``n_ref_phones``, ``n_test``, ``n_train``, ``feature_dim``, ``losses``, ...

    Raises:
        DataError: an unknown ``ignore`` symbol, label/feature length mismatch, or no
            train/test utterance with a non-empty target.
    """
    opts.validate()
    if isinstance(buffer_frames, bool) or not isinstance(buffer_frames, int) or buffer_frames < 1:
        raise ConfigError(f"buffer_frames must be an integer >= 1, got {buffer_frames!r}")
    unknown = [s for s in ignore if s not in phones]
    if unknown:
        raise DataError(f"--ignore {unknown[0]!r}: not a symbol of the phone table")
    ignore_ids = {phones[s] for s in ignore}
    kept = sorted(i for i in set(phones.values()) if i not in ignore_ids)
    class_of = {pid: k + 1 for k, pid in enumerate(kept)}  # 0 = blank
    test_labels = labels if test_labels is None else test_labels
    te_x, te_y, te_counts, _ = _sets(test_feats, test_labels, test_utts, class_of, ignore_ids,
                                     tolerance, labels_path, progress=opts.progress,
                                     desc="check test")
    tr_x, tr_y, tr_counts, stats = _sets(train_feats, labels, train_utts, class_of, ignore_ids,
                                         tolerance, labels_path, full=True,
                                         hold_frames=buffer_frames, progress=opts.progress,
                                         desc="read train")
    if not tr_x or not te_x:
        raise DataError(f"CTC probe: {len(tr_x)} train and {len(te_x)} test utterances with "
                        f"features and a non-empty target (labels: {labels_path})")
    t0 = time.process_time()
    model, losses = train_ctc(tr_x, tr_y, len(kept) + 1, opts, stats)
    per, edits, n_ref, _ = phone_error_rate(model, te_x, te_y)
    train_per = phone_error_rate(model, tr_x, tr_y)[0]
    cpu = time.process_time() - t0
    result = {
        "name": name,
        "task": "phone recognition (CTC)",
        "probe": opts.describe(),
        "per": per,
        "train_per": train_per,
        "edits": edits,
        "n_ref_phones": n_ref,
        "n_train": len(tr_x),
        "n_test": len(te_x),
        "n_classes": len(kept),
        "ignored": sorted(ignore),
        "feature_dim": int(model.mean.shape[0]),
        "streamed": stats is not None,
        "losses": [round(v, 4) for v in losses],
        "skipped": {"train": tr_counts, "test": te_counts},
        "options": asdict(opts),
        "cpu_seconds": round(cpu, 1),
    }
    from cpc_seq.io.atomic import atomic_write

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / "result.json", "w") as f:
        json.dump(result, f, indent=1)
    return result


def ctc_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Markdown table of CTC probe results."""
    lines = ["| features | probe | dim | test PER | train PER | test phones |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['probe']} | {r['feature_dim']} | "
                     f"{100 * r['per']:.1f} % | {100 * r['train_per']:.1f} % | "
                     f"{r['n_ref_phones']} |")
    return "\n".join(lines) + "\n"
