"""Feature extraction as a library call: :func:`extract`.

>>> import cpc_seq
>>> feats = cpc_seq.extract([wave1, wave2], "exp/cpc/last.pt", layer="c")   # doctest: +SKIP
>>> feats[0].shape                                   # (len(wave1) // 160, 256) float32
>>> cpc_seq.extract("data/dev", "exp/cpc/last.pt",   # a data dir (or scp:DIR/wav.scp)
...                 output="ark,scp:exp/f/c.ark,exp/f/c.scp")                # doctest: +SKIP

Waveforms in give arrays out; a Kaldi data dir (``scp:DIR/wav.scp``, or lhotse
manifests) in writes Kaldi ark/scp or npy files (:mod:`cpc_seq.io.features`: crash-safe,
resumable with ``skip_existing``) and returns an :class:`ExtractSummary`. The
``cpc-seq audio extract`` command, the s3prl-shaped upstream and the recipes all run this.

Memory. Utterances up to ``chunk_seconds`` (default 60 s) are read whole and batched by
length (``batch_seconds`` of padded audio per batch). A longer one is computed span by
span (:func:`cpc_seq.audio.extract.run_chunked`; spans of at most 10 s on the CPU, where
the encoder takes batches 10 s at a time too): a file at the model's sample rate is
read twice in spans (a float64 statistics pass, then the features), never whole, and its
features are written to the ark or npy file as they come, so a 1-hour recording takes
the memory of one span. Piped entries and recordings that need resampling are decoded
whole (4 bytes per sample) and then computed in spans. A Transformer context is not
chunked: its layer ``c`` of an utterance longer than ``chunk_seconds`` is refused with
one line (raise ``chunk_seconds``, or cut the recording with a ``segments`` file). MFCCs
compute long utterances whole.

Every feature written or returned is checked to be finite: NaN/Inf features (a model
whose weights overflow) are an error naming the utterance, and nothing of that
utterance is written.
"""

from __future__ import annotations

import math
import os
import struct
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import soundfile as sf
import torch
from torch import Tensor
from tqdm import tqdm

from cpc_seq.audio.data.wav import MAX_SEGMENT_OVERSHOOT_S, AudioNotes, is_pipe, wav_shortfall
from cpc_seq.audio.extract import (
    CPU_ENCODER_SAMPLES,
    STAT_BLOCK,
    StatsAccumulator,
    WaveStats,
    check_layer,
    chunkable,
    chunked_rows,
    normalizes_input,
    run_chunked,
    run_layers,
    wave_stats,
)
from cpc_seq.audio.model.cpc import CPCModel
from cpc_seq.errors import CpcSeqError, DataError
from cpc_seq.io.atomic import atomic_write, os_error_message
from cpc_seq.io.features import (
    FeatureWriter,
    check_item_ids,
    check_outputs,
    length_batches,
    write_num_frames,
)

if TYPE_CHECKING:
    from cpc_seq.audio.data.kaldi import DataDir

__all__ = ["extract", "ExtractSummary", "features_of_waves", "check_waves"]

#: Utterances longer than this are computed in spans of this length (seconds).
CHUNK_SECONDS = 60.0

#: Loaded (short) utterances held at once, in padded batches' worth of samples.
LOAD_BATCHES = 32


@dataclass
class ExtractSummary:
    """What :func:`extract` wrote: ``frames`` {utt: frames} by this call, ``skipped``
    utterances (``skip_bad``), seconds of audio read, wall seconds, reading notes."""

    frames: dict[str, int]
    skipped: list[str] = field(default_factory=list)
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- runners


class _Runner:
    """One featurizer: ``batch`` (short waves in memory) and ``spans`` (one long wave
    read span by span), both giving ``{layer: (T, H) float32}``."""

    hop = 160
    sample_rate = 16000
    layers: list[str]

    def batch(self, waves: list[Tensor]) -> list[dict[str, np.ndarray]]:
        raise NotImplementedError

    def can_chunk(self) -> bool:
        return False

    def needs_stats(self) -> bool:
        return True

    def spans(self, read: Callable[[int, int], Tensor], n: int, stats: WaveStats | None,
              chunk_frames: int) -> Iterator[dict[str, np.ndarray]]:
        raise NotImplementedError

    def rows(self, layer: str, n: int) -> int:
        return n // self.hop

    def span_frames(self, chunk_samples: int) -> int:
        """Frames per span for spans of at most ``chunk_samples``."""
        return max(1, chunk_samples // self.hop)

    def blame(self) -> str:
        return ""


class _ModelRunner(_Runner):
    def __init__(self, model: CPCModel, layers: list[str], device: torch.device,
                 bf16: bool) -> None:
        for layer in layers:
            check_layer(model, layer)
        self.model, self.layers, self.device, self.bf16 = model.eval(), layers, device, bf16
        self.hop, self.sample_rate = int(model.downsample_rate), int(model.sample_rate)

    def _autocast(self) -> Any:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def batch(self, waves: list[Tensor]) -> list[dict[str, np.ndarray]]:
        with self._autocast():
            out = run_layers(self.model, waves, self.layers, self.device)
        return [{k: v.numpy() for k, v in f.items()} for f in out]

    def can_chunk(self) -> bool:
        return all(chunkable(self.model, layer) for layer in self.layers)

    def needs_stats(self) -> bool:
        return normalizes_input(self.model)

    def spans(self, read: Callable[[int, int], Tensor], n: int, stats: WaveStats | None,
              chunk_frames: int) -> Iterator[dict[str, np.ndarray]]:
        blocks = run_chunked(self.model, read, n, stats, self.layers, chunk_frames,
                             self.device)
        while True:
            with self._autocast():
                block = next(blocks, None)
            if block is None:
                return
            yield {k: v.numpy() for k, v in block.items()}

    def rows(self, layer: str, n: int) -> int:
        return chunked_rows(self.model, layer, n)

    def span_frames(self, chunk_samples: int) -> int:
        """On the CPU at most :data:`CPU_ENCODER_SAMPLES` (10 s) per span, the encoder's
        group size for batches too (its first layers' outputs outgrow the caches)."""
        if self.device.type == "cpu":
            chunk_samples = min(chunk_samples, CPU_ENCODER_SAMPLES)
        return max(1, chunk_samples // self.hop)

    def blame(self) -> str:
        big = max(float(p.detach().abs().max()) for p in self.model.parameters())
        raw = "" if normalizes_input(self.model) else \
            "it takes the samples unnormalised (input_norm: none); "
        return f" ({raw}the model's largest |weight| is {big:.3g}; its outputs overflow)"


class _MfccRunner(_Runner):
    def __init__(self, cmvn: bool) -> None:
        from cpc_seq.audio.extract import mfcc_featurizer

        self.layers = ["mfcc"]
        self._featurize = mfcc_featurizer(16000, cmvn)

    def batch(self, waves: list[Tensor]) -> list[dict[str, np.ndarray]]:
        return [{"mfcc": f} for f in self._featurize(waves)]


def _check_finite(utt: str, feats: dict[str, np.ndarray], runner: _Runner) -> None:
    for layer, arr in feats.items():
        finite = np.isfinite(arr)
        if not finite.all():
            bad = int(arr.size - np.count_nonzero(finite))
            raise CpcSeqError(f"utterance {utt}: {bad} of {arr.size} values of its {layer} "
                              f"features are NaN/Inf{runner.blame()}; nothing written for it")


# --------------------------------------------------------------------------- inputs


def check_waves(wavs: Sequence[Tensor | np.ndarray], min_samples: int) -> list[Tensor]:
    """Waveforms given to the API as float32 ``(N,)`` CPU tensors.

    Raises:
        DataError: naming the item index, for an item that is not 1-D (a (2, N) stereo
            array is refused, not flattened: downmix it first), holds NaN/Inf or
            non-numbers, or is shorter than ``min_samples`` (one frame); also for an
            empty list or a bare array instead of a list.
    """
    if isinstance(wavs, (Tensor, np.ndarray, str, bytes)):
        raise DataError("extract_features takes a list of 1-D waveforms, not one "
                        f"{type(wavs).__name__}; for a (B, N) batch pass list(batch)")
    wavs = list(wavs)
    if not wavs:
        raise DataError("extract_features: no waveforms")
    out = []
    for i, w in enumerate(wavs):
        if isinstance(w, Tensor):
            w = w.detach().cpu()
            if w.is_complex() or w.dtype == torch.bool:
                raise DataError(f"waveform {i}: dtype {w.dtype} is not real audio samples")
            t = w.to(torch.float32)
        else:
            try:
                a = np.asarray(w)
                if a.dtype.kind not in "fiu":
                    raise ValueError(f"dtype {a.dtype}")
                t = torch.from_numpy(np.array(a, dtype=np.float32))
            except (TypeError, ValueError) as e:
                raise DataError(f"waveform {i}: not an array of samples ({e})") from None
        if t.dim() != 1:
            raise DataError(f"waveform {i}: shape {tuple(t.shape)}, expected 1-D (N,) "
                            "mono samples; downmix multichannel audio first (e.g. "
                            "w.mean(0))")
        if len(t) < min_samples:
            raise DataError(f"waveform {i}: {len(t)} samples is shorter than one frame "
                            f"({min_samples} samples)")
        if not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise DataError(f"waveform {i}: {bad} NaN/Inf samples")
        out.append(t)
    return out


@dataclass
class _FileSpan:
    """A long utterance read from a file in spans: frames ``[first, first + n)`` of
    ``path`` (already at the model's rate)."""

    utt: str
    path: Path
    first: int
    n: int
    channels: int
    label: str

    def reader(self, notes: AudioNotes | None) -> Callable[[int, int], Tensor]:
        handle: list[sf.SoundFile] = []
        if self.channels > 1 and notes is not None:
            notes.add(f"downmixed {self.channels} channels to mono", self.utt)

        def read(start: int, stop: int) -> Tensor:
            try:
                if not handle:
                    handle.append(sf.SoundFile(self.path))
                f = handle[0]
                f.seek(self.first + start)
                data = f.read(stop - start, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError, OSError, TypeError) as e:
                raise DataError(f"{self.label}: cannot read {self.path} at sample "
                                f"{self.first + start}: {e}") from None
            if data.shape[0] != stop - start:
                raise DataError(f"{self.label}: {self.path} ends at sample "
                                f"{self.first + start + data.shape[0]}, before the "
                                f"{self.first + self.n} its header declares")
            wav = data[:, 0] if data.shape[1] == 1 else data.mean(axis=1, dtype=np.float32)
            if not np.isfinite(wav).all():
                bad = int(np.count_nonzero(~np.isfinite(wav)))
                raise DataError(f"{self.label}: {bad} NaN/Inf samples in {self.path}")
            return torch.from_numpy(np.ascontiguousarray(wav))

        return read


def _long_file(dd: DataDir, utt: str, sr: int, min_samples: int) -> _FileSpan | None:
    """The utterance as a :class:`_FileSpan` when it is a file at ``sr`` longer than
    ``min_samples`` by its header, else ``None`` (then it is decoded whole, and any
    problem with it reported by the ordinary reader)."""
    if dd.segments is not None:
        rec, start, end = dd.segments.get(utt, ("", 0.0, 0.0))
        if not rec or (end != -1 and (end - start) * sr <= min_samples):
            return None
        path, origin = dd.wav.get(rec, ""), dd._origin("segments", utt)
    else:
        start, end = 0.0, -1.0
        path, origin = dd.wav.get(utt, ""), dd._origin("wav.scp", utt)
    if not path or is_pipe(path):
        return None
    try:
        info = sf.info(path)
    except Exception:  # soundfile raises several types; the whole-file reader reports it
        return None
    if int(info.samplerate) != sr or wav_shortfall(path) is not None:
        return None
    n_frames = int(info.frames)
    first = int(round(start * sr))
    last = n_frames if end == -1 else int(round(end * sr))
    if last > n_frames and last - n_frames <= MAX_SEGMENT_OVERSHOOT_S * sr:
        last = n_frames
    if not 0 <= first < last <= n_frames or last - first <= min_samples:
        return None
    label = f"{origin}: utterance {utt!r}" if origin else f"utterance {utt!r}"
    return _FileSpan(utt, Path(path), first, last - first, int(info.channels), label)


# --------------------------------------------------------------------------- writing


class _Writer(FeatureWriter):
    """:class:`FeatureWriter` plus one entry written block by block (long utterances):
    the entry is recorded (``.partial``, or the npy file renamed into place) only when
    complete, so an error or a kill leaves nothing of it that a resume would read."""

    def write_stream(self, utt: str, rows: int, blocks: Iterable[np.ndarray]) -> None:
        """Write ``blocks`` ``(r_i, D)`` (``sum r_i == rows``) as the entry ``utt``."""
        check_item_ids([utt], self.spec)
        if self.spec.kind == "npy":
            assert self.spec.npy_dir is not None
            path = self.spec.npy_dir / f"{utt}.npy"
            with atomic_write(path) as f:
                self._stream(f, utt, rows, blocks, npy=True)
            self.done[utt] = str(path)
            return
        start = self.ark.tell()
        try:
            self._stream(self.ark, utt, rows, blocks, npy=False)
            self.ark.flush()
            os.fsync(self.ark.fileno())
        except BaseException as e:
            try:
                self.ark.seek(start)
                self.ark.truncate(start)
            except OSError:
                pass  # the progress record still ends before this entry
            if isinstance(e, OSError):
                raise CpcSeqError(f"{os_error_message(self.spec.ark, e)}; "
                                  f"{self.left_behind()}") from None
            raise
        value = f"{self.spec.ark}:{start + len(utt.encode()) + 1}"
        try:
            self.prog.write(f"{utt} {value} {self.ark.tell()}\n")
            self.prog.flush()
        except OSError as e:
            raise CpcSeqError(f"{os_error_message(self.progress, e)}; "
                              f"{self.left_behind()}") from None
        self.done[utt] = value

    @staticmethod
    def _stream(f: Any, utt: str, rows: int, blocks: Iterable[np.ndarray], npy: bool) -> None:
        written = 0
        for block in blocks:
            block = np.ascontiguousarray(block, dtype=np.float32)
            if written == 0:
                if npy:
                    np.lib.format.write_array_header_1_0(
                        f, {"descr": "<f4", "fortran_order": False,
                            "shape": (rows, block.shape[1])})
                else:  # Kaldi binary float matrix, as kaldiio writes it
                    f.write(utt.encode() + b" \0BFM \x04" + struct.pack("<i", rows)
                            + b"\x04" + struct.pack("<i", block.shape[1]))
            written += block.shape[0]
            if written > rows:
                break
            f.write(block.astype("<f4", copy=False).tobytes())
        if written != rows:
            raise CpcSeqError(f"utterance {utt}: {written} feature frames computed, "
                              f"expected {rows} (an encoder this chunking does not cover?)")


# --------------------------------------------------------------------------- waveforms


def features_of_waves(
    model: CPCModel, waves: Sequence[Tensor | np.ndarray], layers: Sequence[str] = ("c",),
    device: torch.device | str | None = None, bf16: bool = False,
    batch_seconds: float = 0.0, chunk_seconds: float = CHUNK_SECONDS,
) -> list[dict[str, np.ndarray]]:
    """``{layer: (T_i, H) float32}`` for each waveform ``(N_i,)`` (checked as
    :func:`check_waves`); waves longer than ``chunk_seconds`` are computed in spans."""
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    runner = _ModelRunner(model, list(layers), dev, bf16)
    return _run_waves(runner, check_waves(waves, runner.hop), batch_seconds, chunk_seconds)


def _run_waves(runner: _Runner, waves: list[Tensor], batch_seconds: float,
               chunk_seconds: float) -> list[dict[str, np.ndarray]]:
    sr = runner.sample_rate
    chunk = int(chunk_seconds * sr)
    out: list[dict[str, np.ndarray]] = [{} for _ in waves]
    short = {}
    for i, w in enumerate(waves):
        if len(w) > chunk and not isinstance(runner, _MfccRunner):
            _refuse_unchunkable(runner, f"waveform {i}", len(w), chunk_seconds)
            read = _memory_reader(w)
            stats = wave_stats(w) if runner.needs_stats() else None
            blocks = list(runner.spans(read, len(w), stats, runner.span_frames(chunk)))
            out[i] = {k: np.concatenate([b[k] for b in blocks]) for k in runner.layers}
            _check_finite(f"waveform {i}", out[i], runner)
        else:
            short[i] = len(w)
    max_batch = int(_batch_seconds(batch_seconds, runner) * sr)
    for batch in length_batches(short, max_batch):  # type: ignore[arg-type]
        for i, f in zip(batch, runner.batch([waves[i] for i in batch])):
            _check_finite(f"waveform {i}", f, runner)
            out[i] = f
    return out


def _memory_reader(wave: Tensor | np.ndarray) -> Callable[[int, int], Tensor]:
    t = wave if isinstance(wave, Tensor) else torch.from_numpy(np.asarray(wave, np.float32))

    def read(start: int, stop: int) -> Tensor:
        return t[start:stop]

    return read


def _refuse_unchunkable(runner: _Runner, what: str, n: int, chunk_seconds: float) -> None:
    if not runner.can_chunk():
        raise CpcSeqError(
            f"{what}: {n / runner.sample_rate:.1f} s is longer than chunk_seconds="
            f"{chunk_seconds:g}: layer c of a Transformer context attends over the whole "
            "utterance (memory grows with the square of its length) and is not computed "
            "in spans; raise --chunk-seconds, cut the recording with a segments file, or "
            "extract layer z")


def _batch_seconds(batch_seconds: float, runner: _Runner) -> float:
    if batch_seconds:
        return batch_seconds
    dev = getattr(runner, "device", torch.device("cpu"))
    return 120.0 if dev.type == "cuda" else 60.0


# --------------------------------------------------------------------------- data dirs


def _data_dir_of(rspec: str | Path) -> Path:
    text = str(rspec)
    if text.startswith("scp:"):
        path = Path(text[4:])
        if path.name != "wav.scp":
            raise CpcSeqError(f"{text}: expected scp:DATA_DIR/wav.scp")
        return path.parent
    return Path(text)


class _DirJob:
    """One data dir to one output: the loop of :func:`extract` over utterances."""

    def __init__(self, runner: _Runner, dd: DataDir, writer: _Writer, *, layer: str,
                 batch_seconds: float, chunk_seconds: float, skip_bad: bool,
                 allow_pipes: bool, progress: bool, desc: str) -> None:
        self.runner, self.dd, self.writer, self.layer = runner, dd, writer, layer
        self.skip_bad, self.allow_pipes = skip_bad, allow_pipes
        sr = runner.sample_rate
        self.chunk_seconds = chunk_seconds
        self.chunk = int(chunk_seconds * sr)
        self.max_batch = int(_batch_seconds(batch_seconds, runner) * sr)
        self.notes = AudioNotes()
        self.frames: dict[str, int] = {}
        self.skipped: list[str] = []
        self.samples = 0
        todo = [u for u in dd.utts if u not in writer.done]
        self.todo = todo
        self.bar = tqdm(total=len(dd.utts), initial=len(dd.utts) - len(todo), desc=desc,
                        unit="utt", disable=not progress)

    def _skip(self, utt: str, msg: str | Exception) -> None:
        if not self.skip_bad:
            raise msg if isinstance(msg, Exception) else DataError(msg)
        tqdm.write(f"warning: {msg}; skipped")
        self.skipped.append(utt)
        self.bar.update(1)

    def run(self) -> None:
        pending: dict[str, Tensor] = {}
        held = 0
        for utt in self.todo:
            span = None
            if not isinstance(self.runner, _MfccRunner):  # MFCCs take long ones whole
                span = _long_file(self.dd, utt, self.runner.sample_rate, self.chunk)
            if span is not None:
                self._long(utt, span.n, span.reader(self.notes))
                continue
            try:
                wave = torch.from_numpy(np.asarray(self.dd.load_audio(
                    utt, target_sr=self.runner.sample_rate, allow_pipes=self.allow_pipes,
                    notes=self.notes), dtype=np.float32))
            except DataError as e:
                self._skip(utt, e)
                continue
            if len(wave) < self.runner.hop:
                self._skip(utt, f"utterance {utt}: {len(wave)} samples is shorter than one "
                           f"frame ({self.runner.hop} samples)")
                continue
            if len(wave) > self.chunk and not isinstance(self.runner, _MfccRunner):
                self._long(utt, len(wave), _memory_reader(wave))
                continue
            pending[utt] = wave
            held += len(wave)
            if held >= LOAD_BATCHES * self.max_batch or len(pending) >= 2000:
                self._flush(pending)
                held = 0
        self._flush(pending)

    def _flush(self, pending: dict[str, Tensor]) -> None:
        lens = {u: len(w) for u, w in pending.items()}
        for batch in length_batches(lens, self.max_batch):
            feats = self.runner.batch([pending[u] for u in batch])
            for utt, f in zip(batch, feats):
                _check_finite(utt, f, self.runner)
            self.writer.write_batch([(u, f[self.layer]) for u, f in zip(batch, feats)])
            for utt, f in zip(batch, feats):
                self.frames[utt] = int(f[self.layer].shape[0])
                self.samples += lens[utt]
            self.bar.update(len(batch))
        pending.clear()

    def _long(self, utt: str, n: int, read: Callable[[int, int], Tensor]) -> None:
        """A long utterance: statistics pass, then features span by span to the writer."""
        _refuse_unchunkable(self.runner, f"utterance {utt}", n, self.chunk_seconds)
        stats = None
        if self.runner.needs_stats():
            try:
                acc = StatsAccumulator()
                for i in range(0, n, STAT_BLOCK):
                    acc.add(read(i, min(i + STAT_BLOCK, n)))
            except DataError as e:
                self._skip(utt, e)
                return
            stats = acc.result()
        rows = self.runner.rows(self.layer, n)
        secs = n / self.runner.sample_rate

        def blocks() -> Iterator[np.ndarray]:
            done = 0
            for block in self.runner.spans(read, n, stats, self.runner.span_frames(self.chunk)):
                _check_finite(utt, block, self.runner)
                done += block[self.layer].shape[0]
                self.bar.set_postfix_str(f"{utt} {done * self.runner.hop / self.runner.sample_rate:.0f}"
                                         f"/{secs:.0f} s")
                yield block[self.layer]

        try:
            self.writer.write_stream(utt, rows, blocks())
        except DataError as e:  # a read failing in the second pass
            self._skip(utt, e)
            return
        self.frames[utt] = rows
        self.samples += n
        self.bar.set_postfix_str("")
        self.bar.update(1)


# --------------------------------------------------------------------------- the call


def _resolve_model(model: Any, random_init: bool, seed: int) -> CPCModel:
    if isinstance(model, CPCModel):
        return model
    inner = getattr(model, "model", None)
    if isinstance(inner, CPCModel):  # an Upstream from cpc_seq.load
        return inner
    if isinstance(model, (str, Path)):
        from cpc_seq.audio.model.load import KINDS, audio_model_from_state
        from cpc_seq.io.checkpoint import load_checkpoint

        state = load_checkpoint(model, kinds=KINDS, purpose="cpc-seq audio extract reads audio "
                                "(use cpc-seq text extract for text, cpc-seq image probe for images)")
        return audio_model_from_state(state, model, random_init=random_init, seed=seed)
    raise CpcSeqError(f"extract: model must be a checkpoint path or an audio CPC model, not "
                      f"{type(model).__name__}")


def extract(
    source: Sequence[Tensor | np.ndarray] | str | Path,
    model: CPCModel | str | Path | None = None,
    *,
    layer: str | Sequence[str] = "c",
    output: str | None = None,
    mfcc: bool = False,
    cmvn: bool = True,
    device: str | torch.device | None = None,
    precision: str = "fp32",
    batch_seconds: float = 0.0,
    chunk_seconds: float = CHUNK_SECONDS,
    num_frames: str | Path | None = None,
    skip_existing: bool = False,
    skip_bad: bool = False,
    allow_pipes: bool = False,
    progress: bool = False,
    random_init: bool = False,
    seed: int = 0,
) -> list[np.ndarray] | list[dict[str, np.ndarray]] | ExtractSummary:
    """Frame-level features of a CPC model (or MFCCs), from waveforms or a data dir.

    Args:
        source: a list of 1-D waveforms ``(N_i,)`` at the model's rate (tensors or
            arrays), or a Kaldi data dir / ``scp:DIR/wav.scp`` / lhotse manifest.
        model: a checkpoint path, a :class:`~cpc_seq.audio.model.CPCModel`, or what
            :func:`cpc_seq.load` returns for an audio checkpoint; ``None`` with ``mfcc``.
        layer: ``c``, ``z`` or ``convN``; for waveforms also a list of names.
        output: for a data dir, ``ark,scp:F.ark,F.scp`` | ``ark:F.ark`` | ``npy:DIR``.
        mfcc: MFCC+delta+delta-delta (39-dim) instead of a model; ``cmvn`` per utterance.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``; default: where a given model
            is, else ``cpu``. A given model is moved there.
        precision: ``fp32``, ``bf16`` (autocast) or ``auto`` (bf16 where fast).
        batch_seconds: padded audio per batch (0: 60 s on the CPU, 120 s on CUDA).
        chunk_seconds: longer utterances are computed in spans of this length.
        num_frames: write ``utt2num_frames`` here (``ark,t:PATH`` or a path).
        skip_existing: resume a partial run into ``output``.
        skip_bad: warn and skip unreadable or too-short audio instead of stopping.
        allow_pipes: run piped ``wav.scp`` entries (a shell).
        progress: show a progress bar.
        random_init, seed: the checkpoint's architecture with random weights.

    Returns:
        For waveforms: one ``(T_i, H)`` float32 array per waveform (``T_i = N_i // 160``
        for z and c), or ``{layer: array}`` dicts when ``layer`` is a list. For a data
        dir: an :class:`ExtractSummary`.

    Raises:
        CpcSeqError: one line for bad options, unwritable outputs (before any work), bad
            audio (naming the file and utterance), a Transformer context asked for layer
            c of an utterance longer than ``chunk_seconds``, or non-finite features
            (naming the utterance; nothing of it is written).
    """
    layers, waves_in = _check_extract_options(source, model, layer, output, mfcc,
                                              precision, batch_seconds, chunk_seconds)
    dev = _extract_device(model, mfcc, device)
    if output is not None:
        check_outputs(output, num_frames)  # before any work
    runner, layers, desc = _make_runner(model, layers, mfcc, cmvn, dev, precision,
                                        random_init, seed)
    if waves_in:
        waves = check_waves(source, runner.hop)  # type: ignore[arg-type]
        feats = _run_waves(runner, waves, batch_seconds, chunk_seconds)
        return [f[layers[0]] for f in feats] if isinstance(layer, str) or mfcc else feats
    return _extract_dir(runner, source, output, layers[0], batch_seconds=batch_seconds,
                        chunk_seconds=chunk_seconds, num_frames=num_frames,
                        skip_existing=skip_existing, skip_bad=skip_bad,
                        allow_pipes=allow_pipes, progress=progress, desc=desc)


def _check_extract_options(
    source: Sequence[Tensor | np.ndarray] | str | Path,
    model: CPCModel | str | Path | None,
    layer: str | Sequence[str],
    output: str | None,
    mfcc: bool,
    precision: str,
    batch_seconds: float,
    chunk_seconds: float,
) -> tuple[list[str], bool]:
    """Refuse bad or conflicting options of :func:`extract` (one-line
    :class:`CpcSeqError`); return ``(layers, waves_in)``: the layer names asked for and
    whether ``source`` is waveforms (rather than a data dir)."""
    if batch_seconds < 0 or not math.isfinite(batch_seconds):
        raise CpcSeqError(f"--batch-seconds must be positive (0 = default), got {batch_seconds}")
    if not (chunk_seconds > 0 and math.isfinite(chunk_seconds)):
        raise CpcSeqError(f"--chunk-seconds must be positive, got {chunk_seconds}")
    if precision not in ("auto", "fp32", "bf16"):
        raise CpcSeqError(f"--precision: one of auto, fp32, bf16, got {precision!r}")
    if mfcc and model is not None:
        raise CpcSeqError("extract: give a model or mfcc=True, not both")
    if not mfcc and model is None:
        raise CpcSeqError("extract: a model (checkpoint) is needed unless mfcc=True")
    layers = [layer] if isinstance(layer, str) else list(layer)
    waves_in = not isinstance(source, (str, Path))
    if not waves_in and len(layers) != 1:
        raise CpcSeqError("extract: writing features takes one layer")
    if waves_in and output is not None:
        raise CpcSeqError("extract: output is for a data dir; waveforms give arrays back")
    if not waves_in and output is None:
        raise CpcSeqError("extract: a data dir needs an output (ark,scp:F.ark,F.scp | "
                          "ark:F.ark | npy:DIR)")
    return layers, waves_in


def _extract_device(
    model: CPCModel | str | Path | None, mfcc: bool, device: str | torch.device | None
) -> torch.device:
    """Where :func:`extract` computes: the CPU for MFCCs, else ``device``, else where a
    given model is, else the CPU."""
    from cpc_seq.engine.device import resolve_device

    if mfcc:
        return torch.device("cpu")
    if device is None:
        return next(model.parameters()).device if isinstance(model, torch.nn.Module) \
            else torch.device("cpu")
    return device if isinstance(device, torch.device) else resolve_device(device, "--device")


def _make_runner(
    model: CPCModel | str | Path | None,
    layers: list[str],
    mfcc: bool,
    cmvn: bool,
    dev: torch.device,
    precision: str,
    random_init: bool,
    seed: int,
) -> tuple[_Runner, list[str], str]:
    """The feature computer of :func:`extract`: ``(runner, layers, progress label)``;
    ``layers`` becomes ``["mfcc"]`` for MFCCs."""
    from cpc_seq.engine.device import use_bf16

    if mfcc:
        return _MfccRunner(cmvn), ["mfcc"], "extract mfcc"
    net = _resolve_model(model, random_init, seed).to(dev)
    runner = _ModelRunner(net, layers, dev, use_bf16(precision, dev))
    return runner, layers, f"extract {layers[0]}" + (" (random init)" if random_init else "")


def _extract_dir(runner: _Runner, source: str | Path, output: str | None, layer: str, *,
                 batch_seconds: float, chunk_seconds: float, num_frames: str | Path | None,
                 skip_existing: bool, skip_bad: bool, allow_pipes: bool, progress: bool,
                 desc: str) -> ExtractSummary:
    from cpc_seq.audio.data.kaldi import load_data_dir

    assert output is not None
    t0 = time.perf_counter()
    dd = load_data_dir(_data_dir_of(source), allow_pipes=allow_pipes)
    writer = _Writer(check_outputs(output, num_frames, ids=dd.utts), resume=skip_existing)
    job = _DirJob(runner, dd, writer, layer=layer, batch_seconds=batch_seconds,
                  chunk_seconds=chunk_seconds, skip_bad=skip_bad, allow_pipes=allow_pipes,
                  progress=progress, desc=desc)
    complete = False
    try:
        job.run()
        complete = True
    finally:
        job.bar.close()
        writer.close(complete=complete)
    if job.skipped:
        tqdm.write(f"skipped {len(job.skipped)} bad utterances (first: {job.skipped[0]})")
    if num_frames is not None:
        write_num_frames(num_frames, writer, job.frames)
    return ExtractSummary(frames=job.frames, skipped=job.skipped,
                          audio_seconds=job.samples / runner.sample_rate,
                          wall_seconds=time.perf_counter() - t0, notes=job.notes.summary())
