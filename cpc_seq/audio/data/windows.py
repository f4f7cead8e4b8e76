"""Per-window input normalisation of audio CPC: zero mean, unit variance.

Training windows are read from disk per batch (:mod:`cpc_seq.audio.data.loader`); the
plans of which windows each batch holds are :mod:`cpc_seq.audio.data.batches`. Windows
that run past a short utterance or speaker are padded with zeros and carry their real
length.
"""

from __future__ import annotations

import torch
from torch import Tensor


def normalize_windows(x: Tensor, eps: float = 1e-5, lengths: Tensor | None = None) -> Tensor:
    """Per-window zero mean, unit variance. (B, N) -> (B, N).

    ``lengths`` (B,): only the first ``lengths[b]`` samples of window b are real; mean
    and standard deviation are taken over those, and the padding stays zero (so a padded
    window normalises exactly as the unpadded one).

    Finite input of any size normalises to finite output: a window whose peak is above
    1e15 (valid float WAVs can reach 3.4e38, whose squares overflow float32) is scaled
    down by its peak first.
    """
    peak = x.detach().abs().amax(dim=1, keepdim=True)
    if bool((peak > 1e15).any()):
        x = x / peak.clamp_min(1.0)
    if lengths is None:
        mean = x.mean(dim=1, keepdim=True)
        std = x.std(dim=1, keepdim=True)
        return (x - mean) / (std + eps)
    keep = (torch.arange(x.shape[1], device=x.device) < lengths.unsqueeze(1)).to(x.dtype)
    n = keep.sum(dim=1, keepdim=True)
    mean = (x * keep).sum(dim=1, keepdim=True) / n.clamp_min(1)
    var = ((x - mean) * keep).pow(2).sum(dim=1, keepdim=True) / (n - 1).clamp_min(1)
    return (x - mean) / (var.sqrt() + eps) * keep

