"""What the k-step CPC tasks (audio, text) share: the loss built from the ``loss`` config
section (:func:`cpc_seq.losses.build_loss`) with cross-rank candidates, its metrics, the
dev evaluation over fixed windows, and the negatives' generator.

A subclass sets ``self.model`` (with ``predict``), ``self.cfg`` (``loss``, ``data.window``,
``data.batch_size``, ``train.eval_windows``, optionally ``model.kernels``),
``self.batches`` and optionally ``self.dev_store`` in :meth:`setup`, calls
:meth:`init_loss`, and provides :meth:`dev_batch` (a batch of fixed dev windows) and
:meth:`step_module`.
"""

from __future__ import annotations

import math
import sys
import time
from collections import deque
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from cpc_seq.engine import distributed
from cpc_seq.engine.log import kstep_metrics
from cpc_seq.engine.trainer import Context, StepOutput, Task
from cpc_seq.engine.windows import fixed_windows
from cpc_seq.errors import ConfigError
from cpc_seq.losses import KStepOutput, build_loss


class KStepTask(Task):
    """Base of the k-step InfoNCE tasks; see the module docstring."""

    cfg: Any
    ctx: Context
    batches: Any
    dev_store: Any = None
    #: The at-chance warning: once ``chance_check_fraction`` of the budget has run
    #: (of ``train.steps``, or of ``train.max_cpu_minutes`` when that comes first), if the
    #: InfoNCE accuracy averaged over the last ``chance_window`` steps is below
    #: ``chance_factor`` x chance (1 / candidates, averaged over the same steps), the log
    #: says so, once (a model that has not left chance by then rarely does).
    chance_check_fraction: float = 0.2
    chance_factor: float = 2.0
    chance_window: int = 50
    _steps_seen: int = 0
    _chance_done: bool = False
    _chance_recent: deque[tuple[float, float]] | None = None
    _chance_cpu0: float | None = None

    def check_batch_split(self, ctx: Context) -> None:
        """The global batch must divide by the processes."""
        if ctx.dist.enabled and self.cfg.data.batch_size % ctx.dist.world:
            raise ConfigError(f"data.batch_size={self.cfg.data.batch_size} (the global batch) "
                              f"must divide by the {ctx.dist.world} processes")

    def init_loss(self, ctx: Context) -> None:
        """The loss (:func:`cpc_seq.losses.build_loss`) and the generator of its sampled
        negatives (one stream per rank)."""
        self.loss_fn = build_loss(self.cfg.loss, getattr(self.cfg.model, "kernels", "auto"))
        self.neg_gen = torch.Generator(device=ctx.device).manual_seed(
            self.cfg.train.seed + 17 + 1000 * ctx.dist.rank)

    def step_module(self) -> nn.Module:
        """A module mapping a batch's inputs to ``(z, lengths, predictions)``."""
        raise NotImplementedError

    def train_module(self) -> nn.Module:
        return self.step_module()

    def dev_batch(self, idx: Tensor, off: Tensor) -> Any:
        """The batch of dev windows ``(idx, off)``, in the form :meth:`loss` takes."""
        raise NotImplementedError

    def kstep_loss(self, z: Tensor, lengths: Tensor, pred: Tensor, training: bool
                   ) -> KStepOutput:
        """The configured loss of one batch; under DDP with ``loss.cross_rank`` the
        candidates are every rank's frames (all-gathered with gradients)."""
        extra = {}
        if training and self.ctx.dist.enabled and self.cfg.loss.cross_rank:
            extra = {
                "candidates": distributed.gather_with_grad(z),
                "candidate_lengths": distributed.gather_with_grad(lengths),
                "query_offset": self.ctx.dist.rank * z.shape[0],
            }
        return self.loss_fn(pred, z, lengths, generator=self.neg_gen, **extra)

    def metrics(self, out: StepOutput) -> dict[str, float]:
        return kstep_metrics(out.extra)

    def after_step(self, out: StepOutput) -> dict[str, float]:
        self.watch_chance(out.extra)
        return {}

    def watch_chance(self, out: KStepOutput) -> str | None:
        """Count a training step; at the check (``chance_check_fraction`` of
        ``train.steps`` or of ``train.max_cpu_minutes``, whichever comes first, and at least
        ``chance_window`` steps in) warn on the main process when the accuracy of the
        last ``chance_window`` steps is still at chance. Returns the warning (None when
        there is none)."""
        self._steps_seen += 1
        if self._chance_done:
            return None
        run = self.cfg.train
        total = int(run.steps)
        at = max(math.ceil(self.chance_check_fraction * total), min(self.chance_window, total))
        if self._chance_recent is None:
            self._chance_recent = deque(maxlen=self.chance_window)
            self._chance_cpu0 = time.process_time()
            if self._steps_seen > at:  # resumed past the check step
                self._chance_done = True
                return None
        self._chance_recent.append((float(out.step_acc.float().mean()),
                                    1.0 / max(int(out.num_candidates), 1)))
        cpu_budget = 60.0 * float(getattr(run, "max_cpu_minutes", 0.0) or 0.0)
        cpu = time.process_time() - (self._chance_cpu0 or 0.0)
        by_cpu = bool(cpu_budget) and cpu >= self.chance_check_fraction * cpu_budget
        if len(self._chance_recent) < min(self.chance_window, total) or not (
                self._steps_seen >= at or by_cpu):
            return None
        self._chance_done = True
        acc = sum(a for a, _ in self._chance_recent) / len(self._chance_recent)
        chance = sum(c for _, c in self._chance_recent) / len(self._chance_recent)
        if acc >= self.chance_factor * chance:
            return None
        when = (f"{self._steps_seen} of {total} steps" if not by_cpu or self._steps_seen >= at
                else f"{cpu / 60:.1f} of {cpu_budget / 60:g} CPU-minutes "
                     f"({self._steps_seen} steps)")
        msg = (f"warning: after {when} the InfoNCE accuracy is {100 * acc:.2f} % (mean of "
               f"the last {len(self._chance_recent)} steps), still at chance: 1/candidates = "
               f"1/{round(1 / chance)} = {100 * chance:.2f} % (warned below "
               f"{self.chance_factor:g}x chance). The model is not learning the contrastive "
               f"task, and more steps rarely change that: check the learning rate and the "
               f"score scale (docs/text.md, 'At chance').")
        if self.ctx.dist.is_main:
            tqdm.write(msg, file=sys.stderr)
        return msg

    def evaluate(self) -> dict[str, float]:
        """Mean loss/accuracy on a fixed set of dev windows (negatives' RNG untouched)."""
        if self.dev_store is None:
            return {}
        idx, off = fixed_windows(self.dev_store.lengths, self.cfg.data.window,
                                 self.cfg.train.eval_windows)
        g_state = self.neg_gen.get_state()
        losses, accs = [], []
        bs = self.cfg.data.batch_size
        module = self.step_module()
        for i in range(0, len(idx), bs):
            if len(idx[i : i + bs]) < 2 and self.cfg.loss.negatives != "same_sequence":
                continue
            out = self.loss(module, self.dev_batch(idx[i : i + bs], off[i : i + bs]),
                            training=False).extra
            losses.append(float(out.loss))
            accs.append(float(out.step_acc.mean()))
        self.neg_gen.set_state(g_state)
        if not losses:
            return {}
        return {"dev/loss": sum(losses) / len(losses), "dev/acc": sum(accs) / len(accs)}

    def state_dict(self) -> dict[str, Any]:
        return {"batches": self.batches.state_dict(), "rng_neg": self.neg_gen.get_state(),
                "steps_seen": self._steps_seen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.batches.load_state_dict(state["batches"])
        # the at-chance check counts steps across resumes (older checkpoints: from here)
        self._steps_seen = int(state.get("steps_seen", 0))
        rng = state["rng_neg"]
        self.neg_gen.set_state(rng.cpu() if self.ctx.device.type == "cpu" else rng)
