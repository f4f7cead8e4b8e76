"""ZeroSpeech / Libri-light ``.item`` files from frame labels, so ABX runs on any
labelled corpus.

Input: frame labels ``utt l1 l2 ...`` (``phone_frames.txt``: one phone symbol per
10 ms frame, frame ``t`` covering ``[t, t + 1) / frame_rate`` seconds) and ``utt2spk``.
Each run of equal labels is one phone token; its context is the label of the run before
and the run after (silence included), or ``boundary`` (default ``#``) at the start or
end of an utterance.  Silence runs (``silence`` symbols) are contexts but not tokens.

A token of frames ``[t0, t1)`` gets ``onset = t0 / frame_rate`` and
``offset = t1 / frame_rate``: frame boundaries, halfway between frame centres, so
:func:`cpc_seq.probes.abx.item_frames` (centres in ``[onset, offset)``) gives back
exactly frames ``t0 .. t1 - 1``.

Output format (one token per line, after a header)::

    #file onset offset #phone prev-phone next-phone speaker
    george-0-00 0.0 0.04 Z # IY george

``cpc-seq audio make-item LABELS UTT2SPK OUT.item [--split test_split.txt] [--phones phones.txt]``
is the command.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from cpc_seq.audio.data.kaldi import read_split, read_table
from cpc_seq.errors import ConfigError, DataError, where
from cpc_seq.probes.abx import ItemRow

__all__ = ["ITEM_HEADER", "label_runs", "items_from_labels", "write_item_file", "make_item_file"]

#: The header line of a ZeroSpeech / Libri-light item file.
ITEM_HEADER = "#file onset offset #phone prev-phone next-phone speaker"


def label_runs(labels: Sequence[str]) -> list[tuple[int, int, str]]:
    """Runs of equal consecutive labels: ``[(start, end, label), ...]`` with ``end``
    exclusive, covering ``range(len(labels))``."""
    runs: list[tuple[int, int, str]] = []
    start = 0
    for t in range(1, len(labels) + 1):
        if t == len(labels) or labels[t] != labels[start]:
            runs.append((start, t, labels[start]))
            start = t
    return runs if labels else []


def items_from_labels(
    labels: Mapping[str, Sequence[str]],
    utt2spk: Mapping[str, str],
    silence: Iterable[str] = ("SIL",),
    context: bool = True,
    boundary: str = "#",
    frame_rate: float = 100.0,
    min_frames: int = 1,
    source: str | None = None,
) -> list[ItemRow]:
    """Phone tokens of frame-labelled utterances.

    Args:
        labels: utterance -> per-frame phone symbols.
        utt2spk: utterance -> speaker; every utterance of ``labels`` needs one.
        silence: symbols that are never tokens (they still serve as contexts).
        context: ``False`` gives every token the context ``(boundary, boundary)``, i.e.
            context-independent phone ABX.
        boundary: context symbol before the first and after the last run.
        frame_rate: label frames per second.
        min_frames: shortest token kept, in frames.
        source: the label file, named in errors.

    Returns:
        Items sorted by utterance, then onset.

    Raises:
        DataError: an utterance without a speaker.
        ConfigError: a bad ``frame_rate``/``min_frames``/``boundary``.
    """
    if not (isinstance(frame_rate, (int, float)) and math.isfinite(frame_rate) and frame_rate > 0):
        raise ConfigError(f"frame_rate must be a positive number, got {frame_rate!r}")
    if isinstance(min_frames, bool) or not isinstance(min_frames, int) or min_frames < 1:
        raise ConfigError(f"min_frames must be a positive integer, got {min_frames!r}")
    if not boundary or any(c.isspace() for c in boundary):
        raise ConfigError(f"boundary symbol must be one non-empty token, got {boundary!r}")
    sil = set(silence)
    rows: list[ItemRow] = []
    for utt in sorted(labels):
        if utt not in utt2spk:
            raise DataError(f"{source or 'labels'}: utterance {utt!r} has no speaker in utt2spk")
        spk = utt2spk[utt]
        runs = label_runs(list(labels[utt]))
        for k, (t0, t1, phone) in enumerate(runs):
            if phone in sil or t1 - t0 < min_frames:
                continue
            if context:
                prev = runs[k - 1][2] if k > 0 else boundary
                nxt = runs[k + 1][2] if k + 1 < len(runs) else boundary
            else:
                prev = nxt = boundary
            rows.append(ItemRow(utt, t0 / frame_rate, t1 / frame_rate, phone, prev, nxt, spk))
    return rows


def _time(seconds: float) -> str:
    text = f"{seconds:.6f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def write_item_file(path: str | Path, rows: Iterable[ItemRow]) -> int:
    """Write ``rows`` as an item file (header first), atomically; returns the row count."""
    from cpc_seq.io.atomic import atomic_write

    lines = [ITEM_HEADER]
    for r in rows:
        lines.append(f"{r.file} {_time(r.onset)} {_time(r.offset)} {r.phone} {r.prev_phone} "
                     f"{r.next_phone} {r.speaker}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return len(lines) - 1


def _symbols(tokens: list[str], phones: Mapping[str, int], inverse: Mapping[int, str],
             loc: str) -> list[str]:
    out = []
    for tok in tokens:
        if tok in phones:
            out.append(tok)
            continue
        try:
            out.append(inverse[int(tok)])
        except (ValueError, KeyError):
            raise DataError(f"{loc}: label {tok!r} is neither a symbol nor an id of the "
                            "phone table") from None
    return out


def make_item_file(
    labels_path: str | Path,
    utt2spk_path: str | Path,
    out: str | Path,
    split: str | Path | None = None,
    phones: Mapping[str, int] | None = None,
    **options: object,
) -> dict[str, int]:
    """Read ``phone_frames.txt`` and ``utt2spk``, write the item file ``out``.

    ``split`` (one utterance id per line) restricts the utterances; ``phones``
    (symbol -> id, ``phones.txt``) turns integer labels into their symbols, so items and
    ``silence`` use symbols; ``options`` go to :func:`items_from_labels`.  Returns
    counts: ``items``, ``utterances``, ``speakers``, ``phones`` and
    ``split_without_labels`` (split ids that have no label line).

    Raises:
        DataError: unreadable files (``file:line``), a label not in ``phones``, an
            utterance without a speaker, or no token at all.
    """
    labels_path = Path(labels_path)
    labels = {}
    inverse = {i: sym for sym, i in (phones or {}).items()}
    for lineno, utt, rest in read_table(labels_path, check_sorted=False):
        tokens = rest.split()
        if phones is not None:
            tokens = _symbols(tokens, phones, inverse, where(labels_path, lineno))
        labels[utt] = tokens
    utt2spk = {}
    for lineno, utt, rest in read_table(utt2spk_path, check_sorted=False):
        fields = rest.split()
        if len(fields) != 1:
            raise DataError(f"{where(utt2spk_path, lineno)}: expected '{utt} <speaker>', "
                            f"got {rest!r}")
        utt2spk[utt] = fields[0]
    missing = 0
    if split is not None:
        keep = read_split(split)
        missing = sum(1 for u in keep if u not in labels)
        labels = {u: labels[u] for u in keep if u in labels}
    rows = items_from_labels(labels, utt2spk, source=str(labels_path), **options)  # type: ignore[arg-type]
    if not rows:
        raise DataError(f"{labels_path}: no phone token (every run is silence or too short)")
    write_item_file(out, rows)
    return {
        "items": len(rows),
        "utterances": len({r.file for r in rows}),
        "speakers": len({r.speaker for r in rows}),
        "phones": len({r.phone for r in rows}),
        "split_without_labels": missing,
    }
