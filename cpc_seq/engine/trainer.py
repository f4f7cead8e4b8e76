"""The training engine: one loop that owns a run, for every modality.

A modality provides a :class:`Task`: its model, its batch source, its loss for a batch,
optionally an evaluation and extra updates after each step. The :class:`Engine` owns the
rest, the same way for audio CPC, text CPC, DIM and AMDIM:

- device (``train.device``) and precision (``train.precision``: auto / bf16 / fp32);
- Adam, linear warm-up then constant or cosine decay, gradient-norm clipping;
- the non-finite guard (a NaN/Inf loss or gradient skips the step; too many in a row stop
  the run), the time cap ``train.max_minutes``;
- DDP under ``torchrun`` (gloo on CPU, NCCL on CUDA): ``batch_size`` is the global batch,
  each rank takes its contiguous share, and the task may gather candidates across ranks;
- rank-0 logging: tqdm, TensorBoard (``tb/``), ``log.jsonl``;
- atomic checkpoints (``last.pt``, ``best.pt`` by dev loss when the task evaluates)
  carrying the config as plain data, the optimizer, the RNG states and the batch source's
  position, and ``--resume``, which continues exactly where the run stopped.

An ``out_dir`` that holds an earlier run is refused unless ``--resume`` (continue it) or
``train.overwrite=true`` (start again) is given; one that another run is training into
right now is refused in any case (``OUT_DIR/.lock``, :mod:`cpc_seq.engine.lock`). A run that ends without a finite
checkpoint is an error.
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn
from tqdm import tqdm

from cpc_seq.config import to_dict
from cpc_seq.engine import distributed
from cpc_seq.engine.config import OptimConfig, RunConfig
from cpc_seq.engine.device import autocast, resolve_device, use_bf16
from cpc_seq.engine.guard import NonFiniteGuard
from cpc_seq.engine.lock import RunLock
from cpc_seq.engine.log import ScalarLog
from cpc_seq.engine.schedule import adam, clip_grad_norm, lr_at, set_lr
from cpc_seq.errors import ConfigError, CpcSeqError
from cpc_seq.io.atomic import atomic_write, prepare_dir
from cpc_seq.io.checkpoint import load_checkpoint, save_checkpoint
from cpc_seq.kernels.memory import apply_cpu_memory

RUN_FILES = ("last.pt", "best.pt", "log.jsonl", "config.yaml")


def _all_finite(out: Any) -> bool:
    """Whether every floating-point tensor in ``out`` (tensors, tuples, lists, dicts,
    dataclasses) is finite."""
    if isinstance(out, Tensor):
        return not out.is_floating_point() or bool(torch.isfinite(out).all())
    if isinstance(out, (tuple, list)):
        return all(_all_finite(o) for o in out)
    if isinstance(out, dict):
        return all(_all_finite(o) for o in out.values())
    if dataclasses.is_dataclass(out) and not isinstance(out, type):
        return all(_all_finite(getattr(out, f.name)) for f in dataclasses.fields(out))
    return True


@dataclass
class StepOutput:
    """What a task's :meth:`Task.loss` returns: the loss to minimise, how much data the
    batch held (``units``, for the speed line), and anything the task wants back in
    :meth:`Task.metrics` / :meth:`Task.after_step` (``extra``)."""

    loss: Tensor
    units: float = 0.0
    extra: Any = None


@dataclass
class Context:
    """What the engine tells a task when it sets it up: where it runs."""

    device: torch.device
    dist: distributed.DistInfo = field(default_factory=distributed.DistInfo)
    bf16: bool = False


class Task:
    """What a modality provides. Subclasses set :attr:`kind` and :attr:`unit` and
    implement :meth:`setup`, :meth:`next_batch` and :meth:`loss`; the rest is optional.

    ``self.model`` (set in :meth:`setup`) is the module whose ``state_dict`` is the
    checkpoint's ``model``; :meth:`parameters` are what the engine's Adam trains.
    """

    kind: str = "task"
    unit: str = "items"
    #: DDP option: set when some parameters may get no gradient in a step.
    ddp_find_unused: bool = False

    model: nn.Module

    # -- set-up ---------------------------------------------------------------------
    def setup(self, ctx: Context, resume_state: dict[str, Any] | None) -> None:
        """Build model and data on ``ctx.device``. ``resume_state``: the checkpoint being
        resumed (already checked by :meth:`check_resume`), for state the task needs before
        building (e.g. its tokenizer)."""
        raise NotImplementedError

    def parameters(self) -> list[nn.Parameter]:
        return list(self.model.parameters())

    def train_module(self) -> nn.Module:
        """The module whose forward runs in :meth:`loss` (DDP wraps it)."""
        return self.model

    def check_resume(self, state: dict[str, Any], path: Path) -> None:
        """Refuse to resume from a checkpoint of another kind or model config."""
        if state.get("kind") != self.kind:
            raise ConfigError(f"--resume: {path} is a {state.get('kind')} checkpoint, "
                              f"not {self.kind}")

    # -- one step -------------------------------------------------------------------
    def next_batch(self) -> Any:
        """This rank's share of the next global batch (advances the batch source)."""
        raise NotImplementedError

    def loss(self, module: nn.Module, batch: Any, training: bool = True) -> StepOutput:
        """The loss of ``batch``, running ``module`` (the DDP-wrapped :meth:`train_module`
        when training)."""
        raise NotImplementedError

    def after_step(self, out: StepOutput) -> dict[str, float]:
        """Extra updates after the optimiser step (e.g. DIM's prior discriminator); returns
        metrics to log."""
        return {}

    def metrics(self, out: StepOutput) -> dict[str, float]:
        """Scalars of a logged step."""
        return {"train/loss": float(out.loss.detach())}

    def postfix(self, metrics: dict[str, float]) -> dict[str, str]:
        """What the progress bar shows."""
        return {"loss": f"{metrics.get('train/loss', float('nan')):.3f}"}

    def evaluate(self) -> dict[str, float]:
        """Dev metrics (``dev/loss`` picks ``best.pt``); ``{}`` when the task has none."""
        return {}

    # -- state ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The task's resumable state: batch-source position, its RNGs, extra optimisers."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def checkpoint_extra(self) -> dict[str, Any]:
        """Top-level checkpoint entries a loader needs besides config and model (e.g. the
        tokenizer, the input geometry)."""
        return {}

    def on_start(self, out_dir: Path) -> None:
        """Called on rank 0 before the first step (e.g. to write a tokenizer file)."""

    def close(self) -> None:
        """Called when training ends (also on an error): stop what the task started,
        e.g. data-reading worker processes, before the run's lock is released."""


class Engine:
    """Runs a :class:`Task` as configured by ``optim`` and ``run``; ``run()`` trains.

    ``config``: the whole experiment config (a dataclass), stored in every checkpoint.
    """

    def __init__(self, task: Task, config: Any, optim: OptimConfig, run: RunConfig,
                 resume: bool = False) -> None:
        self.task, self.config, self.optim_cfg, self.run_cfg = task, config, optim, run
        if run.threads:
            torch.set_num_threads(run.threads)
        apply_cpu_memory(run.cpu_memory)
        device = resolve_device(run.device)
        self.dist = distributed.init_from_env(device.type)
        if self.dist.enabled and device.type == "cuda":
            device = torch.device("cuda", self.dist.local_rank)
        self.device = device
        self.progress = run.progress and self.dist.is_main
        self.out = Path(run.out_dir)
        self.last = self.out / "last.pt"
        # One run per out_dir: a second one (at the same time) is refused; held until run()
        # ends, released at once when setting up fails.
        self._lock = RunLock(self.out)
        if self.dist.is_main and (self.out.is_dir() or not resume):
            prepare_dir(self.out, "train.out_dir")
            self._lock.acquire()
        try:
            self._set_up(resume)
        except BaseException:
            self._lock.release()
            raise

    def _set_up(self, resume: bool) -> None:
        task, optim, run, device = self.task, self.optim_cfg, self.run_cfg, self.device
        resume_state = self._resume_state() if resume else None
        if not resume:
            self._claim_out_dir()
        if self.dist.is_main:  # before any data is loaded: a bad out_dir fails at once
            prepare_dir(self.out, "train.out_dir")
        torch.manual_seed(run.seed)
        self.bf16 = use_bf16(run.precision, device)
        task.setup(Context(device=device, dist=self.dist, bf16=self.bf16), resume_state)
        task.model.to(device)
        self.module: nn.Module = task.train_module()
        if self.dist.enabled:
            self.module = nn.parallel.DistributedDataParallel(
                self.module, device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=task.ddp_find_unused)
        self.params = task.parameters()
        self.opt = adam(self.params, optim.lr, optim.weight_decay)
        self.step = 0
        self._probe_batch: Any = None
        self.best_dev = float("inf")
        self.cpu_seconds = 0.0  # CPU time spent training, across resumes
        self._cpu_start: float | None = None  # process time when this run's loop began
        if resume_state is not None:
            self._load(resume_state)

    @property
    def model(self) -> nn.Module:
        """The task's model (unwrapped)."""
        return self.task.model

    # -- out_dir and checkpoints ------------------------------------------------------
    def _claim_out_dir(self) -> None:
        if not self.dist.is_main:
            return
        if self.out.exists() and not self.out.is_dir():
            raise CpcSeqError(f"{self.out}: train.out_dir is a file, not a directory")
        old = [n for n in RUN_FILES if (self.out / n).exists()]
        if (self.out / "tb").exists():
            old.append("tb/")
        if old and not self.run_cfg.overwrite:
            raise CpcSeqError(
                f"{self.out}: holds an earlier run ({', '.join(old)}); pass --resume to "
                "continue it, or --overwrite (train.overwrite=true) to start again")
        for name in old:
            path = self.out / name.rstrip("/")
            try:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
            except OSError as e:
                raise CpcSeqError(f"{path}: cannot remove the earlier run's file "
                                  f"({e.strerror or e})") from None

    def _resume_state(self) -> dict[str, Any]:
        if not self.last.exists():
            raise CpcSeqError(f"--resume: no checkpoint {self.last} to resume from")
        st = load_checkpoint(self.last, map_location=self.device)
        self.task.check_resume(st, self.last)
        done = int(st.get("step", 0))
        if done >= self.run_cfg.steps:
            raise CpcSeqError(f"--resume: {self.last} is at step {done}, and train.steps="
                              f"{self.run_cfg.steps} asks for no more; raise train.steps to "
                              "train longer")
        return st

    def _load(self, st: dict[str, Any]) -> None:
        try:
            self.task.model.load_state_dict(st["model"])
            self.opt.load_state_dict(st["optimizer"])
            self.step, self.best_dev = int(st["step"]), float(st["best_dev"])
            self.cpu_seconds = float(st.get("cpu_seconds", 0.0))
            self.task.load_state_dict(st["task"])
            torch.set_rng_state(st["rng_cpu"].cpu())
            if st.get("rng_cuda") is not None and self.device.type == "cuda":
                torch.cuda.set_rng_state(st["rng_cuda"].cpu())
        except (KeyError, RuntimeError, ValueError, TypeError) as e:
            raise CpcSeqError(f"--resume: {self.last} does not fit this run ({e})") from None
        tqdm.write(f"resumed from {self.last} at step {self.step}", file=sys.stderr)

    def state(self) -> dict[str, Any]:
        return {
            "kind": self.task.kind,
            "config": to_dict(self.config),
            **self.task.checkpoint_extra(),
            "model": self.task.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "step": self.step,
            "best_dev": self.best_dev,
            "cpu_seconds": self._cpu_now(),
            "task": self.task.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda"
            else None,
        }

    def save(self, name: str) -> None:
        """Write ``name`` atomically (rank 0). A model with NaN/Inf weights, or whose
        outputs are not finite on a probe batch (the last training batch, in eval mode:
        finite weights near 1e30 overflow), is never saved, so ``last.pt`` is always a
        model that extraction can use."""
        if not self.dist.is_main:
            return
        if not all(bool(torch.isfinite(p).all()) for p in self.task.model.parameters()):
            raise CpcSeqError(f"step {self.step}: the model's weights are not finite; "
                              f"{self.out / name} was not written. Lower optim.lr")
        what = self._probe_not_finite()
        if what is not None:
            keep = (f"; the last good checkpoint is {self.last}" if self.last.is_file()
                    else "")
            raise CpcSeqError(f"step {self.step}: the model's {what} not finite on a probe "
                              f"batch (its largest |weight| is {self._max_weight():.3g}); "
                              f"{self.out / name} was not written{keep}. Lower optim.lr")
        save_checkpoint(self.state(), self.out / name)

    def _max_weight(self) -> float:
        return max((float(p.detach().abs().max()) for p in self.task.model.parameters()
                    if p.numel()), default=0.0)

    def _probe_not_finite(self) -> str | None:
        """Run the task's loss on the last training batch without a gradient, in eval
        mode, leaving every random generator as it was (the run is unchanged); returns
        what is not finite ("outputs are", "loss is") or None."""
        batch = self._probe_batch
        if batch is None:
            return None
        module = self.task.train_module()
        gens = [g for g in vars(self.task).values() if isinstance(g, torch.Generator)]
        saved = [g.get_state() for g in gens]
        rng_cpu = torch.get_rng_state()
        rng_cuda = (torch.cuda.get_rng_state(self.device) if self.device.type == "cuda"
                    else None)
        outputs_ok = [True]

        def check(_m: nn.Module, _inp: Any, out: Any) -> None:
            outputs_ok[0] = outputs_ok[0] and _all_finite(out)

        hook = module.register_forward_hook(check)
        was_training = self.task.model.training
        self.task.model.eval()
        try:
            with torch.no_grad(), autocast(self.device, self.bf16):
                loss = self.task.loss(module, batch, training=False).loss
            loss_ok = bool(torch.isfinite(loss).all())
        finally:
            hook.remove()
            self.task.model.train(was_training)
            for g, st in zip(gens, saved):
                g.set_state(st)
            torch.set_rng_state(rng_cpu)
            if rng_cuda is not None:
                torch.cuda.set_rng_state(rng_cuda, self.device)
        if not outputs_ok[0]:
            return "outputs are"
        return None if loss_ok else "loss is"

    # -- the loop ---------------------------------------------------------------------
    def run(self) -> dict[str, float]:
        """Train until ``train.steps`` (or ``train.max_minutes``); returns the last metrics."""
        try:
            return self._run()
        finally:
            self.task.close()
            self._lock.release()
            distributed.shutdown()

    def _run(self) -> dict[str, float]:
        run, task = self.run_cfg, self.task
        if self.dist.is_main:
            prepare_dir(self.out, "train.out_dir")
            with atomic_write(self.out / "config.yaml", "w") as f:
                yaml.safe_dump(to_dict(self.config), f, sort_keys=False)
            task.on_start(self.out)
        log = ScalarLog(self.out, self.dist.is_main, resume_step=self.step or None)
        guard = NonFiniteGuard(run.max_bad_steps, self.last)
        task.model.train()
        self._cpu_start = time.process_time()
        t_start = t_window = time.perf_counter()
        units_window = 0.0
        metrics: dict[str, float] = {}
        bar = tqdm(total=run.steps, initial=self.step, disable=not self.progress,
                   desc=f"train {task.kind}", unit="step", dynamic_ncols=True)
        try:
            while self.step < run.steps:
                progress = (self._cpu_now() / (60 * run.max_cpu_minutes)
                            if run.schedule_clock == "cpu" else None)
                lr = lr_at(self.step, self.optim_cfg.lr, self.optim_cfg.warmup_steps,
                           self.optim_cfg.schedule, run.steps, progress)
                set_lr(self.opt, lr)
                batch = task.next_batch()
                with autocast(self.device, self.bf16):
                    out = task.loss(self.module, batch, training=True)
                self.opt.zero_grad(set_to_none=True)
                out.loss.backward()
                gnorm = clip_grad_norm(self.params, self.optim_cfg.grad_clip)
                agreed = None
                if self.dist.enabled:
                    local = not bool(torch.isfinite(out.loss) and torch.isfinite(gnorm))
                    agreed = distributed.any_rank(local, self.device)
                if guard.bad(self.step, out.loss.detach(), gnorm, any_rank=agreed):
                    self.opt.zero_grad(set_to_none=True)
                    continue
                self.opt.step()
                extra = task.after_step(out)
                self.step += 1
                self._probe_batch = batch  # checkpoints are checked on it (see save)
                units_window += out.units * self.dist.world
                bar.update(1)
                over = ""
                if run.max_minutes and (time.perf_counter() - t_start) > 60 * run.max_minutes:
                    over = f"train.max_minutes={run.max_minutes}"
                if run.max_cpu_minutes and self._cpu_now() > 60 * run.max_cpu_minutes:
                    over = f"train.max_cpu_minutes={run.max_cpu_minutes}"
                last = self.step == run.steps or bool(over)  # the run's final step
                if self.step % run.log_every == 0 or last:
                    now = time.perf_counter()
                    speed = units_window / max(now - t_window, 1e-9)
                    t_window, units_window = now, 0.0
                    metrics = {**task.metrics(out), **extra, "lr": lr,
                               f"speed/{task.unit}_per_sec": speed,
                               "cpu_seconds": self._cpu_now()}
                    log.add(self.step, metrics)
                    bar.set_postfix({**task.postfix(metrics), f"{task.unit}/s": f"{speed:.1f}"})
                if self.step % run.eval_every == 0 or last:
                    dev = self._evaluate()
                    if dev:
                        log.add(self.step, dev, jsonl=False)
                        metrics.update(dev)
                        if dev.get("dev/loss", float("inf")) < self.best_dev:
                            self.best_dev = dev["dev/loss"]
                            self.save("best.pt")
                if self.step % run.save_every == 0 or last:
                    self.save("last.pt")
                if over:
                    tqdm.write(f"{over} reached at step {self.step}", file=sys.stderr)
                    break
        finally:
            bar.close()
            log.close()
        return metrics

    def _cpu_now(self) -> float:
        """CPU seconds of training so far (this process, plus earlier runs when resumed)."""
        if self._cpu_start is None:
            return self.cpu_seconds
        return self.cpu_seconds + time.process_time() - self._cpu_start

    def _evaluate(self) -> dict[str, float]:
        if not self.dist.is_main:
            return {}
        self.task.model.eval()
        try:
            with torch.no_grad(), autocast(self.device, self.bf16):
                return self.task.evaluate()
        finally:
            self.task.model.train()
