"""The config sections every training run shares: ``optim`` and ``train``.

A modality's experiment config is a dataclass with its own sections (``model``, ``data``,
``loss``, ...) plus these two; subclass them to change defaults (e.g. the image trainer's
``grad_clip``), never to change meaning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from cpc_seq.config import check, check_literals, check_seed
from cpc_seq.kernels.memory import CpuMemoryMode

Precision = Literal["auto", "fp32", "bf16"]
ScheduleClock = Literal["steps", "cpu"]


@dataclass
class OptimConfig:
    """Adam with linear warm-up, then constant or cosine decay; gradient-norm clipping
    (``grad_clip: 0`` disables clipping)."""

    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 100
    schedule: Literal["constant", "cosine"] = "constant"
    grad_clip: float = 1.0

    def validate(self) -> None:
        check_literals(self, "optim.")
        check(self.lr > 0, "optim.lr", "must be positive")
        check(self.weight_decay >= 0, "optim.weight_decay", "must be >= 0")
        check(self.warmup_steps >= 0, "optim.warmup_steps", "must be >= 0")
        check(self.grad_clip >= 0, "optim.grad_clip", "must be >= 0 (0 disables)")


@dataclass
class RunConfig:
    """Length of the run, outputs, device, precision and bookkeeping.

    ``cpu_memory``: ``keep`` (freed CPU memory is reused by the next step instead of
    being returned to the OS and faulted in again; see :mod:`cpc_seq.kernels.memory`) or
    ``release`` (the C library's default).
    ``max_minutes``: stop after this much wall time; ``max_cpu_minutes``: after this much
    CPU time of this process (user + system, all threads; counted across ``--resume``),
    the fair budget on a shared machine. 0 = no limit.
    ``schedule_clock``: what the cosine schedule runs over: ``steps`` (``train.steps``; the
    run is reproducible step for step) or ``cpu`` (the fraction of ``max_cpu_minutes``
    spent, so a run of a fixed CPU budget decays its learning rate to zero at the end of
    the budget whatever a step costs on this machine; ``train.steps`` is then only an
    upper bound; warm-up still counts steps). Rows of a comparison at equal CPU time use
    ``cpu``.
    ``overwrite``: start again in an ``out_dir`` that holds an earlier run (its
    checkpoints, log and TensorBoard events are removed first); without it such an
    ``out_dir`` is refused unless ``--resume`` is given.
    """

    out_dir: str = "exp/cpc"
    steps: int = 1000
    seed: int = 0
    log_every: int = 10
    save_every: int = 200
    eval_every: int = 200
    eval_windows: int = 64
    max_minutes: float = 0.0
    max_cpu_minutes: float = 0.0
    schedule_clock: ScheduleClock = "steps"
    threads: int = 0
    cpu_memory: CpuMemoryMode = "keep"
    device: str = "auto"
    precision: Precision = "auto"
    max_bad_steps: int = 10
    progress: bool = True
    overwrite: bool = False

    def validate(self) -> None:
        check_literals(self, "train.")
        check(bool(self.out_dir), "train.out_dir", "must not be empty")
        check(self.steps > 0, "train.steps", "must be positive")
        check_seed(self.seed, "train.seed")
        check(self.log_every > 0, "train.log_every", "must be positive")
        check(self.save_every > 0, "train.save_every", "must be positive")
        check(self.eval_every > 0, "train.eval_every", "must be positive")
        check(self.eval_windows > 0, "train.eval_windows", "must be positive")
        check(self.max_minutes >= 0, "train.max_minutes", "must be >= 0 (0 = no limit)")
        check(self.max_cpu_minutes >= 0, "train.max_cpu_minutes", "must be >= 0 (0 = no limit)")
        check(self.schedule_clock != "cpu" or self.max_cpu_minutes > 0, "train.schedule_clock",
              "cpu needs a CPU budget: set train.max_cpu_minutes")
        check(self.threads >= 0, "train.threads", "must be >= 0 (0 = torch default)")
        check(self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
              "train.device", "auto, cpu, cuda or cuda:N")
        check(self.max_bad_steps > 0, "train.max_bad_steps", "must be positive")
