"""Fixed-length random training windows from a set of utterances.

:class:`WaveStore` keeps every utterance's samples in one contiguous int16 tensor
(LibriSpeech train-clean-100 fits in ~12 GB this way); a batch of windows is one gather.

:class:`WindowSampler` makes each epoch's plan - which window of which utterance goes in
which batch - as a pure function of ``(seed, epoch)``, so a resumed run that knows
``(epoch, batch index)`` continues with exactly the batches an uninterrupted run sees.
An utterance of L samples gives ``L // window`` windows per epoch at random offsets.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from cpc_seq.errors import DataError


class WaveStore:
    """All utterances, 16-bit, concatenated. ``gather(utt_idx (B,), offset (B,), n) -> (B, n)``."""

    def __init__(self, utts: Sequence[str], waves: Sequence[np.ndarray]) -> None:
        self.utts = list(utts)
        lengths = [len(w) for w in waves]
        self.lengths = torch.tensor(lengths, dtype=torch.long)
        self.starts = torch.zeros(len(lengths), dtype=torch.long)
        if lengths:
            self.starts[1:] = torch.cumsum(self.lengths, 0)[:-1]
        data = np.zeros(int(sum(lengths)), dtype=np.int16)
        pos = 0
        for w in waves:
            data[pos : pos + len(w)] = np.clip(np.round(w * 32767.0), -32768, 32767)
            pos += len(w)
        self.data = torch.from_numpy(data)

    @classmethod
    def from_loader(
        cls, utts: Sequence[str], load: Callable[[str], np.ndarray], progress: bool = True,
        desc: str = "loading audio",
    ) -> WaveStore:
        """Load every utterance with ``load(utt) -> float32 (N,)`` (progress bar)."""
        waves = [load(u) for u in tqdm(utts, desc=desc, disable=not progress, unit="utt")]
        return cls(utts, waves)

    @property
    def total_samples(self) -> int:
        return int(self.lengths.sum())

    def gather(self, utt_idx: Tensor, offset: Tensor, n: int) -> Tensor:
        """Windows of ``n`` samples as float32 in [-1, 1]: (B, n)."""
        idx = (self.starts[utt_idx] + offset).unsqueeze(1) + torch.arange(n)
        return self.data[idx].float() / 32767.0

    def utterance(self, i: int) -> Tensor:
        """Whole utterance ``i`` as float32 (N,)."""
        s, n = int(self.starts[i]), int(self.lengths[i])
        return self.data[s : s + n].float() / 32767.0


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


def normalize_windows(x: Tensor, eps: float = 1e-5) -> Tensor:
    """Per-window zero mean, unit variance. (B, N) -> (B, N)."""
    mean = x.mean(dim=1, keepdim=True)
    std = x.std(dim=1, keepdim=True)
    return (x - mean) / (std + eps)
