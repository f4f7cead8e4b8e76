"""Reading audio for training and feature extraction.

Every reader returns a 1-D ``float32`` waveform in [-1, 1) at the requested rate:
files are read with :mod:`soundfile`, multichannel audio is downmixed by the mean of
its channels, and a different sample rate is converted with ``soxr`` (falling back to
``torchaudio.functional.resample`` when ``soxr`` is absent).

Conversions are not warned about per utterance. Pass an :class:`AudioNotes` and report
``notes.summary()`` once at the end instead.

A WAV file whose ``data`` chunk is shorter than its header declares (a copy cut short)
is an error naming the file: soundfile would silently read the part that is there.
Streamed WAVs that leave the size unset (0 or 0xFFFFFFFF) are read as they are.
Any other file that decodes to fewer frames than its header declares (an MP3 whose Xing
header gives its length, cut short) is an error too: the decoder would only warn.

Kaldi ``wav.scp`` entries may be shell pipelines (``sox a.flac -t wav - |``). They run a
shell, so they are refused unless the caller passes ``allow_pipes=True`` (the command
line's ``--allow-pipes``).
"""

from __future__ import annotations

import io
import os
import struct
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf

from cpc_seq.errors import DataError

try:  # soxr ships with librosa; keep a fallback so a minimal install still resamples.
    import soxr
except ImportError:  # pragma: no cover - exercised only without soxr
    soxr = None

__all__ = ["AudioNotes", "is_pipe", "read_audio", "read_segment", "wav_shortfall",
           "MAX_SEGMENT_OVERSHOOT_S"]

# Like Kaldi's extract-segments --max-overshoot: a segment may end this far past the end
# of its recording (it is cut at the end); beyond that it is an error.
MAX_SEGMENT_OVERSHOOT_S = 0.5


class AudioNotes:
    """Collects conversions done while reading audio, to report each kind once.

    Example::

        notes = AudioNotes()
        for utt in data.utts:
            wav = data.load_audio(utt, notes=notes)
        for line in notes.summary():
            log.info(line)   # "resampled from 8000 Hz to 16000 Hz: 3000 utterances (first 'a-1')"
    """

    def __init__(self) -> None:
        # message -> [count, first utterance or None]
        self._events: dict[str, list] = {}

    def add(self, message: str, utt: str | None = None) -> None:
        """Record one occurrence of ``message`` (for utterance ``utt``)."""
        event = self._events.get(message)
        if event is None:
            self._events[message] = [1, utt]
        else:
            event[0] += 1

    def merge(self, other: AudioNotes) -> None:
        """Add the events of ``other`` (e.g. notes gathered in a data-loader worker)."""
        for message, (count, utt) in other._events.items():
            event = self._events.get(message)
            if event is None:
                self._events[message] = [count, utt]
            else:
                event[0] += count

    def count(self, message: str) -> int:
        """How often ``message`` was recorded."""
        event = self._events.get(message)
        return event[0] if event else 0

    def summary(self) -> list[str]:
        """One line per kind of event, in the order first seen, with counts."""
        lines = []
        for message, (count, utt) in self._events.items():
            unit = "utterance" if count == 1 else "utterances"
            first = f" (first {utt!r})" if utt is not None else ""
            lines.append(f"{message}: {count} {unit}{first}")
        return lines

    def __len__(self) -> int:
        return len(self._events)

    def __repr__(self) -> str:
        return f"AudioNotes({self.summary()!r})"


def is_pipe(entry: str | Path) -> bool:
    """Whether a ``wav.scp`` value is a shell pipeline (``cmd args |``)."""
    return isinstance(entry, str) and entry.rstrip().endswith("|")


def _label(utt: str | None, origin: str | None) -> str:
    """The error-message prefix: ``wav.scp:3: utterance 'a'`` or parts of it."""
    parts = []
    if origin:
        parts.append(f"{origin}:")
    parts.append(f"utterance {utt!r}" if utt is not None else "audio")
    return " ".join(parts)


def _run_pipe(
    entry: str, *, utt: str | None, allow_pipes: bool, origin: str | None
) -> tuple[np.ndarray, int]:
    """Run a piped ``wav.scp`` entry and decode the audio it writes to stdout."""
    if not allow_pipes:
        where = origin if origin else _label(utt, None)
        raise DataError(f"{where}: piped entry refused (runs a shell); pass --allow-pipes to allow")
    command = entry.rstrip()[:-1].strip()
    label = _label(utt, origin)
    try:
        proc = subprocess.run(command, shell=True, capture_output=True, check=False)
    except OSError as e:  # pragma: no cover - shell itself missing
        raise DataError(f"{label}: cannot run {command!r}: {e}") from e
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip()[-500:]
        raise DataError(
            f"{label}: command {command!r} failed with status {proc.returncode}"
            + (f": {err}" if err else "")
        )
    if not proc.stdout:
        raise DataError(f"{label}: command {command!r} wrote no audio to stdout")
    try:
        data, sr = sf.read(io.BytesIO(proc.stdout), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        raise DataError(f"{label}: cannot decode the output of {command!r} as audio: {e}") from e
    return data, int(sr)


def _open_error(path: Path, utt: str | None, origin: str | None, err: Exception) -> DataError:
    label = _label(utt, origin)
    if not path.exists():
        return DataError(f"{label}: audio file not found: {path}")
    if path.is_dir():
        return DataError(f"{label}: audio path is a directory: {path}")
    return DataError(f"{label}: cannot read audio file {path}: {err}")


def wav_shortfall(path: str | Path) -> tuple[int, int] | None:
    """``(declared frames, frames present)`` of a RIFF/WAVE file whose ``data`` chunk is
    cut short, else ``None`` (not a WAV, complete, size unset by a streaming writer, or
    unreadable: the decoder reports those)."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            size = os.fstat(f.fileno()).st_size
            pos, block = 12, 1
            while pos + 8 <= size:
                f.seek(pos)
                cid, n = struct.unpack("<4sI", f.read(8))
                if cid == b"fmt " and n >= 14:
                    block = max(1, struct.unpack("<H", f.read(14)[12:14])[0])
                elif cid == b"data":
                    if n in (0, 0xFFFFFFFF):
                        return None
                    present = size - pos - 8
                    if (n - present) // block >= 1:
                        return n // block, max(present, 0) // block
                    return None
                pos += 8 + n + (n & 1)
    except (OSError, struct.error):
        return None
    return None


def _check_complete(path: Path, utt: str | None, origin: str | None) -> None:
    short = wav_shortfall(path)
    if short is not None:
        raise DataError(f"{_label(utt, origin)}: {path} is truncated: its header declares "
                        f"{short[0]} frames but the file holds {short[1]} (a copy cut short?)")


#: Frames a compressed file may decode short of its header's count before it counts as
#: truncated: two MPEG-1 Layer III frames (encoder delay and padding estimates).
DECODE_SLACK_FRAMES = 2 * 1152


def _check_decoded(path: Path, expected: int, got: int, utt: str | None,
                   origin: str | None) -> None:
    if expected - got > DECODE_SLACK_FRAMES:
        raise DataError(f"{_label(utt, origin)}: {path} is truncated: its header promises "
                        f"{expected} frames here but only {got} decode (a copy cut short?)")


def _resample(wav: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample; finite input gives finite output: samples near float32's limit (a valid
    float WAV may peak at 3.4e38) overflow inside the filter, so such a waveform is
    resampled divided by its peak (resampling is linear), scaled back in float64 and
    clipped to the float32 range."""
    out = _resample_raw(wav, orig_sr, target_sr)
    if not np.isfinite(out).all():
        peak = float(np.abs(wav).max())
        unit = _resample_raw((wav / peak).astype(np.float32), orig_sr, target_sr)
        limit = float(np.finfo(np.float32).max)
        out = np.clip(unit.astype(np.float64) * peak, -limit, limit).astype(np.float32)
    return out


def _resample_raw(wav: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    if soxr is not None:
        return soxr.resample(wav, orig_sr, target_sr).astype(np.float32, copy=False)
    import torch  # pragma: no cover - fallback without soxr
    from torchaudio.functional import resample  # pragma: no cover

    return resample(torch.from_numpy(wav), orig_sr, target_sr).numpy()  # pragma: no cover


def _finish(
    data: np.ndarray,
    sr: int,
    target_sr: int,
    *,
    utt: str | None,
    origin: str | None,
    notes: AudioNotes | None,
    source: str,
) -> np.ndarray:
    """Downmix, check and resample a ``(frames, channels)`` array read by soundfile."""
    label = _label(utt, origin)
    n_channels = data.shape[1]
    if n_channels == 0 or data.shape[0] == 0:
        raise DataError(f"{label}: no audio samples in {source}")
    if n_channels > 1:
        wav = data.mean(axis=1, dtype=np.float32)
        if notes is not None:
            notes.add(f"downmixed {n_channels} channels to mono", utt)
    else:
        wav = data[:, 0]
    if not np.isfinite(wav).all():
        bad = int(np.count_nonzero(~np.isfinite(wav)))
        raise DataError(f"{label}: {bad} NaN/Inf samples in {source}")
    if sr != target_sr:
        wav = _resample(np.ascontiguousarray(wav), sr, target_sr)
        if notes is not None:
            notes.add(f"resampled from {sr} Hz to {target_sr} Hz", utt)
    return np.ascontiguousarray(wav, dtype=np.float32)


def read_audio(
    path: str | Path,
    target_sr: int = 16000,
    *,
    utt: str | None = None,
    notes: AudioNotes | None = None,
    allow_pipes: bool = False,
    origin: str | None = None,
) -> np.ndarray:
    """Read a whole audio file (or piped ``wav.scp`` entry) as mono float32 at ``target_sr``.

    Args:
        path: an audio file soundfile can read (WAV, FLAC, OGG, ...), or a Kaldi pipe
            ``"cmd args |"`` whose stdout is a WAV/FLAC stream.
        target_sr: output sample rate in Hz.
        utt: utterance id, used in error messages and notes.
        notes: collects "resampled"/"downmixed" events (see :class:`AudioNotes`).
        allow_pipes: run piped entries (they run a shell); refused by default.
        origin: where the entry came from, e.g. ``"data/x/wav.scp:12"``, for messages.

    Returns:
        ``(samples,)`` float32 array.

    Raises:
        DataError: missing/unreadable file, refused or failing pipe, empty audio,
            NaN/Inf samples.
    """
    if is_pipe(path):
        data, sr = _run_pipe(str(path), utt=utt, allow_pipes=allow_pipes, origin=origin)
        source = f"the output of {str(path).rstrip()[:-1].strip()!r}"
    else:
        p = Path(path)
        _check_complete(p, utt, origin)
        try:
            with sf.SoundFile(p) as f:
                declared, sr = int(f.frames), int(f.samplerate)
                data = f.read(dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError, OSError, TypeError) as e:
            raise _open_error(p, utt, origin, e) from e
        _check_decoded(p, declared, data.shape[0], utt, origin)
        source = str(p)
    return _finish(data, int(sr), target_sr, utt=utt, origin=origin, notes=notes, source=source)


def read_segment(
    path: str | Path,
    start: float,
    end: float,
    target_sr: int = 16000,
    *,
    utt: str | None = None,
    notes: AudioNotes | None = None,
    allow_pipes: bool = False,
    origin: str | None = None,
) -> np.ndarray:
    """Read ``[start, end)`` seconds of a recording (a Kaldi ``segments`` entry).

    Only the requested frames are read from files. ``end == -1`` means the end of the
    recording, as in Kaldi's ``extract-segments``; an ``end`` up to
    :data:`MAX_SEGMENT_OVERSHOOT_S` past the end of the recording is cut at the end.
    Piped entries are run in full and then cut.

    Args: as :func:`read_audio`, plus ``start``/``end`` in seconds.

    Returns:
        ``(samples,)`` float32 array at ``target_sr``.

    Raises:
        DataError: as :func:`read_audio`, and for a segment outside the recording.
    """
    label = _label(utt, origin)
    if start < 0 or (end != -1 and end <= start):
        raise DataError(f"{label}: bad segment times start={start} end={end}")
    if is_pipe(path):
        data, sr = _run_pipe(str(path), utt=utt, allow_pipes=allow_pipes, origin=origin)
        n_frames = data.shape[0]
        source = f"the output of {str(path).rstrip()[:-1].strip()!r}"
    else:
        p = Path(path)
        _check_complete(p, utt, origin)
        try:
            info = sf.info(p)
        except (sf.LibsndfileError, RuntimeError, OSError, TypeError) as e:
            raise _open_error(p, utt, origin, e) from e
        sr, n_frames = int(info.samplerate), int(info.frames)
        data = None
        source = str(p)
    first = int(round(start * sr))
    last = n_frames if end == -1 else int(round(end * sr))
    duration = n_frames / sr
    if first >= n_frames:
        raise DataError(
            f"{label}: segment starts at {start:g} s but {source} is only {duration:.3f} s long"
        )
    if last > n_frames:
        if last - n_frames > MAX_SEGMENT_OVERSHOOT_S * sr:
            raise DataError(
                f"{label}: segment ends at {end:g} s but {source} is only {duration:.3f} s long"
            )
        last = n_frames
    if data is None:
        try:
            data, _ = sf.read(source, start=first, stop=last, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError, OSError, TypeError) as e:
            raise _open_error(Path(source), utt, origin, e) from e
        _check_decoded(Path(source), last - first, data.shape[0], utt, origin)
    else:
        data = data[first:last]
    return _finish(data, sr, target_sr, utt=utt, origin=origin, notes=notes, source=source)
