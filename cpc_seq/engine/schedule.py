"""Optimizer, learning-rate schedule and gradient clipping shared by every training run."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch


def adam(params: Iterable[torch.nn.Parameter], lr: float, weight_decay: float = 0.0
         ) -> torch.optim.Adam:
    """The Adam every run trains with: torch's fused kernel (one vectorised pass over all
    parameters instead of a dozen element-wise ops per tensor) where torch has it for
    these parameters' device and dtype, else the plain implementation. Same update."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, ValueError):  # a device or dtype without the fused kernel
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


def lr_at(step: int, lr: float, warmup_steps: int, schedule: str, total: int,
          progress: float | None = None) -> float:
    """Learning rate for 0-based ``step``: linear warm-up, then constant or cosine.

    The cosine runs over the steps after warm-up, or, given ``progress`` (the fraction of
    a budget spent, e.g. CPU time), over that fraction: 0 -> ``lr``, 1 -> 0."""
    if warmup_steps and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if schedule == "cosine":
        if progress is None:
            progress = (step - warmup_steps) / max(1, total - warmup_steps)
        return lr * 0.5 * (1 + math.cos(math.pi * min(1.0, max(0.0, progress))))
    return lr


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def clip_grad_norm(params: Iterable[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
    """Clip to ``max_norm`` (0 = no clipping) and return the total gradient norm, which
    the non-finite check needs either way."""
    return torch.nn.utils.clip_grad_norm_(list(params), max_norm if max_norm > 0 else float("inf"))
