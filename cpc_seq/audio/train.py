"""Audio CPC as a task of the training engine: ``cpc-seq audio train --config conf.yaml [key=value ...]``.

Fixed-length windows of the training audio (packed per speaker, or padded, or only long
utterances: ``data.short_utterances``; batched uniformly, per speaker or speaker-balanced:
``data.batch_sampling``; see :mod:`cpc_seq.audio.data.batches`) -> optional waveform
augmentation (``augment``, :mod:`cpc_seq.audio.model.augment`) -> per-window normalisation ->
:class:`~cpc_seq.audio.model.CPCModel` -> k-step InfoNCE (``loss.kind: infonce``),
ACPC's aligned loss (``loss.kind: acpc``, :mod:`cpc_seq.losses.acpc`) or the co-training
objective on codes of ``c_t`` and of the pooled future ``z`` (``loss.kind: cotrain``,
:mod:`cpc_seq.audio.model.cotrain_head`; logs ``train/mi``, the models' MI estimate,
and ``train/mi_plugin``, the batch's plug-in MI in ``[0, ln K]``). Everything else (optimiser,
schedule, precision, DDP, logging, checkpoints, resume) is the engine's
(:mod:`cpc_seq.engine.trainer`).

Layout of ``train.out_dir``: ``config.yaml``, ``last.pt``, ``best.pt`` (with a dev set),
``tb/``, ``log.jsonl`` (one JSON line per logged step).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from cpc_seq.audio.data.batches import BatchSampling, ShortMode
from cpc_seq.audio.data.index import AudioIndex, BadAudioMode, load_index
from cpc_seq.audio.data.loader import WindowLoader, index_plan
from cpc_seq.audio.data.spans import SpanReader
from cpc_seq.audio.model.augment import AugmentConfig, Augmenter
from cpc_seq.audio.model.cotrain_head import CoTrainStats
from cpc_seq.audio.model.cpc import CPCModel, ModelConfig, build_model
from cpc_seq.config import check, check_literals, to_dict
from cpc_seq.config import load_config as load_config_as
from cpc_seq.engine.config import OptimConfig, RunConfig
from cpc_seq.engine.trainer import Context, Engine, StepOutput
from cpc_seq.errors import ConfigError, DataError
from cpc_seq.losses.config import LossConfig
from cpc_seq.tasks.kstep import KStepTask

KIND = "audio_cpc"


@dataclass
class DataConfig:
    """Training data. ``train``/``dev``: Kaldi data dirs (``dev`` optional).

    ``short_utterances``: ``pad`` (default: short utterances train as one zero-padded,
    masked window; every utterance trains) | ``pack`` (each speaker's utterances
    concatenated, windows may cross utterance but never speaker boundaries) | ``skip``
    (left out) | ``error``. On FSDD at equal CPU time pad measured 60.4 % phone, pack
    58.0 %, skip 61.5 % (one seed each; recipes/fsdd/local/quality_row.sh). ``batch_sampling``: ``uniform`` | ``same_speaker`` (every batch one
    speaker, from utt2spk) | ``speaker_balanced``. Both in :mod:`cpc_seq.audio.data.batches`,
    with what each does to the negatives. Dev windows are always whole-window cuts of
    utterances at least one window long.

    Audio is read from disk per batch (:mod:`cpc_seq.audio.data.loader`) by
    ``num_workers`` DataLoader worker processes (0: in the training process), each
    ``prefetch`` batches ahead; utterance lengths come from the data dir's cached
    duration index (:mod:`cpc_seq.audio.data.index`). ``on_bad_audio``: ``error``
    (default: an unreadable utterance stops the run, naming it) | ``skip`` (left out and
    counted while indexing).
    """

    train: str = "data/tiny/train"
    dev: str | None = None
    window: int = 20480
    batch_size: int = 8
    short_utterances: ShortMode = "pad"
    batch_sampling: BatchSampling = "uniform"
    allow_pipes: bool = False
    num_workers: int = 2
    prefetch: int = 4
    on_bad_audio: BadAudioMode = "error"

    def validate(self) -> None:
        check_literals(self, "data.")
        check(self.window > 0, "data.window", "must be positive")
        check(self.batch_size > 0, "data.batch_size", "must be positive")
        check(self.num_workers >= 0, "data.num_workers", "must be 0 or more")
        check(self.prefetch > 0, "data.prefetch", "must be positive")


@dataclass
class ExperimentConfig:
    """Everything an audio run needs, as plain data; stored in every checkpoint."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: RunConfig = field(default_factory=RunConfig)

    def validate(self) -> None:
        hop = self.model.downsample_rate()
        ahead = self.loss.frames_ahead(self.model.n_steps)
        needed = (ahead + 1) * hop
        check(self.data.window >= needed, "data.window",
              f"{self.data.window} samples is too short for {ahead} prediction "
              f"steps (need at least {needed})")


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> ExperimentConfig:
    """YAML file (optional) + ``key=value`` overrides -> validated :class:`ExperimentConfig`."""
    return load_config_as(ExperimentConfig, path, overrides)


def load_audio_index(
    data_dir: str, window: int, short: str, allow_pipes: bool, sample_rate: int,
    progress: bool, role: str, on_bad_audio: str = "error",
) -> AudioIndex:
    """The duration index of a Kaldi data dir (:func:`~cpc_seq.audio.data.index.load_index`)
    with ``short`` (see :class:`DataConfig`) applied to utterances shorter than
    ``window``, ordered by speaker (each speaker's utterances contiguous, data-dir order
    within a speaker). Logs the seconds of audio that went in and the seconds dropped.
    No audio is decoded."""
    index = load_index(data_dir, sample_rate, allow_pipes=allow_pipes,
                       on_bad_audio=on_bad_audio, progress=progress, role=role)
    total = int(index.num_samples.sum())
    short_ones = index.num_samples < window
    dropped = 0
    if short in ("skip", "error") and bool(short_ones.any()):
        if short == "error":
            u = int(np.flatnonzero(short_ones)[0])
            raise DataError(
                f"{data_dir}: utterance {index.utts[u]} has {int(index.num_samples[u])} "
                f"samples, shorter than the training window data.window={window}; set "
                "data.short_utterances=pack (or pad, or skip) to train on such utterances, "
                "or use a shorter window"
            )
        dropped = int(index.num_samples[short_ones].sum())
        n_skipped = int(short_ones.sum())
        index = index.subset(~short_ones)
    if not len(index):
        raise DataError(f"{data_dir}: no utterance is at least {window} samples long")
    index = index.by_speaker()
    sr = float(sample_rate)
    n_spk = len(np.unique(index.speaker))
    msg = (f"[{role}] {len(index)} utterances of {n_spk} speakers, {(total - dropped) / sr:.1f} s "
           f"of audio in (data.short_utterances={short})")
    if dropped:
        msg += (f"; skipped {n_skipped} utterances shorter than {window} samples: "
                f"{dropped / sr:.1f} s of {total / sr:.1f} s dropped")
    else:
        msg += "; nothing dropped"
    tqdm.write(msg, file=sys.stderr)
    return index


class _DevWindows:
    """The dev set's fixed evaluation windows, read from disk once and kept.
    ``lengths``: (U,) samples of each dev utterance."""

    def __init__(self, reader: SpanReader, window: int) -> None:
        self.reader, self.window = reader, window
        self.lengths = torch.from_numpy(reader.index.num_samples)
        self._cache: dict[tuple[tuple[int, ...], tuple[int, ...]], Tensor] = {}

    def windows(self, utt: Tensor, off: Tensor) -> Tensor:
        """(B, window) float32 samples of the dev windows ``(utt, off)``, each (B,)."""
        key = (tuple(utt.tolist()), tuple(off.tolist()))
        if key not in self._cache:
            start = self.reader.starts[utt.numpy()] + off.numpy()
            length = np.full(len(start), self.window, dtype=np.int64)
            self._cache[key] = torch.from_numpy(self.reader.read_spans(start, length,
                                                                       self.window))
        return self._cache[key]


class _TrainStep(nn.Module):
    """Forward used for training (what DDP wraps): waves -> (z, frame_lengths, predictions)."""

    def __init__(self, model: CPCModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        z, c, frame_lengths = self.model(x, lengths)
        return z, frame_lengths, self.model.predict(c)


class _CoTrainStep(nn.Module):
    """Forward used for ``loss.kind: cotrain`` (what DDP wraps): waves -> the
    co-training statistics of the model's code heads (no prediction heads run)."""

    def __init__(self, model: CPCModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> CoTrainStats:
        z, c, frame_lengths = self.model(x, lengths)
        assert self.model.cotrain is not None
        return self.model.cotrain(z, c, frame_lengths)


def cotrain_metrics(out: CoTrainStats, prefix: str = "train/") -> dict[str, float]:
    """Scalars of one co-training batch (nats)."""
    return {f"{prefix}loss": float(out.loss.detach()), f"{prefix}mi": float(out.mi),
            f"{prefix}mi_plugin": float(out.mi_plugin), f"{prefix}h_codes": float(out.h_x),
            f"{prefix}h_codes_given_future": float(out.h_x_given_y)}


class AudioCPCTask(KStepTask):
    """Audio CPC for the engine: model, window batches, k-step InfoNCE, dev evaluation.

    A batch is ``(x (B, N), lengths (B,) or None)``: normalised windows and, when some
    window is padded, the real samples of each."""

    kind = KIND
    unit = "audio_sec"
    cotrain: bool = False

    def __init__(self, cfg: ExperimentConfig, init: dict[str, Tensor] | None = None) -> None:
        self.cfg = cfg
        self.init = init  # --init-from: weights to start from (cpc_seq.audio.init_from)

    def setup(self, ctx: Context, resume_state: dict[str, Any] | None) -> None:
        cfg, run = self.cfg, self.cfg.train
        self.ctx = ctx
        self.check_batch_split(ctx)
        self.cotrain = cfg.loss.kind == "cotrain"
        self.ddp_find_unused = self.cotrain  # the prediction heads get no gradient
        self.model: CPCModel = build_model(cfg.model, cfg.loss)
        if self.init is not None and resume_state is None:
            self.model.load_state_dict(self.init, strict=False)
        self.init_loss(ctx)
        progress = run.progress and ctx.dist.is_main
        data = cfg.data
        # rank 0 builds the index (reads every header) on a first run; the other ranks
        # wait, then read the tables it wrote
        if ctx.dist.enabled and not ctx.dist.is_main:
            torch.distributed.barrier()
        self.train_index = load_audio_index(
            data.train, data.window, data.short_utterances, data.allow_pipes,
            cfg.model.sample_rate, progress, "train", data.on_bad_audio,
        )
        if ctx.dist.enabled and ctx.dist.is_main:
            torch.distributed.barrier()
        index = self.train_index
        reader = SpanReader(index)
        pack = data.short_utterances == "pack"
        self.plan = index_plan(reader, data.window, data.batch_size, run.seed, pack,
                               data.batch_sampling)
        self.batches = WindowLoader(reader, self.plan, ctx.dist.rank, ctx.dist.world,
                                    num_workers=data.num_workers, prefetch=data.prefetch)
        if ctx.dist.is_main:
            tqdm.write(f"[train] {self.plan.windows_per_epoch} windows of {data.window} "
                       f"samples from {len(self.plan.seg.length)} "
                       f"{'speaker streams' if data.short_utterances == 'pack' else 'utterances'}"
                       f" per epoch, {self.plan.batches_per_epoch} batches "
                       f"(data.batch_sampling={data.batch_sampling}), read by "
                       f"{data.num_workers} worker(s) per process", file=sys.stderr)
        self.aug_gen = torch.Generator().manual_seed(run.seed + 29 + 1000 * ctx.dist.rank)
        self.augmenter = (Augmenter(cfg.augment, cfg.model.sample_rate, self.aug_gen)
                          if cfg.augment.enabled else None)
        self.dev_store: _DevWindows | None = None
        if data.dev and ctx.dist.is_main:
            dev_index = load_audio_index(
                data.dev, data.window, "skip", data.allow_pipes,
                cfg.model.sample_rate, progress, "dev", data.on_bad_audio,
            )
            self.dev_store = _DevWindows(SpanReader(dev_index), data.window)

    def init_loss(self, ctx: Context) -> None:
        if not self.cotrain:
            super().init_loss(ctx)
            return
        # co-training draws no negatives; the generator only keeps the task's state uniform
        self.neg_gen = torch.Generator(device=ctx.device).manual_seed(
            self.cfg.train.seed + 17 + 1000 * ctx.dist.rank)

    def step_module(self) -> nn.Module:
        return _CoTrainStep(self.model) if self.cotrain else _TrainStep(self.model)

    def metrics(self, out: StepOutput) -> dict[str, float]:
        return cotrain_metrics(out.extra) if self.cotrain else super().metrics(out)

    def after_step(self, out: StepOutput) -> dict[str, float]:
        return {} if self.cotrain else super().after_step(out)  # no InfoNCE accuracy

    def postfix(self, metrics: dict[str, float]) -> dict[str, str]:
        if not self.cotrain:
            return super().postfix(metrics)
        return {"loss": f"{metrics.get('train/loss', float('nan')):.3f}",
                "mi": f"{metrics.get('train/mi_plugin', float('nan')):.3f}"}

    def evaluate(self) -> dict[str, float]:
        """k-step tasks: :meth:`KStepTask.evaluate`. Co-training: over the same fixed dev
        windows, ``dev/mi`` (plug-in MI per batch, averaged) and ``dev/loss`` =
        ``-(dev/mi - beta H^(codes))`` (what picks ``best.pt``)."""
        if not self.cotrain:
            return super().evaluate()
        if self.dev_store is None:
            return {}
        from cpc_seq.engine.windows import fixed_windows

        idx, off = fixed_windows(self.dev_store.lengths, self.cfg.data.window,
                                 self.cfg.train.eval_windows)
        bs, beta = self.cfg.data.batch_size, self.cfg.loss.cotrain_beta
        module = self.step_module()
        mis, objs = [], []
        for i in range(0, len(idx), bs):
            out: CoTrainStats = self.loss(module, self.dev_batch(idx[i : i + bs],
                                                                 off[i : i + bs]),
                                          training=False).extra
            mis.append(float(out.mi_plugin))
            objs.append(float(out.mi_plugin) - beta * float(out.h_x))
        if not mis:
            return {}
        return {"dev/loss": -sum(objs) / len(objs), "dev/mi": sum(mis) / len(mis)}

    def close(self) -> None:
        self.batches.close()  # the reader workers (they hold the run's open files)

    def check_resume(self, state: dict[str, Any], path: Path) -> None:
        super().check_resume(state, path)
        # keys added to ModelConfig since the checkpoint was written take their defaults
        # keys added to ModelConfig since the checkpoint was written take their defaults;
        # model.kernels picks an implementation of the same model, so it may change
        stored = {**to_dict(ModelConfig()), **(state["config"].get("model") or {})}
        now = to_dict(self.cfg.model)
        differ = sorted(k for k in now if k != "kernels" and stored.get(k) != now[k])
        if differ:
            raise ConfigError(f"--resume: model.{differ[0]} is {now[differ[0]]!r} here but "
                              f"{stored.get(differ[0])!r} in {path}")
        # the co-training heads are weights of the model: their loss keys must match
        stored_loss = {**to_dict(LossConfig()), **(state["config"].get("loss") or {})}
        now_loss = to_dict(self.cfg.loss)
        for k in ("kind", "cotrain_codes", "cotrain_window"):
            if "cotrain" in (stored_loss["kind"], now_loss["kind"]) and \
                    stored_loss.get(k) != now_loss[k]:
                raise ConfigError(f"--resume: loss.{k} is {now_loss[k]!r} here but "
                                  f"{stored_loss.get(k)!r} in {path}")

    def next_batch(self) -> tuple[Tensor, Tensor | None]:
        x, length = self.batches.next()
        n = self.cfg.data.window
        if self.augmenter is not None:
            x, length = self.augmenter(x, length)
        padded = bool((length < n).any())
        lengths = length if padded else None
        x = self.model.normalize_input(x, lengths).to(self.ctx.device, non_blocking=True)
        return x, (lengths.to(self.ctx.device) if padded else None)

    def loss(self, module: nn.Module, batch: Any, training: bool = True) -> StepOutput:
        x, lengths = batch if isinstance(batch, tuple) else (batch, None)
        seconds = (x.shape[0] * x.shape[1] if lengths is None else float(lengths.sum())
                   ) / self.cfg.model.sample_rate
        if self.cotrain:
            stats: CoTrainStats = module(x, lengths)
            return StepOutput(stats.loss, units=seconds, extra=stats)
        z, frame_lengths, pred = module(x, lengths)
        out = self.kstep_loss(z, frame_lengths, pred, training)
        return StepOutput(out.loss, units=seconds, extra=out)

    def dev_batch(self, idx: Tensor, off: Tensor) -> Tensor:
        assert self.dev_store is not None
        x = self.dev_store.windows(idx, off)
        return self.model.normalize_input(x).to(self.ctx.device, non_blocking=True)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "rng_augment": self.aug_gen.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if "rng_augment" in state:  # checkpoints from before augmentation have none
            self.aug_gen.set_state(state["rng_augment"].cpu())


def make_engine(cfg: ExperimentConfig, resume: bool = False,
                init: dict[str, Tensor] | None = None) -> Engine:
    """The engine running audio CPC as ``cfg`` says."""
    return Engine(AudioCPCTask(cfg, init), cfg, cfg.optim, cfg.train, resume=resume)


def train(cfg: ExperimentConfig, resume: bool = False,
          init: dict[str, Tensor] | None = None) -> dict[str, float]:
    """Train an audio CPC model as configured; returns the last logged metrics."""
    return make_engine(cfg, resume=resume, init=init).run()
