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
