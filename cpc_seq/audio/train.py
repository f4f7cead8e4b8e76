"""Audio CPC as a task of the training engine: ``cpc-seq train --config conf.yaml [key=value ...]``.

Fixed-length windows of the training audio (packed per speaker, or padded, or only long
utterances: ``data.short_utterances``; batched uniformly, per speaker or speaker-balanced:
``data.batch_sampling``; see :mod:`cpc_seq.audio.data.batches`) -> optional waveform
augmentation (``augment``, :mod:`cpc_seq.audio.augment`) -> per-window normalisation ->
:class:`~cpc_seq.audio.model.CPCModel` -> k-step InfoNCE (``loss.kind: infonce``) or
ACPC's aligned loss (``loss.kind: acpc``, :mod:`cpc_seq.losses.acpc`). Everything else (optimiser,
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

import torch
from torch import Tensor, nn
from tqdm import tqdm

from cpc_seq.audio.augment import AugmentConfig, Augmenter
from cpc_seq.audio.data.batches import BATCH_SAMPLING, SHORT_MODES, WindowPlan, make_segments
from cpc_seq.audio.model import CPCModel, ModelConfig, build_model
from cpc_seq.audio.data.windows import WaveStore, normalize_windows
from cpc_seq.config import apply_overrides, check, from_dict, load_yaml, to_dict
from cpc_seq.engine.config import OptimConfig, RunConfig
from cpc_seq.engine.kstep_task import KStepTask
from cpc_seq.engine.trainer import Context, Engine, StepOutput
from cpc_seq.engine.windows import PlanBatches
from cpc_seq.errors import ConfigError, DataError
from cpc_seq.losses.acpc import ACPC_NEGATIVES, acpc_loss
from cpc_seq.losses.config import LossConfig

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
    """

    train: str = "data/tiny/train"
    dev: str | None = None
    window: int = 20480
    batch_size: int = 8
    short_utterances: str = "pad"
    batch_sampling: str = "uniform"
    allow_pipes: bool = False

    def validate(self) -> None:
        check(self.window > 0, "data.window", "must be positive")
        check(self.batch_size > 0, "data.batch_size", "must be positive")
        check(self.short_utterances in SHORT_MODES, "data.short_utterances",
              f"one of {SHORT_MODES}")
        check(self.batch_sampling in BATCH_SAMPLING, "data.batch_sampling",
              f"one of {BATCH_SAMPLING}")


LOSS_KINDS = ("infonce", "acpc")


@dataclass
class AudioLossConfig(LossConfig):
    """The audio task's ``loss`` section: k-step InfoNCE options plus the loss kind.

    ``kind``: ``infonce`` (CPC's k-step InfoNCE, :mod:`cpc_seq.losses.kstep`) | ``acpc``
    (Chorowski et al. 2021: the ``model.n_steps`` predictions aligned to the next
    ``acpc_horizon`` frames, :mod:`cpc_seq.losses.acpc`; negatives ``all`` or
    ``cross_batch``).
    """

    kind: str = "infonce"
    acpc_horizon: int = 12

    def validate(self) -> None:
        super().validate()
        check(self.kind in LOSS_KINDS, "loss.kind", f"one of {LOSS_KINDS}")
        if self.kind == "acpc":
            check(self.negatives in ACPC_NEGATIVES, "loss.negatives",
                  f"one of {ACPC_NEGATIVES} with loss.kind=acpc")


@dataclass
class ExperimentConfig:
    """Everything an audio run needs, as plain data; stored in every checkpoint."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: AudioLossConfig = field(default_factory=AudioLossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: RunConfig = field(default_factory=RunConfig)

    def validate(self) -> None:
        hop = self.model.downsample_rate()
        ahead = self.model.n_steps
        if self.loss.kind == "acpc":
            check(self.loss.acpc_horizon >= self.model.n_steps, "loss.acpc_horizon",
                  f"must be at least model.n_steps={self.model.n_steps} (the predictions "
                  "it aligns)")
            ahead = self.loss.acpc_horizon
        needed = (ahead + 1) * hop
        check(self.data.window >= needed, "data.window",
              f"{self.data.window} samples is too short for {ahead} prediction "
              f"steps (need at least {needed})")


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> ExperimentConfig:
    """YAML file (optional) + ``key=value`` overrides -> validated :class:`ExperimentConfig`."""
    data = load_yaml(path) if path is not None else {}
    data = apply_overrides(data, overrides or [])
    return from_dict(ExperimentConfig, data)


def load_waves(
    data_dir: str, window: int, short: str, allow_pipes: bool, sample_rate: int,
    progress: bool, role: str,
) -> WaveStore:
    """Load a Kaldi data dir's audio into a :class:`WaveStore` (utterances ordered by
    speaker, so each speaker's audio is contiguous; ``store.speakers``: each utterance's
    speaker, the utterance itself without utt2spk), applying ``short`` (see
    :class:`DataConfig`) to utterances shorter than ``window``. Logs the seconds of audio
    that went in and the seconds dropped."""
    from cpc_seq.audio.data.kaldi import load_data_dir
    from cpc_seq.audio.data.wav import AudioNotes

    dd = load_data_dir(data_dir, allow_pipes=allow_pipes)
    spk_of = dd.utt2spk or {}
    notes = AudioNotes()
    kept, skipped = [], []
    dropped = total = 0
    for utt in tqdm(dd.utts, desc=f"loading {role} audio", disable=not progress, unit="utt"):
        w = dd.load_audio(utt, target_sr=sample_rate, allow_pipes=allow_pipes, notes=notes)
        total += len(w)
        if len(w) < window and short in ("skip", "error"):
            if short == "error":
                raise DataError(
                    f"{data_dir}: utterance {utt} has {len(w)} samples, shorter than the "
                    f"training window data.window={window}; set data.short_utterances=pack "
                    "(or pad, or skip) to train on such utterances, or use a shorter window"
                )
            skipped.append(utt)
            dropped += len(w)
            continue
        kept.append((spk_of.get(utt, utt), utt, w))
    for line in notes.summary():
        tqdm.write(f"[{role}] {line}", file=sys.stderr)
    if not kept:
        raise DataError(f"{data_dir}: no utterance is at least {window} samples long")
    kept.sort(key=lambda e: e[0])  # stable: data-dir order within a speaker
    sr = float(sample_rate)
    n_spk = len({e[0] for e in kept})
    msg = (f"[{role}] {len(kept)} utterances of {n_spk} speakers, {(total - dropped) / sr:.1f} s "
           f"of audio in (data.short_utterances={short})")
    if skipped:
        msg += (f"; skipped {len(skipped)} utterances shorter than {window} samples: "
                f"{dropped / sr:.1f} s of {total / sr:.1f} s dropped")
    else:
        msg += "; nothing dropped"
    tqdm.write(msg, file=sys.stderr)
    return WaveStore([e[1] for e in kept], [e[2] for e in kept], speakers=[e[0] for e in kept])


class _TrainStep(nn.Module):
    """Forward used for training (what DDP wraps): waves -> (z, frame_lengths, predictions)."""

    def __init__(self, model: CPCModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        z, c, frame_lengths = self.model(x, lengths)
        return z, frame_lengths, self.model.predict(c)


class AudioCPCTask(KStepTask):
    """Audio CPC for the engine: model, window batches, k-step InfoNCE, dev evaluation.

    A batch is ``(x (B, N), lengths (B,) or None)``: normalised windows and, when some
    window is padded, the real samples of each."""

    kind = KIND
    unit = "audio_sec"

    def __init__(self, cfg: ExperimentConfig) -> None:
        self.cfg = cfg

    def setup(self, ctx: Context, resume_state: dict[str, Any] | None) -> None:
        cfg, run = self.cfg, self.cfg.train
        self.ctx = ctx
        self.check_batch_split(ctx)
        self.model: CPCModel = build_model(cfg.model)
        self.init_negatives(ctx)
        progress = run.progress and ctx.dist.is_main
        self.train_store = load_waves(
            cfg.data.train, cfg.data.window, cfg.data.short_utterances, cfg.data.allow_pipes,
            cfg.model.sample_rate, progress, "train",
        )
        store = self.train_store
        segments = make_segments(store.starts, store.lengths, store.speakers,
                                 pack=cfg.data.short_utterances == "pack")
        self.plan = WindowPlan(segments, cfg.data.window, cfg.data.batch_size, run.seed,
                               cfg.data.batch_sampling)
        self.batches = PlanBatches(self.plan, ctx.dist.rank, ctx.dist.world)
        if ctx.dist.is_main:
            tqdm.write(f"[train] {self.plan.windows_per_epoch} windows of {cfg.data.window} "
                       f"samples from {len(segments.length)} "
                       f"{'speaker streams' if cfg.data.short_utterances == 'pack' else 'utterances'}"
                       f" per epoch, {self.plan.batches_per_epoch} batches "
                       f"(data.batch_sampling={cfg.data.batch_sampling})", file=sys.stderr)
        self.aug_gen = torch.Generator().manual_seed(run.seed + 29 + 1000 * ctx.dist.rank)
        self.augmenter = (Augmenter(cfg.augment, cfg.model.sample_rate, self.aug_gen)
                          if cfg.augment.enabled else None)
        self.dev_store = None
        if cfg.data.dev and ctx.dist.is_main:
            self.dev_store = load_waves(
                cfg.data.dev, cfg.data.window, "skip", cfg.data.allow_pipes,
                cfg.model.sample_rate, progress, "dev",
            )

    def step_module(self) -> nn.Module:
        return _TrainStep(self.model)

    def check_resume(self, state: dict[str, Any], path: Path) -> None:
        super().check_resume(state, path)
        if state["config"].get("model") != to_dict(self.cfg.model):
            raise ConfigError(f"--resume: model config differs from the one in {path}")

    def _windows(self, store: WaveStore, utt: Tensor, off: Tensor) -> Tensor:
        x = store.gather(utt, off, self.cfg.data.window)
        return normalize_windows(x).to(self.ctx.device, non_blocking=True)

    def next_batch(self) -> tuple[Tensor, Tensor | None]:
        start, length = self.batches.next()
        n = self.cfg.data.window
        x = self.train_store.gather_spans(start, length, n)
        if self.augmenter is not None:
            x, length = self.augmenter(x, length)
        padded = bool((length < n).any())
        lengths = length if padded else None
        x = normalize_windows(x, lengths=lengths).to(self.ctx.device, non_blocking=True)
        return x, (lengths.to(self.ctx.device) if padded else None)

    def loss(self, module: nn.Module, batch: Any, training: bool = True) -> StepOutput:
        x, lengths = batch if isinstance(batch, tuple) else (batch, None)
        z, frame_lengths, pred = module(x, lengths)
        seconds = (x.shape[0] * x.shape[1] if lengths is None else float(lengths.sum())
                   ) / self.cfg.model.sample_rate
        if self.cfg.loss.kind == "acpc":
            out = acpc_loss(pred, z, frame_lengths, horizon=self.cfg.loss.acpc_horizon,
                            negatives=self.cfg.loss.negatives,
                            n_negatives=self.cfg.loss.n_negatives, generator=self.neg_gen)
            return StepOutput(out.loss, units=seconds, extra=out)
        out = self.kstep_loss(z, frame_lengths, pred, training)
        return StepOutput(out.loss, units=seconds, extra=out)

    def dev_batch(self, idx: Tensor, off: Tensor) -> Tensor:
        return self._windows(self.dev_store, idx, off)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "rng_augment": self.aug_gen.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if "rng_augment" in state:  # checkpoints from before augmentation have none
            self.aug_gen.set_state(state["rng_augment"].cpu())


def make_engine(cfg: ExperimentConfig, resume: bool = False) -> Engine:
    """The engine running audio CPC as ``cfg`` says."""
    return Engine(AudioCPCTask(cfg), cfg, cfg.optim, cfg.train, resume=resume)


def train(cfg: ExperimentConfig, resume: bool = False) -> dict[str, float]:
    """Train an audio CPC model as configured; returns the last logged metrics."""
    return make_engine(cfg, resume=resume).run()
