"""Pieces every training loop here shares (audio CPC, text CPC, DIM/AMDIM).

- :func:`lr_at`: linear warm-up, then constant or cosine decay.
- :class:`NonFiniteGuard`: skip a step whose loss or gradient norm is NaN/Inf, with a
  warning; stop with a clear message after ``max_bad`` such steps in a row.
- :class:`ScalarLog`: TensorBoard scalars plus one JSON line per logged step
  (``log.jsonl``), written only by the process that logs (rank 0).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from cpc_seq.errors import CpcSeqError


def lr_at(step: int, lr: float, warmup_steps: int, schedule: str, total: int) -> float:
    """Learning rate for 0-based ``step``: linear warm-up, then constant or cosine."""
    if warmup_steps and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if schedule == "cosine":
        span = max(1, total - warmup_steps)
        return lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup_steps) / span)))
    return lr


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def clip_grad_norm(params: object, max_norm: float) -> torch.Tensor:
    """Clip to ``max_norm`` (0 = no clipping) and return the total gradient norm, which
    the non-finite check needs either way."""
    return torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf"))


class NonFiniteGuard:
    """Counts non-finite steps in a row; ``bad(...)`` says whether to skip this step."""

    def __init__(self, max_bad: int, checkpoint: Path) -> None:
        self.max_bad, self.checkpoint, self.in_row = max_bad, checkpoint, 0

    def bad(self, step: int, *values: torch.Tensor, any_rank: bool | None = None) -> bool:
        """True (after warning) when any of ``values`` is NaN/Inf; raise after too many.

        ``any_rank``: the verdict already agreed across processes, if distributed.
        """
        is_bad = any_rank if any_rank is not None else not all(
            bool(torch.isfinite(v).all()) for v in values)
        if not is_bad:
            self.in_row = 0
            return False
        self.in_row += 1
        tqdm.write(f"warning: step {step}: non-finite loss or gradient; step skipped "
                   f"({self.in_row} in a row)", file=sys.stderr)
        if self.in_row >= self.max_bad:
            raise CpcSeqError(
                f"{self.in_row} non-finite steps in a row at step {step}; stopping. "
                f"The last good checkpoint is {self.checkpoint}"
            )
        return True


class ScalarLog:
    """TensorBoard + ``log.jsonl`` under ``out_dir`` (no-op when ``enabled`` is False)."""

    def __init__(self, out_dir: Path, enabled: bool = True, purge_step: int | None = None) -> None:
        self.enabled = enabled
        self.jsonl = Path(out_dir) / "log.jsonl"
        self.writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(Path(out_dir) / "tb"), purge_step=purge_step or None)

    def add(self, step: int, metrics: dict[str, float], jsonl: bool = True) -> None:
        if self.writer is None:
            return
        for key, val in metrics.items():
            self.writer.add_scalar(key, val, step)
        if jsonl:
            with open(self.jsonl, "a", encoding="utf-8") as f:
                f.write(json.dumps({"step": step, **metrics}) + "\n")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def kstep_metrics(out: object) -> dict[str, float]:
    """Scalars of a :class:`cpc_seq.losses.KStepOutput`: totals and every step k."""
    metrics = {
        "train/loss": float(out.loss.detach()),  # type: ignore[attr-defined]
        "train/acc": float(out.step_acc.mean()),  # type: ignore[attr-defined]
        "train/mi_bound": float(out.step_mi.mean()),  # type: ignore[attr-defined]
    }
    for k in range(len(out.step_loss)):  # type: ignore[attr-defined]
        metrics[f"step_loss/k{k + 1:02d}"] = float(out.step_loss[k])  # type: ignore[attr-defined]
        metrics[f"step_acc/k{k + 1:02d}"] = float(out.step_acc[k])  # type: ignore[attr-defined]
        metrics[f"step_mi/k{k + 1:02d}"] = float(out.step_mi[k])  # type: ignore[attr-defined]
    return metrics


def fast_bf16(device: torch.device) -> bool:
    """Whether bf16 autocast is the faster choice on ``device``: CUDA with bf16 support,
    or a CPU with native bf16 instructions (avx512_bf16 / amx_bf16)."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def use_bf16(precision: str, device: torch.device) -> bool:
    """``precision`` is fp32 | bf16 | auto (bf16 where :func:`fast_bf16`)."""
    return precision == "bf16" or (precision == "auto" and fast_bf16(device))
