"""Small layers the modalities share: channel-wise layer norms, k-step prediction heads."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ChannelNorm(nn.Module):
    """Layer norm over channels at every time step. Input/output (B, C, T)."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


class UnbiasedChannelNorm(nn.Module):
    """CPC_audio's channel norm: at every time step, over the C channels,
    ``(x - mean) / sqrt(var + eps) * weight + bias`` with the *unbiased* variance
    (divisor C - 1), which ``nn.LayerNorm`` (divisor C) is not.

    ``forward``: (B, C, T) -> (B, C, T); :meth:`btc`: (B, T, C) -> (B, T, C).
    Parameters ``weight`` and ``bias``, (C,) each.
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        if channels < 2:
            raise ValueError("an unbiased channel norm needs at least 2 channels")
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def btc(self, x: Tensor) -> Tensor:
        """Normalise the last dimension of (B, T, C). Since var_unbiased = var * C / (C - 1),
        this is ``layer_norm`` with eps * (C - 1) / C and the weight times
        sqrt((C - 1) / C): the same function, in one fused kernel."""
        c = x.shape[-1]
        shrink = (c - 1) / c
        return F.layer_norm(x, (c,), self.weight * math.sqrt(shrink), self.bias,
                            self.eps * shrink)

    def forward(self, x: Tensor) -> Tensor:
        return self.btc(x.transpose(1, 2)).transpose(1, 2)


class PredictionHeads(nn.Module):
    """K linear maps c_t -> prediction of z_{t+k}, run as one matmul.

    ``forward(c (B, T, D_c)) -> (B, T, K, D_z)``.
    """

    def __init__(self, dim_c: int, dim_z: int, n_steps: int) -> None:
        super().__init__()
        self.n_steps, self.dim_z = n_steps, dim_z
        self.proj = nn.Linear(dim_c, n_steps * dim_z, bias=False)

    def forward(self, c: Tensor) -> Tensor:
        b, t, _ = c.shape
        return self.proj(c).view(b, t, self.n_steps, self.dim_z)


def receptive_field(specs: Sequence[tuple[int, ...]]) -> int:
    """Inputs one output frame of a stack of (kernel, stride, ...) convolutions depends on."""
    rf, jump = 1, 1
    for kernel, stride, *_ in specs:
        rf += (kernel - 1) * jump
        jump *= stride
    return rf
