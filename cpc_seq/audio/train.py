"""Audio CPC as a task of the training engine: ``cpc-seq train --config conf.yaml [key=value ...]``.

Random fixed-length windows of the training utterances -> per-window normalisation ->
:class:`~cpc_seq.audio.model.CPCModel` -> k-step InfoNCE. Everything else (optimiser,
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

from cpc_seq.audio.model import CPCModel, ModelConfig, build_model
from cpc_seq.audio.windows import WaveStore, normalize_windows
from cpc_seq.config import apply_overrides, check, from_dict, load_yaml, to_dict
from cpc_seq.engine import distributed
from cpc_seq.engine.config import OptimConfig, RunConfig
from cpc_seq.engine.log import kstep_metrics
from cpc_seq.engine.trainer import Context, Engine, StepOutput, Task
from cpc_seq.engine.windows import PlanBatches, WindowSampler, fixed_windows
from cpc_seq.errors import ConfigError, DataError
from cpc_seq.losses import kstep_infonce
from cpc_seq.losses.config import LossConfig

KIND = "audio_cpc"


@dataclass
class DataConfig:
    """Training data. ``train``/``dev``: Kaldi data dirs (``dev`` optional)."""

    train: str = "data/tiny/train"
    dev: str | None = None
    window: int = 20480
    batch_size: int = 8
    short_utterances: str = "error"
    allow_pipes: bool = False

    def validate(self) -> None:
        check(self.window > 0, "data.window", "must be positive")
        check(self.batch_size > 0, "data.batch_size", "must be positive")
        check(self.short_utterances in ("error", "skip"), "data.short_utterances",
              "one of 'error', 'skip'")


@dataclass
class ExperimentConfig:
    """Everything an audio run needs, as plain data; stored in every checkpoint."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: RunConfig = field(default_factory=RunConfig)

    def validate(self) -> None:
        hop = self.model.downsample_rate()
        needed = (self.model.n_steps + 1) * hop
        check(self.data.window >= needed, "data.window",
              f"{self.data.window} samples is too short for {self.model.n_steps} prediction "
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
    """Load a Kaldi data dir's audio into a :class:`WaveStore`, checking window length."""
    from cpc_seq.audio.kaldi import load_data_dir
    from cpc_seq.audio.wav import AudioNotes

    dd = load_data_dir(data_dir, allow_pipes=allow_pipes)
    notes = AudioNotes()
    utts, waves, skipped = [], [], []
    for utt in tqdm(dd.utts, desc=f"loading {role} audio", disable=not progress, unit="utt"):
        w = dd.load_audio(utt, target_sr=sample_rate, allow_pipes=allow_pipes, notes=notes)
        if len(w) < window:
            if short == "error":
                raise DataError(
                    f"{data_dir}: utterance {utt} has {len(w)} samples, shorter than the "
                    f"training window data.window={window}; set data.short_utterances=skip "
                    "to leave such utterances out, or use a shorter window"
                )
            skipped.append(utt)
            continue
        utts.append(utt)
        waves.append(w)
    for line in notes.summary():
        tqdm.write(f"[{role}] {line}", file=sys.stderr)
    if skipped:
        tqdm.write(f"[{role}] skipped {len(skipped)} utterances shorter than {window} samples",
                   file=sys.stderr)
    if not utts:
        raise DataError(f"{data_dir}: no utterance is at least {window} samples long")
    return WaveStore(utts, waves)


class _TrainStep(nn.Module):
    """Forward used for training (what DDP wraps): waves -> (z, frame_lengths, predictions)."""

    def __init__(self, model: CPCModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        z, c, frame_lengths = self.model(x)
        return z, frame_lengths, self.model.predict(c)


class AudioCPCTask(Task):
    """Audio CPC for the engine: model, window batches, k-step InfoNCE, dev evaluation."""

    kind = KIND
    unit = "audio_sec"

    def __init__(self, cfg: ExperimentConfig) -> None:
        self.cfg = cfg

    def setup(self, ctx: Context, resume_state: dict[str, Any] | None) -> None:
        cfg, run = self.cfg, self.cfg.train
        self.ctx = ctx
        if ctx.dist.enabled and cfg.data.batch_size % ctx.dist.world:
            raise ConfigError(f"data.batch_size={cfg.data.batch_size} (the global batch) must "
                              f"divide by the {ctx.dist.world} processes")
        self.model: CPCModel = build_model(cfg.model)
        self.neg_gen = torch.Generator(device=ctx.device).manual_seed(
            run.seed + 17 + 1000 * ctx.dist.rank)
        progress = run.progress and ctx.dist.is_main
        self.train_store = load_waves(
            cfg.data.train, cfg.data.window, cfg.data.short_utterances, cfg.data.allow_pipes,
            cfg.model.sample_rate, progress, "train",
        )
        sampler = WindowSampler(self.train_store.lengths, cfg.data.window, cfg.data.batch_size,
                                run.seed)
        self.batches = PlanBatches(sampler, ctx.dist.rank, ctx.dist.world)
        self.dev_store = None
        if cfg.data.dev and ctx.dist.is_main:
            self.dev_store = load_waves(
                cfg.data.dev, cfg.data.window, "skip", cfg.data.allow_pipes,
                cfg.model.sample_rate, progress, "dev",
            )

    def train_module(self) -> nn.Module:
        return _TrainStep(self.model)

    def check_resume(self, state: dict[str, Any], path: Path) -> None:
        super().check_resume(state, path)
        if state["config"].get("model") != to_dict(self.cfg.model):
            raise ConfigError(f"--resume: model config differs from the one in {path}")

    def _windows(self, store: WaveStore, utt: Tensor, off: Tensor) -> Tensor:
        x = store.gather(utt, off, self.cfg.data.window)
        return normalize_windows(x).to(self.ctx.device, non_blocking=True)

    def next_batch(self) -> Tensor:
        return self._windows(self.train_store, *self.batches.next())

    def loss(self, module: nn.Module, batch: Tensor, training: bool = True) -> StepOutput:
        z, frame_lengths, pred = module(batch)
        extra = {}
        if training and self.ctx.dist.enabled and self.cfg.loss.cross_rank:
            extra = {
                "candidates": distributed.gather_with_grad(z),
                "candidate_lengths": distributed.gather_with_grad(frame_lengths),
                "query_offset": self.ctx.dist.rank * z.shape[0],
            }
        out = kstep_infonce(
            pred, z, frame_lengths, negatives=self.cfg.loss.negatives,
            n_negatives=self.cfg.loss.n_negatives,
            exclude_positive=self.cfg.loss.exclude_positive, generator=self.neg_gen, **extra,
        )
        seconds = batch.shape[0] * batch.shape[1] / self.cfg.model.sample_rate
        return StepOutput(out.loss, units=seconds, extra=out)

    def metrics(self, out: StepOutput) -> dict[str, float]:
        return kstep_metrics(out.extra)

    def postfix(self, metrics: dict[str, float]) -> dict[str, str]:
        return {"loss": f"{metrics['train/loss']:.3f}", "acc": f"{metrics['train/acc']:.3f}"}

    def evaluate(self) -> dict[str, float]:
        """Mean loss/accuracy on a fixed set of dev windows (negatives' RNG untouched)."""
        if self.dev_store is None:
            return {}
        utt, off = fixed_windows(self.dev_store.lengths, self.cfg.data.window,
                                 self.cfg.train.eval_windows)
        g_state = self.neg_gen.get_state()
        losses, accs = [], []
        bs = self.cfg.data.batch_size
        step = _TrainStep(self.model)
        for i in range(0, len(utt), bs):
            if len(utt[i : i + bs]) < 2 and self.cfg.loss.negatives != "same_sequence":
                continue
            x = self._windows(self.dev_store, utt[i : i + bs], off[i : i + bs])
            out = self.loss(step, x, training=False).extra
            losses.append(float(out.loss))
            accs.append(float(out.step_acc.mean()))
        self.neg_gen.set_state(g_state)
        if not losses:
            return {}
        return {"dev/loss": sum(losses) / len(losses), "dev/acc": sum(accs) / len(accs)}

    def state_dict(self) -> dict[str, Any]:
        return {"batches": self.batches.state_dict(), "rng_neg": self.neg_gen.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.batches.load_state_dict(state["batches"])
        rng = state["rng_neg"]
        self.neg_gen.set_state(rng.cpu() if self.ctx.device.type == "cpu" else rng)


def make_engine(cfg: ExperimentConfig, resume: bool = False) -> Engine:
    """The engine running audio CPC as ``cfg`` says."""
    return Engine(AudioCPCTask(cfg), cfg, cfg.optim, cfg.train, resume=resume)


def train(cfg: ExperimentConfig, resume: bool = False) -> dict[str, float]:
    """Train an audio CPC model as configured; returns the last logged metrics."""
    return make_engine(cfg, resume=resume).run()
