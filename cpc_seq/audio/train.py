"""Training loop for audio CPC: ``cpc-seq train --config conf.yaml [key=value ...]``.

One readable loop: random fixed-length windows -> per-window normalisation -> model ->
k-step InfoNCE -> Adam with warm-up and gradient clipping. TensorBoard gets the total
loss, per-step loss/accuracy/MI bound, the learning rate and the throughput in
audio-seconds per second; a tqdm bar shows the same. Checkpoints (``last.pt`` and, when
a dev set is given, ``best.pt`` by dev loss) are written atomically and carry the full
config, the optimizer, the RNG states and the sampler position, so ``--resume``
continues exactly where the run stopped.

Layout of ``train.out_dir``: ``config.yaml``, ``last.pt``, ``best.pt``, ``tb/``,
``log.jsonl`` (one JSON line per logged step).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from tqdm import tqdm

from cpc_seq.audio.model import CPCModel, ModelConfig, build_model
from cpc_seq.audio.windows import WaveStore, normalize_windows
from cpc_seq.config import apply_overrides, check, from_dict, load_yaml, to_dict
from cpc_seq.engine import distributed
from cpc_seq.engine import util as trainutil
from cpc_seq.engine.windows import WindowSampler, fixed_windows
from cpc_seq.errors import ConfigError, CpcSeqError, DataError
from cpc_seq.io.checkpoint import atomic_write, load_checkpoint, save_checkpoint
from cpc_seq.losses import NEGATIVE_MODES, kstep_infonce


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
class LossConfig:
    """k-step InfoNCE options; see :mod:`cpc_seq.losses.kstep` for the negative modes.

    ``cross_rank``: under torchrun, draw candidates from the z of every process's
    shard (all-gather with gradients), so N processes compute the 1-process loss.
    """

    negatives: str = "all"
    n_negatives: int = 128
    exclude_positive: bool = True
    cross_rank: bool = False

    def validate(self) -> None:
        check(self.negatives in NEGATIVE_MODES, "loss.negatives", f"one of {NEGATIVE_MODES}")
        check(self.n_negatives > 0, "loss.n_negatives", "must be positive")


@dataclass
class OptimConfig:
    """Adam with linear warm-up, then constant or cosine decay; gradient-norm clipping."""

    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 100
    schedule: str = "constant"
    grad_clip: float = 1.0

    def validate(self) -> None:
        check(self.lr > 0, "optim.lr", "must be positive")
        check(self.weight_decay >= 0, "optim.weight_decay", "must be >= 0")
        check(self.warmup_steps >= 0, "optim.warmup_steps", "must be >= 0")
        check(self.schedule in ("constant", "cosine"), "optim.schedule", "constant or cosine")
        check(self.grad_clip >= 0, "optim.grad_clip", "must be >= 0 (0 disables)")


@dataclass
class RunConfig:
    """Length of the run, outputs, device and bookkeeping."""

    out_dir: str = "exp/cpc"
    steps: int = 1000
    seed: int = 0
    log_every: int = 10
    save_every: int = 200
    eval_every: int = 200
    eval_windows: int = 64
    max_minutes: float = 0.0
    threads: int = 0
    device: str = "auto"
    precision: str = "auto"
    max_bad_steps: int = 10
    progress: bool = True

    def validate(self) -> None:
        check(self.steps > 0, "train.steps", "must be positive")
        check(self.log_every > 0, "train.log_every", "must be positive")
        check(self.save_every > 0, "train.save_every", "must be positive")
        check(self.eval_every > 0, "train.eval_every", "must be positive")
        check(self.max_minutes >= 0, "train.max_minutes", "must be >= 0 (0 = no limit)")
        check(self.threads >= 0, "train.threads", "must be >= 0 (0 = torch default)")
        check(self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
              "train.device", "auto, cpu, cuda or cuda:N")
        check(self.precision in ("auto", "fp32", "bf16"), "train.precision",
              "auto (bf16 autocast where the hardware has it), fp32 or bf16")
        check(self.max_bad_steps > 0, "train.max_bad_steps", "must be positive")


@dataclass
class ExperimentConfig:
    """Everything a run needs, as plain data; stored in every checkpoint."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: RunConfig = field(default_factory=RunConfig)

    def validate(self) -> None:
        needed = (self.model.n_steps + 1) * 160
        check(self.data.window >= needed, "data.window",
              f"{self.data.window} samples is too short for {self.model.n_steps} prediction "
              f"steps (need at least {needed})")


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> ExperimentConfig:
    """YAML file (optional) + ``key=value`` overrides -> validated :class:`ExperimentConfig`."""
    data = load_yaml(path) if path is not None else {}
    data = apply_overrides(data, overrides or [])
    return from_dict(ExperimentConfig, data)


def resolve_device(name: str, option: str = "train.device") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cpu``, ``cuda``, ``cuda:N`` as given.
    Anything else, or CUDA on a machine without it, is a ConfigError naming ``option``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise ConfigError(f"{option}: expected auto, cpu, cuda or cuda:N, got {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"{option}: {name} requested but CUDA is not available")
    return torch.device(name)


def lr_at(step: int, cfg: OptimConfig, total: int) -> float:
    """Learning rate for 0-based ``step``: linear warm-up, then constant or cosine."""
    return trainutil.lr_at(step, cfg.lr, cfg.warmup_steps, cfg.schedule, total)


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

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z, c, frame_lengths = self.model(x)
        return z, frame_lengths, self.model.predict(c)


class Trainer:
    """Owns model, optimizer, data and the loop state; ``run()`` trains to ``train.steps``."""

    def __init__(self, cfg: ExperimentConfig, resume: bool = False) -> None:
        self.cfg = cfg
        run = cfg.train
        if run.threads:
            torch.set_num_threads(run.threads)
        self.device = resolve_device(run.device)
        self.dist = distributed.init_from_env(self.device.type)
        if self.dist.enabled:
            if self.device.type == "cuda":
                self.device = torch.device("cuda", self.dist.local_rank)
            if cfg.data.batch_size % self.dist.world:
                raise ConfigError(f"data.batch_size={cfg.data.batch_size} (the global batch) must "
                                  f"divide by the {self.dist.world} processes")
            run.progress = run.progress and self.dist.is_main
        self.out = Path(run.out_dir)
        torch.manual_seed(run.seed)
        self.model: CPCModel = build_model(cfg.model).to(self.device)
        self.step_module: nn.Module = _TrainStep(self.model)
        if self.dist.enabled:
            self.step_module = nn.parallel.DistributedDataParallel(
                self.step_module, device_ids=[self.device.index] if self.device.type == "cuda"
                else None)
        self.opt = torch.optim.Adam(
            self.model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay
        )
        self.neg_gen = torch.Generator(device=self.device).manual_seed(
            run.seed + 17 + 1000 * self.dist.rank)
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.best_dev = float("inf")
        if resume:
            self._resume()
        self.train_store = load_waves(
            cfg.data.train, cfg.data.window, cfg.data.short_utterances, cfg.data.allow_pipes,
            cfg.model.sample_rate, run.progress, "train",
        )
        self.sampler = WindowSampler(
            self.train_store.lengths, cfg.data.window, cfg.data.batch_size, run.seed
        )
        self.dev_store = None
        if cfg.data.dev and self.dist.is_main:
            self.dev_store = load_waves(
                cfg.data.dev, cfg.data.window, "skip", cfg.data.allow_pipes,
                cfg.model.sample_rate, run.progress, "dev",
            )
        self.writer = None

    # -- checkpoints -------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "kind": "audio_cpc",
            "config": to_dict(self.cfg),
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "best_dev": self.best_dev,
            "rng_cpu": torch.get_rng_state(),
            "rng_neg": self.neg_gen.get_state(),
            "rng_cuda": torch.cuda.get_rng_state() if self.device.type == "cuda" else None,
        }

    def _resume(self) -> None:
        path = self.out / "last.pt"
        if not path.exists():
            raise CpcSeqError(f"--resume: no checkpoint {path} to resume from")
        st = load_checkpoint(path, map_location=self.device)
        if st["config"]["model"] != to_dict(self.cfg.model):
            raise ConfigError(f"--resume: model config differs from the one in {path}")
        self.model.load_state_dict(st["model"])
        self.opt.load_state_dict(st["optimizer"])
        self.step, self.epoch = int(st["step"]), int(st["epoch"])
        self.batch_in_epoch = int(st["batch_in_epoch"])
        self.best_dev = float(st["best_dev"])
        torch.set_rng_state(st["rng_cpu"].cpu())
        self.neg_gen.set_state(st["rng_neg"].cpu() if self.device.type == "cpu" else st["rng_neg"])
        if st.get("rng_cuda") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(st["rng_cuda"].cpu())
        tqdm.write(f"resumed from {path} at step {self.step}", file=sys.stderr)

    def save(self, name: str) -> None:
        if self.dist.is_main:
            save_checkpoint(self.state(), self.out / name)

    # -- one step ----------------------------------------------------------------------
    def _batch(self, store: WaveStore, utt: torch.Tensor, off: torch.Tensor) -> torch.Tensor:
        x = store.gather(utt, off, self.cfg.data.window)
        return normalize_windows(x).to(self.device, non_blocking=True)

    def _loss(self, x: torch.Tensor, training: bool = True):
        amp = trainutil.use_bf16(self.cfg.train.precision, self.device)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=amp):
            module = self.step_module if training else _TrainStep(self.model)
            z, frame_lengths, pred = module(x)
            extra = {}
            if training and self.dist.enabled and self.cfg.loss.cross_rank:
                extra = {
                    "candidates": distributed.gather_with_grad(z),
                    "candidate_lengths": distributed.gather_with_grad(frame_lengths),
                    "query_offset": self.dist.rank * z.shape[0],
                }
            return kstep_infonce(
                pred, z, frame_lengths, negatives=self.cfg.loss.negatives,
                n_negatives=self.cfg.loss.n_negatives,
                exclude_positive=self.cfg.loss.exclude_positive, generator=self.neg_gen, **extra,
            )

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean loss/accuracy on a fixed set of dev windows."""
        assert self.dev_store is not None
        self.model.eval()
        utt, off = fixed_windows(self.dev_store.lengths, self.cfg.data.window,
                                 self.cfg.train.eval_windows)
        g_state = self.neg_gen.get_state()
        losses, accs = [], []
        bs = self.cfg.data.batch_size
        for i in range(0, len(utt), bs):
            if len(utt[i : i + bs]) < 2 and self.cfg.loss.negatives != "same_sequence":
                continue
            out = self._loss(self._batch(self.dev_store, utt[i : i + bs], off[i : i + bs]),
                             training=False)
            losses.append(float(out.loss))
            accs.append(float(out.step_acc.mean()))
        self.neg_gen.set_state(g_state)
        self.model.train()
        if not losses:
            return {}
        return {"dev/loss": sum(losses) / len(losses), "dev/acc": sum(accs) / len(accs)}

    def run(self) -> dict[str, float]:
        """Train until ``train.steps`` (or ``train.max_minutes``); returns the last metrics."""
        cfg, run = self.cfg, self.cfg.train
        self.out.mkdir(parents=True, exist_ok=True)
        if self.dist.is_main:
            with atomic_write(self.out / "config.yaml", "w") as f:
                yaml.safe_dump(to_dict(cfg), f, sort_keys=False)
        self.writer = trainutil.ScalarLog(self.out, self.dist.is_main, purge_step=self.step)
        guard = trainutil.NonFiniteGuard(run.max_bad_steps, self.out / "last.pt")
        audio_per_batch = cfg.data.batch_size * cfg.data.window / cfg.model.sample_rate
        plan = self.sampler.epoch_plan(self.epoch)
        self.model.train()
        t_start = time.perf_counter()
        t_window, audio_window = time.perf_counter(), 0.0
        metrics: dict[str, float] = {}
        bar = tqdm(total=run.steps, initial=self.step, disable=not run.progress, desc="train",
                   unit="step", dynamic_ncols=True)
        try:
            while self.step < run.steps:
                if self.batch_in_epoch >= self.sampler.batches_per_epoch:
                    self.epoch += 1
                    self.batch_in_epoch = 0
                    plan = self.sampler.epoch_plan(self.epoch)
                utt, off = plan[0][self.batch_in_epoch], plan[1][self.batch_in_epoch]
                if self.dist.enabled:  # this rank's contiguous share of the global batch
                    share = len(utt) // self.dist.world
                    lo = self.dist.rank * share
                    utt, off = utt[lo : lo + share], off[lo : lo + share]
                self.batch_in_epoch += 1
                lr = lr_at(self.step, cfg.optim, run.steps)
                trainutil.set_lr(self.opt, lr)
                out = self._loss(self._batch(self.train_store, utt, off))
                self.opt.zero_grad(set_to_none=True)
                out.loss.backward()
                gnorm = trainutil.clip_grad_norm(self.model.parameters(), cfg.optim.grad_clip)
                agreed = None
                if self.dist.enabled:
                    local = not bool(torch.isfinite(out.loss) and torch.isfinite(gnorm))
                    agreed = distributed.any_rank(local, self.device)
                if guard.bad(self.step, out.loss.detach(), gnorm, any_rank=agreed):
                    self.opt.zero_grad(set_to_none=True)
                    continue
                self.opt.step()
                self.step += 1
                audio_window += audio_per_batch
                bar.update(1)
                if self.step % run.log_every == 0 or self.step == run.steps:
                    now = time.perf_counter()
                    speed = audio_window / max(now - t_window, 1e-9)
                    t_window, audio_window = now, 0.0
                    metrics = {**trainutil.kstep_metrics(out), "lr": lr,
                               "speed/audio_sec_per_sec": speed}
                    self.writer.add(self.step, metrics)
                    bar.set_postfix(loss=f"{metrics['train/loss']:.3f}",
                                    acc=f"{metrics['train/acc']:.3f}",
                                    audio_s_per_s=f"{speed:.1f}")
                if self.dev_store is not None and (self.step % run.eval_every == 0
                                                   or self.step == run.steps):
                    dev = self.evaluate()
                    self.writer.add(self.step, dev, jsonl=False)
                    metrics.update(dev)
                    if dev and dev["dev/loss"] < self.best_dev:
                        self.best_dev = dev["dev/loss"]
                        self.save("best.pt")
                if self.step % run.save_every == 0 or self.step == run.steps:
                    self.save("last.pt")
                if run.max_minutes and (time.perf_counter() - t_start) > 60 * run.max_minutes:
                    tqdm.write(f"train.max_minutes={run.max_minutes} reached at step {self.step}",
                               file=sys.stderr)
                    self.save("last.pt")
                    break
        finally:
            bar.close()
            self.writer.close()
        return metrics


def train(cfg: ExperimentConfig, resume: bool = False) -> dict[str, float]:
    """Train a CPC model as configured; returns the last logged metrics."""
    try:
        return Trainer(cfg, resume=resume).run()
    finally:
        distributed.shutdown()


def main(argv: list[str] | None = None) -> int:
    """``python -m cpc_seq.audio.train`` (for ``torchrun -m cpc_seq.audio.train``): same as ``cpc-seq train``."""
    from cpc_seq.cli import main as cli_main

    return cli_main(["train", *(argv if argv is not None else __import__("sys").argv[1:])])


if __name__ == "__main__":
    raise SystemExit(main())
