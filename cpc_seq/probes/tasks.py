"""Probe tasks on frozen features: frame-level phone and speaker classification.

Splits. When split files are given (the CPC paper's ``train_split.txt`` /
``test_split.txt``: one utterance id per line) they are used as they are. Otherwise
:func:`default_split` is deterministic and documented: utterances are sorted, grouped
by speaker (``utt2spk``, or one group when absent), and within each group every 5th
utterance (positions 4, 9, 14, ...) goes to test, the rest to train: every speaker with
at least 5 utterances is in both halves, which the speaker probe needs. A speaker with
fewer than 5 utterances has no test utterance: all of its utterances train (the command
line notes how many such speakers there are), so no utterance is ever tested on after
being trained on. When no test utterance remains at all, :func:`choose_split` raises a
DataError instead of testing on the training data.

Speaker probes:

- ``utterance``: one mean-pooled feature vector per utterance.
- ``window``: as in the CPC paper, the context at the last frame of each window of
  ``window_frames`` frames (128 frames = 20480 samples = 1.28 s). Computed from
  full-utterance features, so c at that frame has seen the utterance from its start,
  not only the window.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cpc_seq.errors import ConfigError, DataError
from cpc_seq.io.atomic import atomic_write
from cpc_seq.probes.linear import (
    ProbeResult,
    evaluate_probe,
    pool_utterances,
    result_to_dict,
    save_confusion_csv,
    save_confusion_png,
    train_linear_probe,
)
from cpc_seq.probes.options import ProbeOptions
from cpc_seq.probes.stream import (
    DEFAULT_BUFFER_FRAMES,
    evaluate_stream,
    scan_frames,
    train_probe_on,
)


def default_split(utts: Sequence[str], utt2spk: Mapping[str, str] | None = None,
                  every: int = 5) -> tuple[list[str], list[str]]:
    """Deterministic per-speaker split: every ``every``-th utterance of a speaker is test."""
    groups: dict[str, list[str]] = {}
    for u in sorted(utts):
        groups.setdefault(utt2spk.get(u, "") if utt2spk else "", []).append(u)
    train, test = [], []
    for members in groups.values():
        for i, u in enumerate(members):
            (test if i % every == every - 1 else train).append(u)
    return sorted(train), sorted(test)


def choose_split(
    available: Sequence[str], train_split: Sequence[str] | None, test_split: Sequence[str] | None,
    utt2spk: Mapping[str, str] | None = None,
) -> tuple[list[str], list[str], dict[str, int]]:
    """Apply split files when given (keeping utterances that have features), else the
    default split. Returns (train, test, counts): with split files the counts of
    listed-but-missing utterances (``train``, ``test``); with the default split
    ``train_only_speakers`` (speakers with fewer than 5 utterances, all in train) when
    there are any. A split without test utterances, or split files sharing an utterance,
    is a DataError."""
    have = set(available)
    if train_split is None and test_split is None:
        tr, te = default_split(available, utt2spk)
        groups: dict[str, int] = {}
        for u in available:
            spk = utt2spk.get(u, "") if utt2spk else ""
            groups[spk] = groups.get(spk, 0) + 1
        small = sum(1 for n in groups.values() if n < 5)
        if not te:
            raise DataError(
                f"default split: no test utterances ({len(available)} utterances, "
                f"{'no speaker' if utt2spk else 'one group (no utt2spk)'} with 5 or more); "
                "give --train-split and --test-split, or --train-feats and --test-feats")
        return tr, te, {"train_only_speakers": small} if small else {}
    if train_split is None or test_split is None:
        raise DataError("give both --train-split and --test-split, or neither")
    both = sorted(set(train_split) & set(test_split))
    if both:
        raise DataError(f"split files share {len(both)} utterances (first {both[0]}): a probe "
                        "would be tested on its training data")
    tr = [u for u in train_split if u in have]
    te = [u for u in test_split if u in have]
    missing = {"train": len(train_split) - len(tr), "test": len(test_split) - len(te)}
    if not tr or not te:
        raise DataError(
            f"split files leave {len(tr)} train and {len(te)} test utterances with features "
            f"({missing['train']} train and {missing['test']} test ids have no features)"
        )
    return sorted(tr), sorted(te), missing


def _write_outputs(out: Path, res: ProbeResult, names: list[str], extra: dict[str, Any]) -> dict:
    d = result_to_dict(res, names)
    d.update(extra)
    with atomic_write(out / "result.json", "w") as f:
        json.dump(d, f, indent=1)
    save_confusion_csv(res, out / "confusion.csv", names)
    if len(names) <= 80:
        save_confusion_png(res, out / "confusion.png", names)
    return d


def phone_probe(
    train_feats: Mapping[str, torch.Tensor], test_feats: Mapping[str, torch.Tensor],
    train_labels: Mapping[str, np.ndarray], test_labels: Mapping[str, np.ndarray],
    phones: Mapping[str, int], out: str | Path, name: str, opts: ProbeOptions,
    train_utts: Sequence[str] | None = None, test_utts: Sequence[str] | None = None,
    tolerance: int = 2, buffer_frames: int = DEFAULT_BUFFER_FRAMES,
) -> dict[str, Any]:
    """Frame-level phone probe; writes result.json, confusion.csv/png under ``out``.

    The features may be lazy mappings (:func:`cpc_seq.io.feature_index.open_features`):
    at most ``buffer_frames`` training frames are held in memory (:mod:`cpc_seq.probes.
    stream`); a training set that fits is trained on in memory, exactly as before.
    """
    train_utts = sorted(train_feats) if train_utts is None else list(train_utts)
    test_utts = sorted(test_feats) if test_utts is None else list(test_utts)
    if not train_utts or not test_utts:
        raise DataError(f"phone probe: {len(train_utts)} train and {len(test_utts)} test "
                        "utterances; both are needed")
    if isinstance(buffer_frames, bool) or not isinstance(buffer_frames, int) or buffer_frames < 1:
        raise ConfigError(f"buffer_frames must be an integer >= 1, got {buffer_frames!r}")
    num_classes = max(phones.values()) + 1
    te = scan_frames(test_feats, test_labels, test_utts, tolerance, full=False,
                     num_classes=num_classes, progress=opts.progress, desc="check test")
    tr = scan_frames(train_feats, train_labels, train_utts, tolerance, hold_frames=buffer_frames,
                     num_classes=num_classes, progress=opts.progress, desc="read train")
    probe = train_probe_on(
        tr, num_classes=num_classes, hidden=opts.hidden, epochs=opts.epochs, lr=opts.lr,
        batch_size=opts.batch_size, seed=opts.seed, progress=opts.progress,
        buffer_frames=buffer_frames,
    )
    res = evaluate_stream(probe, te, num_classes, opts.progress, "evaluate test")
    names = [""] * num_classes
    for sym, i in phones.items():
        names[i] = sym
    return _write_outputs(Path(out), res, names, {
        "name": name, "task": "phone", "probe": "mlp" if opts.hidden else "linear",
        "train_accuracy": evaluate_stream(probe, tr, num_classes, opts.progress,
                                          "evaluate train").accuracy,
        "train_frames": tr.n_frames, "train_utterances": len(tr.utts),
        "test_utterances": len(te.utts), "feature_dim": int(tr.dim or 0),
        "skipped_unlabelled": len(tr.skipped) + len(te.skipped),
        "streamed": tr.held is None,
    })


def window_vectors(feats: Mapping[str, torch.Tensor], utts: Sequence[str], window_frames: int,
                   progress: bool = False) -> tuple[torch.Tensor, list[str]]:
    """The feature at the last frame of each full window: (W, D) and the utterance of each.

    Each utterance is looked up once and only its window rows are kept, so a lazy
    mapping holds one utterance at a time (W is the frame count / ``window_frames``).
    """
    from tqdm.auto import tqdm

    rows, owners = [], []
    for u in tqdm(utts, desc="windows", unit="utt", disable=not progress, leave=False):
        f = feats[u]
        idx = torch.arange(window_frames - 1, f.shape[0], window_frames)
        if len(idx) == 0:  # shorter than one window: use its last frame
            idx = torch.tensor([f.shape[0] - 1])
        rows.append(f[idx])
        owners.extend([u] * len(idx))
    return torch.cat(rows), owners


def speaker_probe(
    feats: Mapping[str, torch.Tensor], utt2spk: Mapping[str, str], train_utts: Sequence[str],
    test_utts: Sequence[str], out: str | Path, name: str, opts: ProbeOptions,
    level: str = "utterance", window_frames: int = 128,
) -> dict[str, Any]:
    """Speaker classification at ``utterance`` (mean-pooled) or ``window`` level."""
    missing = [u for u in list(train_utts) + list(test_utts) if u not in utt2spk]
    if missing:
        raise DataError(f"utterance {missing[0]} has no speaker in utt2spk ({len(missing)} such)")
    speakers = sorted({utt2spk[u] for u in train_utts})
    spk_id = {s: i for i, s in enumerate(speakers)}
    unseen = sorted({utt2spk[u] for u in test_utts} - set(speakers))
    test_utts = [u for u in test_utts if utt2spk[u] in spk_id]
    if not test_utts:
        raise DataError("no test utterance belongs to a speaker seen in training")

    def build(utts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if level == "utterance":
            x = pool_utterances(feats, utts, how="mean", progress=opts.progress)
            owners = list(utts)
        elif level == "window":
            x, owners = window_vectors(feats, utts, window_frames, opts.progress)
        else:
            raise DataError(f"speaker probe level {level!r}: utterance or window")
        y = torch.tensor([spk_id[utt2spk[u]] for u in owners], dtype=torch.long)
        return x, y

    xtr, ytr = build(train_utts)
    xte, yte = build(test_utts)
    probe = train_linear_probe(
        xtr, ytr, num_classes=len(speakers), hidden=opts.hidden, epochs=max(opts.epochs, 50),
        lr=opts.lr, batch_size=min(opts.batch_size, 64), seed=opts.seed, progress=opts.progress,
    )
    res = evaluate_probe(probe, xte, yte, len(speakers))
    return _write_outputs(Path(out), res, speakers, {
        "name": name, "task": f"speaker-{level}", "probe": "mlp" if opts.hidden else "linear",
        "train_accuracy": evaluate_probe(probe, xtr, ytr, len(speakers)).accuracy,
        "train_items": int(xtr.shape[0]), "feature_dim": int(xtr.shape[1]),
        "speakers": len(speakers), "test_speakers_unseen_in_train_dropped": unseen,
    })
