"""Audio training windows: every utterance's samples in one int16 tensor, gathered per batch.

:class:`WaveStore` keeps every utterance's samples in one contiguous int16 tensor
(LibriSpeech train-clean-100 fits in ~12 GB this way); a batch of windows is one gather.
The window plan itself is :class:`cpc_seq.engine.windows.WindowSampler`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor


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

    def gather(self, utt_idx: Tensor, offset: Tensor, n: int) -> Tensor:
        """Windows of ``n`` samples as float32 in [-1, 1]: (B, n)."""
        idx = (self.starts[utt_idx] + offset).unsqueeze(1) + torch.arange(n)
        return self.data[idx].float() / 32767.0


def normalize_windows(x: Tensor, eps: float = 1e-5) -> Tensor:
    """Per-window zero mean, unit variance. (B, N) -> (B, N)."""
    mean = x.mean(dim=1, keepdim=True)
    std = x.std(dim=1, keepdim=True)
    return (x - mean) / (std + eps)
