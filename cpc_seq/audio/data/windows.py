"""Audio training windows: every utterance's samples in one int16 tensor, gathered per batch.

:class:`WaveStore` keeps every utterance's samples in one contiguous int16 tensor
(LibriSpeech train-clean-100 fits in ~12 GB this way); a batch of windows is one gather.
The window plans are :mod:`cpc_seq.audio.data.batches` (packing per speaker, padding,
speaker-aware batches); windows that run past a short utterance or speaker are padded
with zeros and carry their real length.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor


class WaveStore:
    """All utterances, 16-bit, concatenated. ``gather(utt_idx (B,), offset (B,), n) -> (B, n)``."""

    def __init__(self, utts: Sequence[str], waves: Sequence[np.ndarray],
                 speakers: Sequence[str] | None = None) -> None:
        self.utts = list(utts)
        #: each utterance's speaker (the utterance itself when unknown)
        self.speakers = list(speakers) if speakers is not None else list(self.utts)
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

    def gather_spans(self, start: Tensor, length: Tensor, n: int) -> Tensor:
        """Windows of ``n`` samples starting at absolute positions ``start`` (B,) of the
        concatenated data, ``length`` (B,) of them real and zeros after: (B, n) float32."""
        pos = torch.arange(n)
        idx = start.unsqueeze(1) + pos
        keep = pos < length.unsqueeze(1)
        idx = torch.where(keep, idx, torch.zeros_like(idx))
        return self.data[idx].float().mul_(keep) / 32767.0


def normalize_windows(x: Tensor, eps: float = 1e-5, lengths: Tensor | None = None) -> Tensor:
    """Per-window zero mean, unit variance. (B, N) -> (B, N).

    ``lengths`` (B,): only the first ``lengths[b]`` samples of window b are real; mean
    and standard deviation are taken over those, and the padding stays zero (so a padded
    window normalises exactly as the unpadded one).
    """
    if lengths is None:
        mean = x.mean(dim=1, keepdim=True)
        std = x.std(dim=1, keepdim=True)
        return (x - mean) / (std + eps)
    keep = (torch.arange(x.shape[1], device=x.device) < lengths.unsqueeze(1)).to(x.dtype)
    n = keep.sum(dim=1, keepdim=True)
    mean = (x * keep).sum(dim=1, keepdim=True) / n.clamp_min(1)
    var = ((x - mean) * keep).pow(2).sum(dim=1, keepdim=True) / (n - 1).clamp_min(1)
    return (x - mean) / (var.sqrt() + eps) * keep
