"""Kaldi data directories, phone tables, frame labels and split lists.

A data directory holds ``wav.scp`` (``utt path`` or ``rec path``), and optionally
``segments`` (``utt rec start end``), ``utt2spk``, ``spk2utt`` and ``text``. They are
validated like Kaldi's ``utils/validate_data_dir.sh``: every file sorted in ``LC_ALL=C``
(byte) order, unique keys, the same utterances in every file, ``spk2utt`` the inverse of
``utt2spk``. Every error is a :class:`~cpc_seq.errors.DataError` naming ``file:line``.

Unlike Kaldi, which resolves relative ``wav.scp`` paths against the current directory,
relative paths are resolved against the data directory, so a data dir can be moved
together with its audio. A UTF-8 byte-order mark at the start of any of these files is
dropped (Kaldi would make it part of the first key).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cpc_seq.audio.data.wav import AudioNotes, is_pipe, read_audio, read_segment
from cpc_seq.errors import DataError, where
from cpc_seq.io.atomic import atomic_write
from cpc_seq.probes.frames import check_label_length

__all__ = [
    "DataDir",
    "load_data_dir",
    "read_table",
    "read_phone_table",
    "write_phone_table",
    "phone_table_from_labels",
    "read_frame_labels",
    "read_split",
    "check_label_length",
    "fit_labels",
    "write_data_dir",
]

# key, then (optionally) whitespace and the rest of the line.
_LINE = re.compile(r"^(\S+)(?:[ \t]+(.*?))?[ \t]*$")


# --------------------------------------------------------------------------- reading


def _read_lines(path: Path) -> list[tuple[int, str]]:
    """``(line number, line)`` for each line of a UTF-8 text file, CR/LF tolerated."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError as e:
        raise DataError(f"{path}: no such file") from e
    except IsADirectoryError as e:
        raise DataError(f"{path}: is a directory, expected a file") from e
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e}") from e
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(f"{where(path, line)}: not valid UTF-8") from e
    text = text.removeprefix("\ufeff")  # a byte-order mark (Windows editors) is not a key
    lines = text.split("\n")
    if lines and lines[-1] == "":  # trailing newline (expected, not required)
        lines.pop()
    return [(i, s[:-1] if s.endswith("\r") else s) for i, s in enumerate(lines, 1)]


def read_table(
    path: str | Path,
    *,
    check_sorted: bool = True,
    check_unique: bool = True,
    require_value: bool = True,
) -> list[tuple[int, str, str]]:
    """Read a Kaldi ``key rest-of-line`` table.

    Args:
        path: the file.
        check_sorted: require keys in ``LC_ALL=C`` (byte) order.
        check_unique: require each key once.
        require_value: require something after the key (``text`` may leave it empty).

    Returns:
        ``[(line_number, key, rest), ...]`` in file order; ``rest`` has surrounding
        whitespace removed.

    Raises:
        DataError: missing file, empty line, line starting with whitespace, key without a
            value, unsorted or duplicate key -- each naming ``file:line``.
    """
    path = Path(path)
    rows: list[tuple[int, str, str]] = []
    seen: dict[str, int] = {}
    prev: str | None = None
    for lineno, line in _read_lines(path):
        loc = where(path, lineno)
        if not line.strip():
            raise DataError(f"{loc}: empty line")
        if line[0] in " \t":
            raise DataError(f"{loc}: line starts with whitespace (empty key)")
        m = _LINE.match(line)
        if m is None:  # pragma: no cover - the regex accepts any line without leading space
            raise DataError(f"{loc}: malformed line {line!r}")
        key, rest = m.group(1), (m.group(2) or "")
        if require_value and not rest.strip():  # "key \r" has no value either
            raise DataError(f"{loc}: key {key!r} has no value (expected 'key value')")
        if check_unique and key in seen:
            raise DataError(f"{loc}: duplicate key {key!r} (first on line {seen[key]})")
        # Python compares str by code point, which equals UTF-8 byte order (LC_ALL=C).
        if check_sorted and prev is not None and key < prev:
            raise DataError(
                f"{loc}: not sorted: key {key!r} comes after {prev!r} "
                "(sort the file with 'LC_ALL=C sort')"
            )
        seen.setdefault(key, lineno)
        prev = key
        rows.append((lineno, key, rest))
    return rows


def _single_token(path: Path, lineno: int, key: str, rest: str, what: str) -> str:
    if len(rest.split()) != 1:
        raise DataError(f"{where(path, lineno)}: expected '{key} <{what}>', got {rest!r}")
    return rest


# --------------------------------------------------------------------------- data dir


@dataclass
class DataDir:
    """A loaded and validated Kaldi data directory.

    Attributes:
        path: the directory.
        wav: utterance id (recording id when ``segments`` exists) -> absolute audio
            path, or a pipe command ``"cmd args |"``.
        segments: utterance id -> ``(recording id, start s, end s)``; ``end == -1``
            means the end of the recording. ``None`` without a ``segments`` file.
        utt2spk: utterance id -> speaker id, or ``None``.
        spk2utt: speaker id -> utterance ids, or ``None`` (derived from ``utt2spk`` when
            only that exists).
        text: utterance id -> transcript, or ``None``.
        utts: utterance ids, sorted.
        allow_pipes: whether piped ``wav.scp`` entries may run (set by the loader).
        line_numbers: file name -> key -> line, for error messages.
    """

    path: Path
    wav: dict[str, str]
    segments: dict[str, tuple[str, float, float]] | None
    utt2spk: dict[str, str] | None
    spk2utt: dict[str, list[str]] | None
    text: dict[str, str] | None
    utts: list[str]
    allow_pipes: bool = False
    line_numbers: dict[str, dict[str, int]] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.utts)

    def _origin(self, name: str, key: str) -> str | None:
        line = self.line_numbers.get(name, {}).get(key)
        return where(self.path / name, line) if line is not None else None

    def load_audio(
        self,
        utt: str,
        target_sr: int = 16000,
        allow_pipes: bool = False,
        notes: AudioNotes | None = None,
    ) -> np.ndarray:
        """Read one utterance as mono float32 at ``target_sr`` (cut from its recording
        when there is a ``segments`` file).

        Piped entries run when either ``allow_pipes`` here or the loader's
        ``allow_pipes`` was set.

        Returns:
            ``(samples,)`` float32 array.

        Raises:
            DataError: unknown utterance, or any error of :func:`read_audio`.
        """
        allow = allow_pipes or self.allow_pipes
        if self.segments is not None:
            if utt not in self.segments:
                raise DataError(f"{self.path / 'segments'}: no utterance {utt!r}")
            rec, start, end = self.segments[utt]
            return read_segment(
                self.wav[rec],
                start,
                end,
                target_sr,
                utt=utt,
                notes=notes,
                allow_pipes=allow,
                origin=self._origin("segments", utt),
            )
        if utt not in self.wav:
            raise DataError(f"{self.path / 'wav.scp'}: no utterance {utt!r}")
        return read_audio(
            self.wav[utt],
            target_sr,
            utt=utt,
            notes=notes,
            allow_pipes=allow,
            origin=self._origin("wav.scp", utt),
        )


def _check_same_keys(
    ref_name: str,
    ref: Mapping[str, int],
    other_path: Path,
    other: Mapping[str, int],
    ref_dir: Path,
) -> None:
    """Both files must list the same utterances; name the first offending line."""
    for key, line in other.items():
        if key not in ref:
            raise DataError(
                f"{where(other_path, line)}: utterance {key!r} is not in {ref_dir / ref_name}"
            )
    for key, line in ref.items():
        if key not in other:
            raise DataError(
                f"{where(ref_dir / ref_name, line)}: utterance {key!r} has no line in {other_path}"
            )


def _parse_segments(
    path: Path, rows: list[tuple[int, str, str]], wav: Mapping[str, str], wav_path: Path
) -> dict[str, tuple[str, float, float]]:
    segments: dict[str, tuple[str, float, float]] = {}
    for lineno, utt, rest in rows:
        loc = where(path, lineno)
        fields = rest.split()
        if len(fields) != 3:
            raise DataError(f"{loc}: expected '{utt} <recording> <start> <end>', got {rest!r}")
        rec, s_start, s_end = fields
        try:
            start, end = float(s_start), float(s_end)
        except ValueError as e:
            raise DataError(f"{loc}: start/end times must be numbers, got {rest!r}") from e
        if not (np.isfinite(start) and np.isfinite(end)) or start < 0:
            raise DataError(f"{loc}: bad start time {s_start!r}")
        if end != -1 and end <= start:
            raise DataError(
                f"{loc}: end time {s_end} is not after start time {s_start} "
                "(use -1 for the end of the recording)"
            )
        if rec not in wav:
            raise DataError(f"{loc}: recording {rec!r} is not in {wav_path}")
        segments[utt] = (rec, start, end)
    return segments


def load_data_dir(
    path: str | Path, *, allow_pipes: bool = False, check_sorted: bool = True
) -> DataDir:
    """Load and validate a Kaldi data directory.

    Args:
        path: the directory (must contain ``wav.scp``), or lhotse manifests
            (see :mod:`cpc_seq.audio.data.lhotse_io`).
        allow_pipes: accept piped ``wav.scp`` entries (``cmd |``, they run a shell).
            Refused by default.
        check_sorted: require ``LC_ALL=C`` sorted files, and (as Kaldi does) utterances
            whose sort order agrees with their speakers' order, which holds when
            utterance ids start with the speaker id.

    Returns:
        The :class:`DataDir`. Audio is not opened; missing audio files are reported
        when read.

    Raises:
        DataError: naming ``file:line`` for a malformed, unsorted or duplicate line, an
            utterance missing from one of the files, ``spk2utt`` disagreeing with
            ``utt2spk``, or a refused pipe; naming the directory when ``wav.scp`` is
            missing.
    """
    d = Path(path)
    from cpc_seq.audio.data.lhotse_io import is_lhotse_manifest, load_lhotse

    if is_lhotse_manifest(d):  # a lhotse CutSet/RecordingSet, or a dir of manifests
        return DataDir(**load_lhotse(d, allow_pipes=allow_pipes))
    if not d.is_dir():
        raise DataError(f"{d}: data directory not found")
    wav_path = d / "wav.scp"
    if not wav_path.is_file():
        raise DataError(f"{d}: no wav.scp in data directory")
    lines: dict[str, dict[str, int]] = {}

    wav, lines["wav.scp"] = _read_wav_scp(wav_path, d.resolve(), allow_pipes, check_sorted)

    # segments: utterances are its keys; otherwise wav.scp's keys.
    segments = None
    seg_path = d / "segments"
    if seg_path.exists():
        segments, lines["segments"] = _read_segments(seg_path, wav, wav_path, check_sorted)
        ref_name = "segments"
    else:
        ref_name = "wav.scp"
    ref = lines[ref_name]

    utt2spk, spk2utt = _read_speakers(d, ref_name, ref, lines, check_sorted)

    # text (an empty transcript is allowed)
    text = None
    text_path = d / "text"
    if text_path.exists():
        rows = read_table(text_path, check_sorted=check_sorted, require_value=False)
        text = {utt: rest for _, utt, rest in rows}
        lines["text"] = {key: lineno for lineno, key, _ in rows}
        _check_same_keys(ref_name, ref, text_path, lines["text"], d)

    return DataDir(
        path=d,
        wav=wav,
        segments=segments,
        utt2spk=utt2spk,
        spk2utt=spk2utt,
        text=text,
        utts=sorted(ref),
        allow_pipes=allow_pipes,
        line_numbers=lines,
    )


def _read_speakers(
    d: Path,
    ref_name: str,
    ref: Mapping[str, int],
    lines: dict[str, dict[str, int]],
    check_sorted: bool,
) -> tuple[dict[str, str] | None, dict[str, list[str]] | None]:
    """``(utt2spk, spk2utt)`` of data dir ``d``, each read or derived from the other.

    Their utterances must be those of ``d / ref_name`` (``ref``: utt -> line); the line
    numbers of ``utt2spk`` are recorded in ``lines``.  Both are ``None`` when neither
    file exists.
    """
    utt2spk = None
    u2s_path = d / "utt2spk"
    if u2s_path.exists():
        utt2spk, lines["utt2spk"] = _read_utt2spk(u2s_path, ref_name, ref, d, check_sorted)

    spk2utt = None
    s2u_path = d / "spk2utt"
    if s2u_path.exists():
        spk2utt, listed = _read_spk2utt(
            s2u_path, u2s_path, utt2spk, lines.get("utt2spk", {}), check_sorted
        )
        if utt2spk is None:
            # Only spk2utt: check it against the utterance set and derive utt2spk.
            lines_from_s2u = {utt: lineno for utt, (_, lineno) in listed.items()}
            _check_same_keys(ref_name, ref, s2u_path, lines_from_s2u, d)
            utt2spk = {utt: spk for utt, (spk, _) in sorted(listed.items())}
    elif utt2spk is not None:
        spk2utt = _invert_utt2spk(utt2spk)
    return utt2spk, spk2utt


def _read_wav_scp(
    wav_path: Path, base: Path, allow_pipes: bool, check_sorted: bool
) -> tuple[dict[str, str], dict[str, int]]:
    """Read ``wav.scp``: ``(key -> absolute path or pipe command, key -> line)``.

    Relative paths are resolved against ``base`` (the resolved data directory); piped
    entries are refused unless ``allow_pipes``.
    """
    wav: dict[str, str] = {}
    rows = read_table(wav_path, check_sorted=check_sorted)
    if not rows:
        raise DataError(f"{wav_path}: empty file")
    for lineno, key, rest in rows:
        if is_pipe(rest):
            if not allow_pipes:
                raise DataError(
                    f"{where(wav_path, lineno)}: piped entry refused (runs a shell); "
                    "pass --allow-pipes to allow"
                )
            wav[key] = rest
        else:
            p = Path(rest).expanduser()
            wav[key] = str(p if p.is_absolute() else base / p)
    return wav, {key: lineno for lineno, key, _ in rows}


def _read_segments(
    seg_path: Path, wav: Mapping[str, str], wav_path: Path, check_sorted: bool
) -> tuple[dict[str, tuple[str, float, float]], dict[str, int]]:
    """Read ``segments``: ``(utt -> (recording, start s, end s), utt -> line)``."""
    rows = read_table(seg_path, check_sorted=check_sorted)
    if not rows:
        raise DataError(f"{seg_path}: empty file")
    segments = _parse_segments(seg_path, rows, wav, wav_path)
    return segments, {key: lineno for lineno, key, _ in rows}


def _read_utt2spk(
    u2s_path: Path, ref_name: str, ref: Mapping[str, int], d: Path, check_sorted: bool
) -> tuple[dict[str, str], dict[str, int]]:
    """Read ``utt2spk``: ``(utt -> speaker, utt -> line)``.

    Its utterances must be those of ``d / ref_name`` (``ref``: utt -> line); with
    ``check_sorted`` the speakers must also come in sorted order.
    """
    rows = read_table(u2s_path, check_sorted=check_sorted)
    utt2spk = {
        utt: _single_token(u2s_path, lineno, utt, rest, "speaker") for lineno, utt, rest in rows
    }
    u2s_lines = {key: lineno for lineno, key, _ in rows}
    _check_same_keys(ref_name, ref, u2s_path, u2s_lines, d)
    if check_sorted:
        _check_speaker_order(u2s_path, rows, utt2spk)
    return utt2spk, u2s_lines


def _check_speaker_order(
    u2s_path: Path, rows: list[tuple[int, str, str]], utt2spk: Mapping[str, str]
) -> None:
    """Kaldi: "utt2spk is not in sorted order when sorted first on speaker-id"."""
    prev_spk: str | None = None
    for lineno, utt, _ in rows:
        spk = utt2spk[utt]
        if prev_spk is not None and spk < prev_spk:
            raise DataError(
                f"{where(u2s_path, lineno)}: utterance {utt!r} of speaker {spk!r} "
                f"comes after an utterance of speaker {prev_spk!r}; Kaldi needs "
                "utterance ids that start with their speaker id "
                "(or load with check_sorted=False)"
            )
        prev_spk = spk


def _read_spk2utt(
    s2u_path: Path,
    u2s_path: Path,
    utt2spk: Mapping[str, str] | None,
    u2s_lines: Mapping[str, int],
    check_sorted: bool,
) -> tuple[dict[str, list[str]], dict[str, tuple[str, int]]]:
    """Read ``spk2utt``: ``(speaker -> utts, utt -> (speaker, line))``.

    Each utterance may be listed once.  When ``utt2spk`` was read (``u2s_lines``: its
    utt -> line), ``spk2utt`` must be its exact inverse.
    """
    rows = read_table(s2u_path, check_sorted=check_sorted)
    spk2utt: dict[str, list[str]] = {}
    listed: dict[str, tuple[str, int]] = {}
    for lineno, spk, rest in rows:
        loc = where(s2u_path, lineno)
        utts_of = rest.split()
        for utt in utts_of:
            if utt in listed:
                raise DataError(
                    f"{loc}: utterance {utt!r} already listed for speaker "
                    f"{listed[utt][0]!r} on line {listed[utt][1]}"
                )
            listed[utt] = (spk, lineno)
            if utt2spk is not None:
                if utt not in utt2spk:
                    raise DataError(f"{loc}: utterance {utt!r} is not in {u2s_path}")
                if utt2spk[utt] != spk:
                    raise DataError(
                        f"{loc}: utterance {utt!r} listed for speaker {spk!r} but "
                        f"{where(u2s_path, u2s_lines[utt])} says {utt2spk[utt]!r}"
                    )
        spk2utt[spk] = utts_of
    if utt2spk is not None:
        for utt, lineno in u2s_lines.items():
            if utt not in listed:
                raise DataError(
                    f"{where(u2s_path, lineno)}: utterance {utt!r} is not listed in {s2u_path}"
                )
    return spk2utt, listed


def _invert_utt2spk(utt2spk: Mapping[str, str]) -> dict[str, list[str]]:
    """``spk2utt`` derived from ``utt2spk``: speakers and their utterances sorted."""
    spk2utt: dict[str, list[str]] = {}
    for utt in sorted(utt2spk):
        spk2utt.setdefault(utt2spk[utt], []).append(utt)
    return dict(sorted(spk2utt.items()))


# --------------------------------------------------------------------------- writing


def _write_lines(path: Path, lines: Iterable[str]) -> None:
    """Write ``lines`` (newline-terminated) to ``path`` atomically."""
    with atomic_write(path, "w") as f:
        for line in lines:
            f.write(line)
            f.write("\n")


def _check_token(target: Path, token: str, what: str) -> None:
    if not token or any(c.isspace() for c in token):
        raise DataError(f"{target}: {what} {token!r} is empty or contains whitespace")


def _check_value(target: Path, key: str, value: str) -> None:
    if "\n" in value or "\r" in value:
        raise DataError(f"{target}: value for {key!r} contains a newline")


def write_data_dir(
    path: str | Path,
    wav: Mapping[str, str],
    utt2spk: Mapping[str, str],
    text: Mapping[str, str] | None = None,
    segments: Mapping[str, tuple[str, float, float]] | None = None,
) -> Path:
    """Write a Kaldi data directory: ``wav.scp``, ``utt2spk``, ``spk2utt`` and optionally
    ``text`` and ``segments``, each sorted (``LC_ALL=C``) with a trailing newline, each
    written atomically (temp file + ``os.replace``).

    The inputs are checked before anything is written, so a bad call leaves an existing
    directory untouched. A stale ``segments`` or ``text`` left from an earlier write is
    removed when not given now, so the directory stays consistent.

    Args:
        path: the directory (created if needed).
        wav: utterance (or, with ``segments``, recording) id -> path or pipe command.
        utt2spk: utterance id -> speaker id.
        text: utterance id -> transcript.
        segments: utterance id -> ``(recording id, start s, end s)``.

    Returns:
        The directory path.

    Raises:
        DataError: ids with whitespace, values with newlines, or utterance sets that
            differ between the files.
    """
    d = Path(path)
    utts = set(segments) if segments is not None else set(wav)
    ref_name = "segments" if segments is not None else "wav.scp"
    for name, table in (("wav.scp", wav), ("utt2spk", utt2spk), ("text", text or {})):
        for key, value in table.items():
            _check_token(d / name, key, "key")
            _check_value(d / name, key, str(value))
    for utt, spk in utt2spk.items():
        _check_token(d / "utt2spk", spk, f"speaker of {utt!r}")
    if segments is not None:
        for utt, (rec, start, end) in segments.items():
            _check_token(d / "segments", utt, "key")
            if rec not in wav:
                raise DataError(f"{d / 'segments'}: recording {rec!r} of {utt!r} not in wav")
            if start < 0 or (end != -1 and end <= start):
                raise DataError(f"{d / 'segments'}: bad times for {utt!r}: {start}, {end}")
    for name, table in (("utt2spk", utt2spk), ("text", text)):
        if table is not None and set(table) != utts:
            diff = sorted(set(table) ^ utts)
            raise DataError(
                f"{d / name}: utterances differ from {ref_name}: e.g. {diff[0]!r} "
                f"({len(diff)} differ)"
            )

    d.mkdir(parents=True, exist_ok=True)
    _write_lines(d / "wav.scp", (f"{k} {wav[k]}" for k in sorted(wav)))
    _write_lines(d / "utt2spk", (f"{u} {utt2spk[u]}" for u in sorted(utt2spk)))
    spk2utt: dict[str, list[str]] = {}
    for utt in sorted(utt2spk):
        spk2utt.setdefault(utt2spk[utt], []).append(utt)
    _write_lines(d / "spk2utt", (f"{s} {' '.join(spk2utt[s])}" for s in sorted(spk2utt)))
    for name, table in (("text", text), ("segments", segments)):
        if table is None:
            (d / name).unlink(missing_ok=True)
    if text is not None:
        _write_lines(d / "text", (f"{u} {text[u]}".rstrip() for u in sorted(text)))
    if segments is not None:
        _write_lines(
            d / "segments",
            (
                f"{u} {segments[u][0]} {float(segments[u][1])!r} {float(segments[u][2])!r}"
                for u in sorted(segments)
            ),
        )
    return d


# --------------------------------------------------------------------------- labels


def read_phone_table(path: str | Path) -> dict[str, int]:
    """Read a Kaldi ``phones.txt`` (``symbol id`` per line) as symbol -> id.

    Raises:
        DataError: malformed line, non-integer or negative id, duplicate symbol or id,
            each naming ``file:line``.
    """
    path = Path(path)
    table: dict[str, int] = {}
    ids: dict[int, int] = {}
    # phones.txt is ordered by id, not by symbol: no sorted check.
    for lineno, sym, rest in read_table(path, check_sorted=False):
        loc = where(path, lineno)
        fields = rest.split()
        if len(fields) != 1:
            raise DataError(f"{loc}: expected '<symbol> <id>', got {sym} {rest!r}")
        try:
            pid = int(fields[0])
        except ValueError as e:
            raise DataError(f"{loc}: id of {sym!r} is not an integer: {fields[0]!r}") from e
        if pid < 0:
            raise DataError(f"{loc}: id of {sym!r} is negative: {pid}")
        if pid in ids:
            raise DataError(f"{loc}: id {pid} already used on line {ids[pid]}")
        ids[pid] = lineno
        table[sym] = pid
    if not table:
        raise DataError(f"{path}: empty phone table")
    return table


def write_phone_table(path: str | Path, phones: Mapping[str, int]) -> Path:
    """Write ``symbol id`` lines ordered by id (Kaldi ``phones.txt``), atomically."""
    path = Path(path)
    for sym in phones:
        _check_token(path, sym, "phone symbol")
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_lines(path, (f"{s} {i}" for s, i in sorted(phones.items(), key=lambda kv: kv[1])))
    return path


def phone_table_from_labels(path: str | Path) -> dict[str, int]:
    """Build symbol -> id from the symbols used in a frame-label file.

    For label files that come without ``phones.txt``: ids are assigned in ``LC_ALL=C``
    order of the symbols, so the same set of symbols always gives the same ids. Save the
    result with :func:`write_phone_table` so later runs and probes agree on it.
    """
    symbols: set[str] = set()
    for _, _, rest in read_table(path, check_sorted=False):
        symbols.update(rest.split())
    return {sym: i for i, sym in enumerate(sorted(symbols))}


def read_frame_labels(
    path: str | Path, phones: Mapping[str, int] | None = None, *, check_sorted: bool = False
) -> dict[str, np.ndarray]:
    """Read per-frame labels ``utt l1 l2 ...`` (one label per 10 ms frame).

    Labels are integer ids, or phone symbols mapped through ``phones`` (symbol -> id,
    from :func:`read_phone_table` or :func:`phone_table_from_labels`). With ``phones``,
    an integer label must be one of its ids. This reads the CPC paper's
    ``converted_aligned_phones.txt`` as well as symbol alignments.

    Returns:
        utterance id -> ``(frames,)`` int64 array, in file order.

    Raises:
        DataError: duplicate utterance, a line without labels, a symbol not in
            ``phones`` or a non-integer label without ``phones``, naming ``file:line``.
    """
    path = Path(path)
    known_ids = set(phones.values()) if phones is not None else None
    out: dict[str, np.ndarray] = {}
    for lineno, utt, rest in read_table(path, check_sorted=check_sorted):
        tokens = rest.split()
        if phones is None:
            try:
                ids = np.array([int(t) for t in tokens], dtype=np.int64)
            except ValueError:
                bad = next(t for t in tokens if not _is_int(t))
                raise DataError(
                    f"{where(path, lineno)}: label {bad!r} of {utt!r} is not an integer id; "
                    "pass a phone table (phones.txt) to map symbols"
                ) from None
        else:
            values = []
            for t in tokens:
                pid = phones.get(t)
                if pid is None:
                    if _is_int(t) and int(t) in known_ids:
                        pid = int(t)
                    else:
                        raise DataError(
                            f"{where(path, lineno)}: unknown phone symbol {t!r} in {utt!r} "
                            "(not in the phone table)"
                        )
                values.append(pid)
            ids = np.array(values, dtype=np.int64)
        out[utt] = ids
    return out


def _is_int(token: str) -> bool:
    try:
        int(token)
    except ValueError:
        return False
    return True


def read_split(path: str | Path) -> list[str]:
    """Read a list of utterance ids, one per line (the CPC paper's ``train_split.txt`` /
    ``test_split.txt``). Blank lines are skipped.

    Raises:
        DataError: a line with more than one field or a repeated id, naming ``file:line``.
    """
    path = Path(path)
    utts: list[str] = []
    seen: dict[str, int] = {}
    for lineno, line in _read_lines(path):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 1:
            raise DataError(f"{where(path, lineno)}: expected one utterance id, got {line!r}")
        utt = fields[0]
        if utt in seen:
            raise DataError(
                f"{where(path, lineno)}: duplicate utterance {utt!r} (first on line {seen[utt]})"
            )
        seen[utt] = lineno
        utts.append(utt)
    return utts


def fit_labels(labels: np.ndarray, n_frames: int) -> np.ndarray:
    """Trim ``labels`` to ``n_frames``, or pad them by repeating the last label.

    Returns:
        ``(n_frames,)`` array of the same dtype.

    Raises:
        DataError: padding an empty label sequence.
    """
    labels = np.asarray(labels)
    n = labels.shape[0]
    if n >= n_frames:
        return labels[:n_frames]
    if n == 0:
        raise DataError(f"cannot pad an empty label sequence to {n_frames} frames")
    return np.concatenate([labels, np.full(n_frames - n, labels[-1], dtype=labels.dtype)])
