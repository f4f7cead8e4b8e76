"""Resumable plans of fixed-length training windows over a set of sequences (any modality).

:class:`WindowSampler` makes each epoch's plan - which window of which utterance goes in
which batch - as a pure function of ``(seed, epoch)``, so a resumed run that knows
``(epoch, batch index)`` continues with exactly the batches an uninterrupted run sees.
A sequence of L items (samples, tokens, sentences) gives ``L // window`` windows per epoch at random offsets.
"""

from __future__ import annotations

import torch
from torch import Tensor

from cpc_seq.errors import DataError


class WindowSampler:
    """Deterministic per-epoch plans of (utterance index, offset) windows."""

    def __init__(self, lengths: Tensor, window: int, batch_size: int, seed: int) -> None:
        self.lengths = lengths.long()
        self.window, self.batch_size, self.seed = window, batch_size, seed
        self.per_utt = torch.div(self.lengths, window, rounding_mode="floor")
        total = int(self.per_utt.sum())
        if total < batch_size:
            raise DataError(
                f"only {total} windows of {window} samples in the training data; "
                f"need at least batch_size={batch_size}"
            )
        self.batches_per_epoch = total // batch_size

    def epoch_plan(self, epoch: int) -> tuple[Tensor, Tensor]:
        """(utt_idx, offset), each (batches_per_epoch, batch_size) int64, for ``epoch``."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        utt = torch.repeat_interleave(torch.arange(len(self.lengths)), self.per_utt)
        span = (self.lengths[utt] - self.window + 1).float()
        offset = (torch.rand(len(utt), generator=g) * span).long()
        order = torch.randperm(len(utt), generator=g)
        n = self.batches_per_epoch * self.batch_size
        utt, offset = utt[order][:n], offset[order][:n]
        return utt.view(-1, self.batch_size), offset.view(-1, self.batch_size)


def fixed_windows(lengths: Tensor, window: int, max_windows: int, seed: int = 1234) -> tuple[Tensor, Tensor]:
    """A fixed set of up to ``max_windows`` (utt_idx, offset) windows, for evaluation."""
    g = torch.Generator().manual_seed(seed)
    ok = (lengths >= window).nonzero().squeeze(1)
    if len(ok) == 0:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    pick = ok[torch.randint(len(ok), (max_windows,), generator=g)]
    offset = (torch.rand(max_windows, generator=g) * (lengths[pick] - window + 1).float()).long()
    return pick, offset


class PlanBatches:
    """The batch source of a windowed task: walks :class:`WindowSampler`'s epoch plans.

    ``next()`` -> (seq_idx, offset), each (batch_size // world,): this rank's contiguous
    share of the next global batch. ``state_dict()`` is the position (epoch, batch in
    epoch), so a resumed run continues with exactly the batches an uninterrupted run sees.
    """

    def __init__(self, sampler: WindowSampler, rank: int = 0, world: int = 1) -> None:
        self.sampler, self.rank, self.world = sampler, rank, world
        self.epoch, self.batch_in_epoch = 0, 0
        self._plan: tuple[int, tuple[Tensor, Tensor]] | None = None

    def _epoch_plan(self) -> tuple[Tensor, Tensor]:
        if self._plan is None or self._plan[0] != self.epoch:
            self._plan = (self.epoch, self.sampler.epoch_plan(self.epoch))
        return self._plan[1]

    def next(self) -> tuple[Tensor, Tensor]:
        if self.batch_in_epoch >= self.sampler.batches_per_epoch:
            self.epoch += 1
            self.batch_in_epoch = 0
        utt, off = (p[self.batch_in_epoch] for p in self._epoch_plan())
        self.batch_in_epoch += 1
        share = len(utt) // self.world
        lo = self.rank * share
        return utt[lo : lo + share], off[lo : lo + share]

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.batch_in_epoch = int(state["epoch"]), int(state["batch_in_epoch"])


class ShuffledBatches:
    """Batches of item indices from a per-epoch shuffle (a function of seed and epoch);
    the last incomplete batch of an epoch is dropped. ``next()`` -> this rank's share
    (batch_size // world,) of the next global batch."""

    def __init__(self, n_items: int, batch_size: int, seed: int, rank: int = 0,
                 world: int = 1) -> None:
        if batch_size > n_items:
            raise DataError(f"batch_size={batch_size} is larger than the {n_items} "
                            "training items")
        self.n, self.batch_size, self.seed = n_items, batch_size, seed
        self.rank, self.world = rank, world
        self.epoch, self.pos = 0, 0
        self._order: tuple[int, Tensor] | None = None

    @property
    def epoch_fraction(self) -> float:
        return self.epoch + self.pos / self.n

    def next(self) -> Tensor:
        if self.pos + self.batch_size > self.n:
            self.epoch += 1
            self.pos = 0
        if self._order is None or self._order[0] != self.epoch:
            g = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
            self._order = (self.epoch, torch.randperm(self.n, generator=g))
        idx = self._order[1][self.pos : self.pos + self.batch_size]
        self.pos += self.batch_size
        share = len(idx) // self.world
        return idx[self.rank * share : (self.rank + 1) * share]

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])
