"""Reading spans of utterances from disk, at the model's sample rate, without decoding whole files.

An :class:`~cpc_seq.audio.data.index.AudioIndex` lays its utterances end to end (in its
order) on one virtual time line of samples; a training window is a span of that line
(``start``, ``length``). :class:`SpanReader` turns spans into samples: it finds the
utterance(s) a span covers (a packed window may run across utterances of one speaker)
and reads only those samples with ``soundfile`` (WAV seeks directly; FLAC seeks to the
frame holding the position). A recording at another rate is read with a margin and
resampled (``soxr``, as :mod:`~cpc_seq.audio.data.wav` does for whole files); the span's
first sample is aligned exactly on the target rate's grid, and the margin (50 ms) keeps
the resampler's edge effects out of the span, so a window matches the same samples of
the whole-file path to within the resampler's ripple. Piped ``wav.scp`` entries are run
and decoded for every read (slow: convert such corpora to files for training).
"""

from __future__ import annotations

import math

import numpy as np
import soundfile as sf

from cpc_seq.audio.data.index import AudioIndex
from cpc_seq.audio.data.wav import _resample, _run_pipe, is_pipe
from cpc_seq.errors import DataError

__all__ = ["SpanReader"]


class SpanReader:
    """Samples of an index's utterances, read when asked for.

    ``starts``: (U,) int64 position of each utterance on the virtual time line.
    Picklable (DataLoader workers get a copy); holds no open files.
    """

    def __init__(self, index: AudioIndex) -> None:
        self.index = index
        self.sample_rate = index.sample_rate
        self.starts = np.zeros(len(index), dtype=np.int64)
        if len(index):
            np.cumsum(index.num_samples[:-1], out=self.starts[1:])

    # ---------------------------------------------------------------- one utterance
    def _label(self, u: int) -> str:
        return f"utterance {self.index.utts[u]!r} ({self.index.sources[self.index.source[u]]})"

    def read(self, u: int, a: int, n: int) -> np.ndarray:
        """Samples ``[a, a + n)`` of utterance ``u`` (cut at its end): (m,) float32, m <= n."""
        idx = self.index
        n = int(min(n, int(idx.num_samples[u]) - a))
        if n <= 0:
            return np.zeros(0, dtype=np.float32)
        src = idx.sources[idx.source[u]]
        try:
            if is_pipe(src):
                out = self._read_pipe(u, src, a, n)
            else:
                out = self._read_file(u, src, a, n)
        except (sf.LibsndfileError, RuntimeError, OSError, TypeError, ValueError) as e:
            raise DataError(f"{self._label(u)}: cannot read samples {a}-{a + n}: {e}") from None
        if len(out) < n:  # a file shorter than its index: changed since it was indexed
            raise DataError(f"{self._label(u)}: holds {a + len(out)} samples, the index "
                            f"says {int(idx.num_samples[u])}: the file changed since the "
                            "data dir was indexed; delete its utt2num_samples to reindex")
        out = out[:n]
        if not np.isfinite(out).all():
            raise DataError(f"{self._label(u)}: NaN/Inf samples in {a}-{a + n}")
        return out

    def _read_file(self, u: int, src: str, a: int, n: int) -> np.ndarray:
        idx, tr = self.index, self.sample_rate
        with sf.SoundFile(src) as f:
            sr, frames = int(f.samplerate), int(f.frames)
            first = int(round(float(idx.seg_start[u]) * sr))
            end = float(idx.seg_end[u])
            last = frames if end == -1 else min(int(round(end * sr)), frames)
            if sr == tr:
                f.seek(first + a)
                return _mono(f.read(n, dtype="float32", always_2d=True))
            lo, hi, skip = _native_span(a, n, sr, tr, last - first)
            f.seek(first + lo)
            data = _mono(f.read(hi - lo, dtype="float32", always_2d=True))
        y = _resample(np.ascontiguousarray(data), sr, tr)
        return y[skip : skip + n]

    def _read_pipe(self, u: int, src: str, a: int, n: int) -> np.ndarray:
        idx, tr = self.index, self.sample_rate
        data, sr = _run_pipe(src, utt=str(idx.utts[u]), allow_pipes=idx.allow_pipes,
                             origin=None)
        first = int(round(float(idx.seg_start[u]) * sr))
        end = float(idx.seg_end[u])
        last = data.shape[0] if end == -1 else min(int(round(end * sr)), data.shape[0])
        wav = _mono(data[first:last])
        if sr != tr:
            wav = _resample(np.ascontiguousarray(wav), sr, tr)
        return wav[a : a + n]

    # ---------------------------------------------------------------- windows
    def read_spans(self, start: np.ndarray, length: np.ndarray, n: int) -> np.ndarray:
        """Windows of the virtual time line: ``start`` (B,) positions, ``length`` (B,)
        real samples of each (``<= n``; zeros after). Returns (B, n) float32. A span may
        run across consecutive utterances (packed windows)."""
        start = np.asarray(start, dtype=np.int64).reshape(-1)
        length = np.asarray(length, dtype=np.int64).reshape(-1)
        out = np.zeros((len(start), n), dtype=np.float32)
        for b, (pos, want) in enumerate(zip(start.tolist(), length.tolist())):
            u = int(np.searchsorted(self.starts, pos, side="right")) - 1
            filled = 0
            while filled < want:
                if u >= len(self.starts):
                    raise DataError(f"{self.index.root}: window at {pos} runs past the "
                                    "end of the data (a plan made for other data?)")
                a = pos + filled - int(self.starts[u])
                got = self.read(u, a, want - filled)
                out[b, filled : filled + len(got)] = got
                filled += len(got)
                u += 1
        return out


def _mono(data: np.ndarray) -> np.ndarray:
    """(frames, channels) -> (frames,) float32, channels averaged."""
    if data.shape[1] == 1:
        return data[:, 0]
    return data.mean(axis=1, dtype=np.float32)


def _native_span(a: int, n: int, sr: int, tr: int, total: int) -> tuple[int, int, int]:
    """The native samples ``[lo, hi)`` to read for target samples ``[a, a + n)``, and how
    many resampled samples to skip. ``lo`` sits on a sample whose time is a whole number
    of target samples, so the resampled grid is the whole-file grid."""
    g = math.gcd(sr, tr)
    step_n, step_t = sr // g, tr // g
    margin = max(64, sr // 20)
    lo = max(0, (a * sr) // tr - margin)
    lo = (lo // step_n) * step_n
    hi = min(total, -((-(a + n) * sr) // tr) + margin)
    return lo, hi, a - (lo // step_n) * step_t
