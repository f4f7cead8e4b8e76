"""Split a Kaldi data directory into parts for parallel jobs, and combine their outputs.

``cpc-seq audio split-data DIR N`` writes ``DIR/splitN/1 .. DIR/splitN/N`` as Kaldi's
``utils/split_data.sh`` does: by speaker when ``utt2spk`` exists (every speaker's
utterances in one part, so per-speaker statistics stay whole), otherwise by utterance
(``--per-utt`` forces that, writing ``DIR/splitNutt``). Speakers (or utterances) are
taken in sorted order and cut into N contiguous runs with about the same number of
utterances each. Each part is a valid data directory: the per-utterance files
(``utt2spk``, ``text``, ``segments``, ``utt2dur``, ``utt2num_samples``, ``feats.scp``,
frame labels ``phone_frames.txt``, ...) keep their lines for the part's utterances,
``wav.scp`` the recordings they use, ``spk2utt`` and the per-speaker files their
speakers; every file sorted (``LC_ALL=C``) with a trailing newline.

``wav.scp`` paths relative to the data directory (this toolkit resolves them against it)
are rewritten relative to the part's directory, so a part reads the same audio.

``cpc-seq audio combine-scp OUT.scp IN1.scp IN2.scp ...`` joins the tables the parallel jobs
wrote (feature scp files, ``utt2num_frames``), refusing a key listed twice, and writes
them sorted.

Typical use (one job per GPU or machine)::

    cpc-seq audio split-data data/train 4
    for j in 1 2 3 4; do
      cpc-seq audio extract --ckpt exp/cpc/last.pt --layer c scp:data/train/split4/$j/wav.scp \\
        ark,scp:exp/feats/c_train.$j.ark,exp/feats/c_train.$j.scp &
    done; wait
    cpc-seq audio combine-scp exp/feats/c_train.scp exp/feats/c_train.{1,2,3,4}.scp
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from cpc_seq.audio.data.kaldi import load_data_dir, read_table
from cpc_seq.audio.data.wav import is_pipe
from cpc_seq.errors import CpcSeqError, DataError, where
from cpc_seq.io.atomic import atomic_write

__all__ = ["split_data_dir", "balanced_cuts", "combine_tables", "register"]

#: Files keyed by utterance id.
UTT_FILES = ("utt2spk", "text", "segments", "feats.scp", "utt2dur", "utt2num_samples",
             "utt2num_frames", "utt2uniq", "utt2lang", "utt2warp", "utt2category",
             "phone_frames.txt")
#: Files keyed by recording id (utterance id without ``segments``).
RECORDING_FILES = ("wav.scp", "reco2file_and_channel", "reco2dur", "reco2num_samples")
#: Files keyed by speaker id (``spk2utt`` is rebuilt from ``utt2spk``).
SPEAKER_FILES = ("spk2gender", "cmvn.scp", "spk2warp")


def balanced_cuts(sizes: Sequence[int], n: int) -> list[int]:
    """Cut ``len(sizes)`` units, in order, into ``n`` non-empty contiguous runs whose
    summed sizes are as close as possible to ``sum(sizes) / n`` each.

    Returns the ``n + 1`` boundaries ``[0, b1, ..., len(sizes)]``: run ``j`` is
    ``sizes[b_j:b_{j+1}]``.

    Raises:
        ValueError: ``n < 1`` or more runs than units.
    """
    units = len(sizes)
    if n < 1 or n > units:
        raise ValueError(f"cannot cut {units} units into {n} non-empty runs")
    cum = [0]
    for s in sizes:
        cum.append(cum[-1] + s)
    total = cum[-1]
    bounds = [0]
    for j in range(1, n):
        lo, hi = bounds[-1] + 1, units - (n - j)  # leave at least one unit per run
        target = total * j / n
        best = min(range(lo, hi + 1), key=lambda k: (abs(cum[k] - target), k))
        bounds.append(best)
    bounds.append(units)
    return bounds


def _rows(path: Path) -> list[tuple[int, str, str]]:
    return read_table(path, check_sorted=False, require_value=path.name != "text")


def _rebase_wav(value: str, src: Path, dst: Path) -> str:
    """A ``wav.scp`` value read relative to ``src``, rewritten to read the same file
    relative to ``dst`` (absolute paths and pipes unchanged)."""
    if is_pipe(value):
        return value
    p = Path(value).expanduser()
    if p.is_absolute():
        return value
    return os.path.relpath(os.path.normpath(src.resolve() / p), dst.resolve())


def _write(path: Path, lines: list[str]) -> None:
    with atomic_write(path, "w") as f:
        for line in lines:
            f.write(line + "\n")


def _line(key: str, rest: str) -> str:
    return f"{key} {rest}".rstrip()


def split_data_dir(data_dir: str | Path, n: int, per_utt: bool = False) -> list[Path]:
    """Write ``DATA_DIR/splitN/1..N`` (``splitNutt`` with ``per_utt``); see the module
    doc. Returns the part directories.

    Raises:
        DataError: an invalid data directory (as :func:`load_data_dir` reports it), a
            malformed or duplicated line in another per-utterance file, or ``n`` larger
            than the number of speakers (utterances with ``per_utt`` or without
            ``utt2spk``), with one line saying so.
        CpcSeqError: ``n < 1``, or a directory of lhotse manifests.
    """
    d = Path(data_dir)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise CpcSeqError(f"split-data: the number of parts must be an integer >= 1, got {n!r}")
    if not (d / "wav.scp").is_file():
        if d.is_dir() or d.exists():
            raise DataError(f"{d}: no wav.scp; split-data splits Kaldi data directories")
        raise DataError(f"{d}: data directory not found")
    dd = load_data_dir(d, allow_pipes=True)  # validates; nothing is run
    utts = dd.utts
    by_speaker = dd.utt2spk is not None and not per_utt
    if by_speaker:
        assert dd.spk2utt is not None
        groups = [sorted(dd.spk2utt[s]) for s in sorted(dd.spk2utt)]
        what = "speakers"
    else:
        groups = [[u] for u in utts]
        what = "utterances"
    if n > len(groups):
        hint = (" (split-data --per-utt splits by utterance)"
                if by_speaker and n <= len(utts) else "")
        raise DataError(f"{d}: cannot split into {n} parts: it has only {len(groups)} "
                        f"{what}{hint}")
    bounds = balanced_cuts([len(g) for g in groups], n)

    # every file present, read once (a duplicate key is an error naming file:line)
    present = {name: _rows(d / name) for name in (*UTT_FILES, *RECORDING_FILES, *SPEAKER_FILES)
               if (d / name).is_file()}

    root = d / f"split{n}{'utt' if per_utt else ''}"
    parts: list[Path] = []
    for j in range(n):
        part = root / str(j + 1)
        part.mkdir(parents=True, exist_ok=True)
        keep = {u for g in groups[bounds[j]:bounds[j + 1]] for u in g}
        if dd.segments is not None:
            recordings = {dd.segments[u][0] for u in keep}
        else:
            recordings = keep
        speakers = {dd.utt2spk[u] for u in keep} if dd.utt2spk is not None else set()
        written = set()
        for name, rows in present.items():
            if name in UTT_FILES:
                wanted = keep
            elif name in RECORDING_FILES:
                wanted = recordings
            else:
                wanted = speakers
            out = []
            for _, key, rest in sorted(rows, key=lambda r: r[1]):
                if key in wanted:
                    if name == "wav.scp":
                        rest = _rebase_wav(rest, d, part)
                    out.append(_line(key, rest))
            _write(part / name, out)
            written.add(name)
        if dd.utt2spk is not None:
            spk2utt: dict[str, list[str]] = {}
            for u in sorted(keep):
                spk2utt.setdefault(dd.utt2spk[u], []).append(u)
            _write(part / "spk2utt", [f"{s} {' '.join(spk2utt[s])}" for s in sorted(spk2utt)])
            written.add("spk2utt")
        for name in (*UTT_FILES, *RECORDING_FILES, *SPEAKER_FILES, "spk2utt"):
            if name not in written:  # left from an earlier split of a different dir
                (part / name).unlink(missing_ok=True)
        parts.append(part)
    return parts


def combine_tables(out: str | Path, inputs: Sequence[str | Path]) -> int:
    """Write the ``key value`` lines of ``inputs`` (feature scp files, ``utt2num_frames``)
    into ``out``, sorted by key (``LC_ALL=C``), with a trailing newline. Returns the
    number of lines.

    Raises:
        DataError: a malformed line, or a key in two inputs (naming both ``file:line``).
        CpcSeqError: no inputs.
    """
    if not inputs:
        raise CpcSeqError("combine-scp: give at least one input")
    seen: dict[str, tuple[str, str]] = {}
    for path in inputs:
        path = Path(path)
        for lineno, key, rest in read_table(path, check_sorted=False, check_unique=False):
            loc = where(path, lineno)
            if key in seen:
                raise DataError(f"{loc}: key {key!r} is also on {seen[key][1]}; each "
                                "utterance must come from one job")
            seen[key] = (rest, loc)
    _write(Path(out), [f"{k} {seen[k][0]}" for k in sorted(seen)])
    return len(seen)


# ------------------------------------------------------------------------ commands


def cmd_split_data(args: argparse.Namespace) -> int:
    parts = split_data_dir(args.data_dir, args.num_parts, per_utt=args.per_utt)
    print(f"wrote {len(parts)} parts under {parts[0].parent}", file=sys.stderr)
    return 0


def cmd_combine_scp(args: argparse.Namespace) -> int:
    n = combine_tables(args.out, args.inputs)
    print(f"wrote {n} lines from {len(args.inputs)} files to {args.out}", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``split-data`` and ``combine-scp`` to a ``cpc-seq`` subparsers object."""
    p = sub.add_parser(
        "split-data", help="split a Kaldi data dir into DIR/splitN/1..N (by speaker)",
        description="Like Kaldi's utils/split_data.sh: by speaker when utt2spk exists, "
        "else by utterance; each part a valid data dir for one extraction job.")
    p.add_argument("data_dir")
    p.add_argument("num_parts", type=int)
    p.add_argument("--per-utt", action="store_true",
                   help="split by utterance even with utt2spk (writes DIR/splitNutt)")
    p.set_defaults(func=cmd_split_data)
    c = sub.add_parser(
        "combine-scp", help="combine the scp files of parallel jobs into one (sorted)",
        description="Join key-value tables (feats.J.scp, utt2num_frames.J) into OUT, "
        "sorted by key; a key in two inputs is an error.")
    c.add_argument("out")
    c.add_argument("inputs", nargs="+")
    c.set_defaults(func=cmd_combine_scp)
