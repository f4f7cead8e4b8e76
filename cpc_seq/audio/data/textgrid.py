"""Praat TextGrid phone tiers (as the Montreal Forced Aligner writes them) to frame labels.

The toolkit's frame convention at 16 kHz: frame ``t`` covers samples
``[160 t, 160 (t + 1))`` and is labelled by the interval that contains its centre,
sample ``160 t + 80`` (time ``(160 t + 80) / 16000`` s).  An interval ``[start, end)``
holds the centres ``start <= c < end``: a boundary exactly on a centre gives that frame
to the interval that *starts* there.  An utterance of ``xmax`` seconds has
``round(xmax * 16000) // 160`` frames, the number the encoder gives for its audio.

Decisions:

* Gaps (centres no interval covers, and intervals with an empty label, which MFA writes
  for silence) get ``gap_label`` (default ``SIL``); with ``gap_label=None`` a gap is a
  :class:`~cpc_seq.errors.DataError` naming the file, tier and time.
* Overlapping intervals in the tier are a ``DataError`` naming the file, the tier and
  both intervals; nothing is written.
* ``mapping`` renames labels (e.g. ``sil=SIL,sp=SIL``); ``strip_stress`` drops CMU
  stress digits (``AH0`` -> ``AH``).

The utterance id is the file name without ``.TextGrid``.  Reading goes through praatio
(the optional ``formats`` extra: ``pip install 'cpc_seq[formats]'``).
``cpc-seq audio labels-from-textgrid DIR_OR_FILES... --out phone_frames.txt`` is the command.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from cpc_seq.errors import ConfigError, DataError

__all__ = ["PhoneInterval", "read_phone_tier", "intervals_to_frames", "textgrid_frame_labels",
           "find_textgrids", "write_frame_labels"]

PhoneInterval = tuple[float, float, str]
_EPS = 1e-6  # in frames: decimal boundaries such as 0.015 s land on the centre they name
#: Longest TextGrid span (xmax, seconds) read by default: one label per 10 ms frame is held
#: in memory, so a hostile or mistyped xmax (1e8 s = 1e10 frames) is refused up front.
MAX_SECONDS = 3 * 3600.0
_STRESS = re.compile(r"^(.*?[A-Za-z])[012]$")


def _praatio():
    try:
        from praatio import textgrid
        from praatio.utilities import errors, textgrid_io
    except ImportError:  # pragma: no cover - praatio is part of the formats extra
        raise ConfigError("reading TextGrids needs praatio: pip install 'cpc_seq[formats]'"
                          ) from None
    return textgrid, errors, textgrid_io


def _read_text(path: Path) -> str:
    for enc in ("utf-16", "utf-8"):  # the two encodings Praat writes
        try:
            return path.read_text(encoding=enc)
        except UnicodeError:
            continue
        except OSError as e:
            raise DataError(f"{path}: cannot read TextGrid ({e.strerror or e})") from None
    raise DataError(f"{path}: TextGrid is neither UTF-16 nor UTF-8 text")


def _overlap_message(path: Path, text: str, textgrid_io) -> str | None:
    """Name the tier and intervals of the first overlap, from praatio's raw parse."""
    try:
        raw = textgrid_io.parseTextgridStr(text, includeEmptyIntervals=True)
    except Exception:  # noqa: BLE001 - only used to improve a message
        return None
    for tier in raw.get("tiers", []):
        try:
            entries = sorted((float(e[0]), float(e[1]), str(e[2])) for e in tier.get("entries", []))
        except (TypeError, ValueError, IndexError):
            continue
        for k in range(1, len(entries)):
            a, b = entries[k - 1], entries[k]
            if b[0] < a[1]:
                return (f"{path}: tier {tier.get('name')!r}: interval [{b[0]:g}, {b[1]:g}] "
                        f"{b[2]!r} overlaps interval [{a[0]:g}, {a[1]:g}] {a[2]!r}")
    return None


def read_phone_tier(path: str | Path, tier: str = "phones") -> tuple[list[PhoneInterval], float]:
    """Read one interval tier of a TextGrid.

    ``tier``: the tier name; when no tier has that name, the one tier whose name ends
    with it (MFA names speaker tiers ``"<speaker> - phones"``).

    Returns:
        ``([(start, end, label), ...], xmax)``: the tier's non-empty intervals sorted by
        start, and the TextGrid's end time in seconds.

    Raises:
        DataError: unreadable or malformed file, no such (interval) tier, overlapping
            intervals (naming file, tier and both intervals).
    """
    textgrid, errors, textgrid_io = _praatio()
    path = Path(path)
    text = _read_text(path)
    try:
        tg = textgrid.openTextgrid(str(path), includeEmptyIntervals=False,
                                   reportingMode="silence", duplicateNamesMode="rename")
    except errors.TextgridStateError as e:
        msg = _overlap_message(path, text, textgrid_io)
        raise DataError(msg or f"{path}: {' '.join(str(e).split())}") from None
    except Exception as e:  # noqa: BLE001 - praatio raises many types on malformed files
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"{path}: cannot parse TextGrid ({first})") from None
    names = list(tg.tierNames)
    if tier in names:
        name = tier
    else:
        cands = [n for n in names if n.endswith(tier)]
        if len(cands) != 1:
            raise DataError(f"{path}: no tier {tier!r} (tiers: {', '.join(map(repr, names))}); "
                            "choose one with --tier")
        name = cands[0]
    t = tg.getTier(name)
    if not hasattr(t, "entries") or getattr(t, "tierType", "IntervalTier") != "IntervalTier":
        raise DataError(f"{path}: tier {name!r} is not an interval tier")
    entries = [(float(e[0]), float(e[1]), str(e[2]).strip()) for e in t.entries]
    entries = [e for e in entries if e[2]]
    entries.sort()
    for k in range(1, len(entries)):  # praatio checks this too; keep the contract here
        a, b = entries[k - 1], entries[k]
        if b[0] < a[1]:
            raise DataError(f"{path}: tier {name!r}: interval [{b[0]:g}, {b[1]:g}] {b[2]!r} "
                            f"overlaps interval [{a[0]:g}, {a[1]:g}] {a[2]!r}")
    return entries, float(tg.maxTimestamp)


def _first_frame(time: float, sample_rate: int, hop: int) -> int:
    """Smallest frame whose centre ``(hop t + hop / 2) / sample_rate`` is >= ``time``."""
    return math.ceil((time * sample_rate - hop / 2) / hop - _EPS)


def intervals_to_frames(
    intervals: Sequence[PhoneInterval],
    n_frames: int,
    gap_label: str | None = "SIL",
    sample_rate: int = 16000,
    hop: int = 160,
    where: str = "TextGrid",
) -> list[str]:
    """One label per frame: the interval holding the frame centre (see the module doc).

    Args:
        intervals: non-overlapping ``(start, end, label)`` in seconds, sorted.
        n_frames: number of frames.
        gap_label: label of frames no interval covers; ``None``: a gap is an error.
        sample_rate, hop: the frame grid (frame ``t`` is samples ``[hop t, hop (t+1))``).
        where: names the source in errors.

    Raises:
        DataError: a gap with ``gap_label=None``, or overlapping intervals.
    """
    out: list[str | None] = [None] * n_frames
    prev_end = -math.inf
    for start, end, label in intervals:
        if start < prev_end:
            raise DataError(f"{where}: interval [{start:g}, {end:g}] {label!r} overlaps the "
                            "interval before it")
        prev_end = end
        t0 = max(_first_frame(start, sample_rate, hop), 0)
        t1 = min(_first_frame(end, sample_rate, hop), n_frames)
        for t in range(t0, t1):
            out[t] = label
    if gap_label is None:
        for t, lab in enumerate(out):
            if lab is None:
                centre = (hop * t + hop / 2) / sample_rate
                raise DataError(f"{where}: no interval covers frame {t} (centre {centre:g} s); "
                                "pass a gap label to fill gaps")
    return [lab if lab is not None else gap_label for lab in out]  # type: ignore[misc]


def _relabel(label: str, mapping: Mapping[str, str], strip_stress: bool) -> str:
    if strip_stress:
        m = _STRESS.match(label)
        if m:
            label = m.group(1)
    return mapping.get(label, label)


def textgrid_frame_labels(
    path: str | Path,
    tier: str = "phones",
    gap_label: str | None = "SIL",
    mapping: Mapping[str, str] | None = None,
    strip_stress: bool = False,
    sample_rate: int = 16000,
    hop: int = 160,
    max_seconds: float = MAX_SECONDS,
) -> list[str]:
    """Frame labels of one TextGrid's phone tier (``round(xmax * sample_rate) // hop``
    frames).  See :func:`read_phone_tier` and :func:`intervals_to_frames`.

    Raises:
        DataError: as those two, a label that contains whitespace after mapping, or an
            ``xmax`` that is not finite or longer than ``max_seconds``.
    """
    path = Path(path)
    intervals, xmax = read_phone_tier(path, tier)
    if not math.isfinite(xmax) or xmax > max_seconds:
        raise DataError(f"{path}: xmax {xmax:g} s is longer than {max_seconds:g} s; one label "
                        "per 10 ms frame would not fit in memory (a wrong xmax? a longer "
                        "recording can be read with --max-seconds)")
    mapping = dict(mapping or {})
    relabelled = []
    for start, end, label in intervals:
        new = _relabel(label, mapping, strip_stress)
        if not new or any(c.isspace() for c in new):
            raise DataError(f"{path}: interval [{start:g}, {end:g}] label {label!r} becomes "
                            f"{new!r}: labels must be single non-empty tokens")
        relabelled.append((start, end, new))
    n_frames = int(round(xmax * sample_rate)) // hop
    return intervals_to_frames(relabelled, n_frames, gap_label, sample_rate, hop,
                               where=f"{path}: tier {tier!r}")


def find_textgrids(paths: Iterable[str | Path]) -> dict[str, Path]:
    """Utterance id (file stem) -> TextGrid, from files and directories (searched
    recursively for ``*.TextGrid``, any case).

    Raises:
        DataError: a path that does not exist, no TextGrid at all, or two files with the
            same utterance id.
    """
    found: dict[str, Path] = {}
    for p in map(Path, paths):
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.suffix.lower() == ".textgrid"
                           and f.is_file())
        elif p.is_file():
            files = [p]
        else:
            raise DataError(f"{p}: no such file or directory")
        for f in files:
            utt = f.stem
            if utt in found:
                raise DataError(f"{f}: utterance id {utt!r} also from {found[utt]}")
            found[utt] = f
    if not found:
        raise DataError(f"no .TextGrid files in {', '.join(map(str, paths))}")
    return dict(sorted(found.items()))


def write_frame_labels(path: str | Path, labels: Mapping[str, Sequence[str]]) -> None:
    """Write ``utt l1 l2 ...`` lines sorted by utterance (``LC_ALL=C``), atomically."""
    from cpc_seq.io.atomic import atomic_write

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w") as f:
        for utt in sorted(labels):
            f.write(utt + " " + " ".join(labels[utt]) + "\n")
