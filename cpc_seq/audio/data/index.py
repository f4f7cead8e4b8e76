"""The duration index of a data dir: every utterance's length, from file headers, cached.

Training plans windows from utterance lengths alone and reads the audio of a window only
when its batch needs it (:mod:`cpc_seq.audio.data.spans`), so the one thing it needs up
front is how many samples each utterance has at the model's sample rate. That comes from
file headers (``soundfile.info``: no decoding; a piped ``wav.scp`` entry is the exception
and runs once), and is written beside the data dir in Kaldi's conventions:

``utt2num_samples``
    ``utt n``: samples at the model's sample rate (after resampling, as the reader
    returns them);
``utt2dur``
    ``utt seconds``, as Kaldi's ``utils/data/get_utt2dur.sh`` writes it;
``.utt2num_samples.json``
    what the two were computed from: the sample rate and the size and modification time
    of ``wav.scp``, ``segments``, ``utt2spk`` and ``spk2utt``. When any of those changed
    (or the rate differs), the index is rebuilt.

A data dir that cannot be written to (a read-only corpus) keeps its index under
``$XDG_CACHE_HOME/cpc_seq/index/`` (``~/.cache`` by default), keyed by the dir's
absolute path. lhotse manifests are indexed the same way, in that cache.

With a valid index, :func:`load_index` does not validate the data dir again (it was
validated when the index was built) and holds only compact arrays: restarting a run on
a 1,000-hour corpus reads a few tables and starts in seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf
from tqdm import tqdm

from cpc_seq.audio.data.wav import MAX_SEGMENT_OVERSHOOT_S, AudioNotes, is_pipe, wav_shortfall
from cpc_seq.errors import DataError
from cpc_seq.io.atomic import atomic_write

__all__ = ["AudioIndex", "load_index", "resampled_length", "BAD_AUDIO_MODES"]

#: what to do with an utterance whose audio cannot be read while indexing
BadAudioMode = Literal["error", "skip"]
BAD_AUDIO_MODES = typing.get_args(BadAudioMode)
_STAMP = ".utt2num_samples.json"
_STAMPED_FILES = ("wav.scp", "segments", "utt2spk", "spk2utt")
_INDEX_VERSION = 1


def resampled_length(n: int, orig_sr: int, target_sr: int) -> int:
    """Samples that ``n`` samples at ``orig_sr`` become at ``target_sr``: the length
    the reader's resampler returns, ``round(n * target / orig)`` with halves rounded up."""
    if orig_sr == target_sr:
        return n
    return (2 * n * target_sr + orig_sr) // (2 * orig_sr)


@dataclass
class AudioIndex:
    """Compact description of a data dir's utterances (U of them), in data-dir order.

    Attributes:
        root: the data dir (or manifest) it describes.
        utts: (U,) utterance ids (object array of ``str``).
        speaker: (U,) int32 index into ``speakers`` (the utterance itself without utt2spk).
        speakers: sorted speaker ids.
        source: (U,) int32 index into ``sources``: the audio file (or pipe) read.
        sources: absolute paths or piped commands.
        seg_start, seg_end: (U,) float64 seconds of the recording the utterance is
            (``0`` and ``-1``: the whole file).
        num_samples: (U,) int64 samples at ``sample_rate``.
        sample_rate: the rate ``num_samples`` counts at.
        allow_pipes: whether piped sources may run.
    """

    root: Path
    utts: np.ndarray
    speaker: np.ndarray
    speakers: list[str]
    source: np.ndarray
    sources: list[str]
    seg_start: np.ndarray
    seg_end: np.ndarray
    num_samples: np.ndarray
    sample_rate: int
    allow_pipes: bool = False

    def __len__(self) -> int:
        return len(self.utts)

    @property
    def total_seconds(self) -> float:
        return float(self.num_samples.sum()) / self.sample_rate

    def subset(self, keep: np.ndarray) -> AudioIndex:
        """The utterances ``keep`` selects ((U,) bool mask or indices), speakers and
        sources kept."""
        return AudioIndex(self.root, self.utts[keep], self.speaker[keep], self.speakers,
                          self.source[keep], self.sources, self.seg_start[keep],
                          self.seg_end[keep], self.num_samples[keep], self.sample_rate,
                          self.allow_pipes)

    def by_speaker(self) -> AudioIndex:
        """Utterances reordered so each speaker's are contiguous (stable: data-dir order
        within a speaker)."""
        return self.subset(np.argsort(self.speaker, kind="stable"))


# --------------------------------------------------------------------------- cache place


def _cache_dir(root: Path) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    key = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:16]
    return base / "cpc_seq" / "index" / f"{root.name}-{key}"


def _stamp_of(root: Path, sample_rate: int) -> dict:
    files = {}
    names = _STAMPED_FILES if root.is_dir() and (root / "wav.scp").is_file() else ()
    paths = [root / n for n in names] if names else (
        sorted(p for p in root.iterdir() if p.is_file()) if root.is_dir() else [root])
    for p in paths:
        if p.exists():
            st = p.stat()
            files[p.name] = [st.st_size, st.st_mtime_ns]
    return {"version": _INDEX_VERSION, "sample_rate": sample_rate, "files": files}


def _index_dirs(root: Path) -> list[Path]:
    """Where an index may live: the data dir itself (Kaldi dirs), then the user cache."""
    own = [root] if root.is_dir() and (root / "wav.scp").is_file() else []
    return [*own, _cache_dir(root)]


# --------------------------------------------------------------------------- lean tables


def _table(path: Path) -> Iterator[tuple[str, str]]:
    """``(key, rest)`` of each non-empty line of a Kaldi table (validated before)."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                key, _, rest = line.partition(" ")
                yield key, rest.strip()


def _read_cached(where: Path, root: Path, sample_rate: int, allow_pipes: bool
                 ) -> AudioIndex | None:
    """The index stored under ``where`` when it is current for ``root``, else ``None``."""
    try:
        stamp = json.loads((where / _STAMP).read_text())
    except (OSError, ValueError):
        return None
    if stamp.get("stamp") != _stamp_of(root, sample_rate):
        return None
    try:
        listing = where if stamp.get("listing") == "cache" else root
        return _lean_index(listing, where, root, sample_rate, allow_pipes)
    except (OSError, ValueError, KeyError, UnicodeDecodeError):
        return None  # a damaged cache is rebuilt


def _codes(values: list[str]) -> tuple[list[str], np.ndarray]:
    """Sorted distinct ``values`` and each value's (N,) int32 index into them."""
    first: dict[str, int] = {}
    raw = np.fromiter((first.setdefault(v, len(first)) for v in values), dtype=np.int32,
                      count=len(values))
    names = sorted(first, key=first.__getitem__)
    order = sorted(range(len(names)), key=names.__getitem__)
    rank = np.empty(len(names), dtype=np.int32)
    rank[order] = np.arange(len(names), dtype=np.int32)
    return [names[i] for i in order], rank[raw]


def _absolute(entry: str, base: str) -> str:
    """A ``wav.scp`` value as the loader resolves it: pipes as they are, paths absolute."""
    if entry.startswith("/") or is_pipe(entry):
        return entry
    if entry.startswith("~"):
        return os.path.expanduser(entry)
    return os.path.normpath(os.path.join(base, entry))


def _lean_index(listing: Path, where: Path, root: Path, sample_rate: int,
                allow_pipes: bool) -> AudioIndex:
    """Read a validated data dir's listing (``wav.scp``, ``segments``, ``utt2spk``) and
    the cached ``utt2num_samples`` into arrays, without building per-utterance dicts."""
    base = str(listing.resolve())
    rec_keys: list[str] = []
    rec_vals: list[str] = []
    for key, rest in _table(listing / "wav.scp"):
        rec_keys.append(key)
        rec_vals.append(_absolute(rest, base))
    sources, source_of_rec = _codes(rec_vals)
    del rec_vals
    if (listing / "segments").exists():
        rec_pos = {k: i for i, k in enumerate(rec_keys)}
        utts_l, src_l, s_l, e_l = [], [], [], []
        for key, rest in _table(listing / "segments"):
            rec, s, e = rest.split()
            utts_l.append(key)
            src_l.append(source_of_rec[rec_pos[rec]])
            s_l.append(float(s))
            e_l.append(float(e))
        del rec_pos
        utts = np.array(utts_l, dtype=object)
        source = np.array(src_l, dtype=np.int32)
        seg_start, seg_end = np.array(s_l), np.array(e_l)
        del utts_l, src_l, s_l, e_l
    else:
        utts = np.array(rec_keys, dtype=object)
        source = source_of_rec
        seg_start, seg_end = np.zeros(len(utts)), np.full(len(utts), -1.0)
    del rec_keys
    if (listing / "utt2spk").exists():
        speakers, speaker = _codes([s for _, s in _table(listing / "utt2spk")])
    else:
        speakers, speaker = _codes(list(utts))
    n = np.fromiter((int(v) for _, v in _table(where / "utt2num_samples")), dtype=np.int64)
    if len(n) != len(utts) or len(speaker) != len(utts):
        raise ValueError("index does not match the listing")
    return AudioIndex(root, utts, speaker, speakers, source, sources, seg_start, seg_end, n,
                      sample_rate, allow_pipes)


# --------------------------------------------------------------------------- building


def _header(src: str, allow_pipes: bool) -> tuple[int, int]:
    """``(frames, sample rate)`` of a file from its header (a pipe is run and decoded)."""
    if is_pipe(src):
        from cpc_seq.audio.data.wav import _run_pipe

        data, sr = _run_pipe(src, utt=None, allow_pipes=allow_pipes, origin=None)
        return int(data.shape[0]), int(sr)
    short = wav_shortfall(src)
    if short is not None:
        raise DataError(f"{src} is truncated: its header declares {short[0]} frames but "
                        f"the file holds {short[1]} (a copy cut short?)")
    info = sf.info(src)
    return int(info.frames), int(info.samplerate)


def _utt_samples(frames: int, sr: int, start: float, end: float, target_sr: int) -> int:
    first = int(round(start * sr))
    last = frames if end == -1 else int(round(end * sr))
    if first >= frames:
        raise DataError(f"segment starts at {start:g} s but the recording is only "
                        f"{frames / sr:.3f} s long")
    if last > frames:
        if last - frames > MAX_SEGMENT_OVERSHOOT_S * sr:
            raise DataError(f"segment ends at {end:g} s but the recording is only "
                            f"{frames / sr:.3f} s long")
        last = frames
    return resampled_length(last - first, sr, target_sr)


def _build(root: Path, sample_rate: int, allow_pipes: bool, on_bad_audio: str,
           progress: bool, role: str) -> tuple[AudioIndex, list[str]]:
    """Validate the data dir and read every recording's header: the index, and the
    utterances skipped as unreadable (``on_bad_audio='skip'``)."""
    from cpc_seq.audio.data.kaldi import load_data_dir

    dd = load_data_dir(root, allow_pipes=allow_pipes)
    headers: dict[str, tuple[int, int] | DataError] = {}
    utts, src_names, starts, ends, nums, bad = [], [], [], [], [], []
    for utt in tqdm(dd.utts, desc=f"indexing {role} audio", unit="utt", disable=not progress,
                    mininterval=1.0):
        if dd.segments is not None:
            rec, start, end = dd.segments[utt]
            origin = dd._origin("segments", utt)
        else:
            rec, start, end = utt, 0.0, -1.0
            origin = dd._origin("wav.scp", utt)
        src = dd.wav[rec]
        h = headers.get(src)
        if h is None:
            try:
                h = _header(src, allow_pipes)
            except DataError as e:
                h = e
            except (sf.LibsndfileError, RuntimeError, OSError, TypeError) as e:
                h = DataError(f"cannot read audio file {src}: {e}" if Path(src).exists()
                              else f"audio file not found: {src}")
            headers[src] = h
        try:
            if isinstance(h, DataError):
                raise h
            n = _utt_samples(h[0], h[1], start, end, sample_rate)
            if n == 0:
                raise DataError("no audio samples")
        except DataError as e:
            msg = f"{origin or root}: utterance {utt!r}: {e}"
            if on_bad_audio == "error":
                raise DataError(msg + " (data.on_bad_audio=skip leaves such utterances "
                                "out)") from None
            bad.append(msg)
            continue
        utts.append(utt)
        src_names.append(src)
        starts.append(start)
        ends.append(end)
        nums.append(n)
    spk_of = dd.utt2spk or {}
    spk = np.array([spk_of.get(u, u) for u in utts], dtype=object)
    del dd, headers
    sources, source = _codes(src_names)
    speakers, speaker = _codes(list(spk))
    index = AudioIndex(Path(root), np.array(utts, dtype=object), speaker, speakers, source,
                       sources, np.array(starts, dtype=np.float64),
                       np.array(ends, dtype=np.float64), np.array(nums, dtype=np.int64),
                       sample_rate, allow_pipes)
    return index, bad


def _write_listing(where: Path, index: AudioIndex) -> None:
    """A Kaldi view (``wav.scp``, ``segments``, ``utt2spk``) of an index built from
    lhotse manifests, so a restart reads tables instead of the manifests."""
    with atomic_write(where / "wav.scp", "w") as f:
        for i, s in enumerate(index.sources):
            f.write(f"rec{i:08d} {s}\n")
    with atomic_write(where / "segments", "w") as f:
        for u, src, a, b in zip(index.utts, index.source, index.seg_start, index.seg_end):
            f.write(f"{u} rec{int(src):08d} {float(a)!r} {float(b)!r}\n")
    with atomic_write(where / "utt2spk", "w") as f:
        for u, s in zip(index.utts, index.speaker):
            f.write(f"{u} {index.speakers[int(s)]}\n")


def _write(where: Path, index: AudioIndex, root: Path, listing: str) -> None:
    where.mkdir(parents=True, exist_ok=True)
    with atomic_write(where / "utt2num_samples", "w") as f:
        for u, n in zip(index.utts, index.num_samples):
            f.write(f"{u} {int(n)}\n")
    with atomic_write(where / "utt2dur", "w") as f:
        for u, n in zip(index.utts, index.num_samples):
            f.write(f"{u} {int(n) / index.sample_rate:.4f}\n")
    if listing == "cache":
        _write_listing(where, index)
    with atomic_write(where / _STAMP, "w") as f:
        json.dump({"stamp": _stamp_of(root, index.sample_rate), "listing": listing}, f)


def load_index(
    data_dir: str | Path, sample_rate: int, *, allow_pipes: bool = False,
    on_bad_audio: str = "error", progress: bool = True, role: str = "train",
    notes: AudioNotes | None = None,
) -> AudioIndex:
    """The :class:`AudioIndex` of a Kaldi data dir (or lhotse manifest): read from its
    cache when current, else built from file headers and cached (see the module doc).

    ``on_bad_audio``: ``error`` (default: stop at the first unreadable utterance, naming
    it) or ``skip`` (leave it out; the count and the first few are printed). Utterances
    skipped this way are not cached, so a fixed file is picked up by the next build.

    Raises:
        DataError: a malformed data dir (as :func:`~cpc_seq.audio.data.kaldi.load_data_dir`),
            or an unreadable utterance with ``on_bad_audio='error'``.
    """
    if on_bad_audio not in BAD_AUDIO_MODES:
        raise DataError(f"data.on_bad_audio must be one of {BAD_AUDIO_MODES}, got "
                        f"{on_bad_audio!r}")
    root = Path(data_dir)
    if not root.exists():
        raise DataError(f"{root}: data directory not found")
    kaldi = root.is_dir() and (root / "wav.scp").is_file()
    for where in _index_dirs(root):
        found = _read_cached(where, root, sample_rate, allow_pipes)
        if found is not None:
            return found
    index, bad = _build(root, sample_rate, allow_pipes, on_bad_audio, progress, role)
    if bad:
        head = "; ".join(bad[:3])
        print(f"[{role}] skipped {len(bad)} unreadable utterance(s) "
              f"(data.on_bad_audio=skip): {head}{' ...' if len(bad) > 3 else ''}",
              file=sys.stderr)
        return index  # not cached: the bad files may be fixed before the next run
    if any(is_pipe(s) for s in index.sources):
        return index  # a pipe's output may change; it is decoded at every build
    for where in _index_dirs(root):
        try:
            _write(where, index, root, "own" if (kaldi and where == root) else "cache")
            break
        except OSError:
            continue  # read-only data dir: try the user cache
    return index
