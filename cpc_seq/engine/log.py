"""Rank-0 logging of a run: TensorBoard scalars plus one JSON line per logged step."""

from __future__ import annotations

import json
from pathlib import Path

from cpc_seq.io.atomic import atomic_write


class ScalarLog:
    """TensorBoard (``tb/``) + ``log.jsonl`` under ``out_dir`` (no-op when not ``enabled``).

    ``resume_step``: the step a resumed run continues from; lines of ``log.jsonl`` logged
    after it (by the interrupted run, past its last checkpoint) are dropped, so the log
    holds every step once.
    """

    def __init__(self, out_dir: Path, enabled: bool = True, resume_step: int | None = None
                 ) -> None:
        self.enabled = enabled
        self.jsonl = Path(out_dir) / "log.jsonl"
        self.writer = None
        if not enabled:
            return
        if resume_step is not None and self.jsonl.is_file():
            keep = [ln for ln in self.jsonl.read_text(encoding="utf-8").splitlines(True)
                    if _step_of(ln) is not None and _step_of(ln) <= resume_step]
            with atomic_write(self.jsonl, "w") as f:
                f.writelines(keep)
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(Path(out_dir) / "tb"), purge_step=resume_step or None)

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


def _step_of(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


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
