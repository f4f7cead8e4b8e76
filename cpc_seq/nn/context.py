"""Autoregressive context networks (the ``g_ar`` of CPC): GRU, LSTM, causal Transformer.

All map z (B, T, D_in) to c (B, T, D_c) causally: c[:, t] depends on z[:, :t+1] only,
so padding after a sequence's end never changes its valid frames. The Transformer uses
sinusoidal positions computed for any length (no window length baked in).
"""

from __future__ import annotations

import math
import typing
from typing import Literal

import torch
from torch import Tensor, nn

from cpc_seq.kernels import gru as gru_kernel
from cpc_seq.kernels import use_kernels

ContextKind = Literal["gru", "lstm", "transformer"]
CONTEXTS = typing.get_args(ContextKind)


class RNNContext(nn.Module):
    """GRU or LSTM context. ``forward(z (B, T, D_in)) -> c (B, T, D_c)``.

    On the CPU, ``kernels="auto"`` runs the GRU by :mod:`cpc_seq.kernels.gru` (same
    parameters and result as ``nn.GRU``, with a faster backward).
    """

    def __init__(self, kind: str, dim_in: int, dim_c: int, num_layers: int = 1,
                 kernels: str = "auto") -> None:
        super().__init__()
        cls = {"gru": nn.GRU, "lstm": nn.LSTM}[kind]
        self.kind, self.kernels = kind, kernels
        self.rnn = cls(dim_in, dim_c, num_layers=num_layers, batch_first=True)

    def forward(self, z: Tensor) -> Tensor:
        if self.kind == "gru" and use_kernels(self.kernels, z):
            return gru_kernel.forward(self.rnn, z)
        c, _ = self.rnn(z)
        return c


def sinusoidal_positions(length: int, dim: int, device: torch.device | None = None) -> Tensor:
    """(length, dim) sinusoidal position table (Vaswani et al.)."""
    pos = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(1)
    freq = torch.exp(
        torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim)
    )
    table = torch.zeros(length, dim, device=device)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return table


class TransformerContext(nn.Module):
    """Causal Transformer context. ``forward(z (B, T, D_in)) -> c (B, T, D_c)``."""

    def __init__(
        self, dim_in: int, dim_c: int, num_layers: int = 2, heads: int = 4, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_c)
        layer = nn.TransformerEncoderLayer(
            dim_c, heads, dim_feedforward=4 * dim_c, dropout=dropout, batch_first=True,
            norm_first=True,
        )
        self.layers = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim_c)

    def forward(self, z: Tensor) -> Tensor:
        t = z.shape[1]
        x = self.proj(z) + sinusoidal_positions(t, self.proj.out_features, z.device).to(z.dtype)
        mask = nn.Transformer.generate_square_subsequent_mask(t, device=z.device, dtype=x.dtype)
        return self.norm(self.layers(x, mask=mask, is_causal=True))


def build_context(
    kind: str, dim_in: int, dim_c: int, num_layers: int = 1, heads: int = 4,
    dropout: float = 0.0, kernels: str = "auto",
) -> nn.Module:
    """Context network by name: ``gru`` | ``lstm`` | ``transformer``; ``kernels``:
    ``auto`` | ``reference`` (see :mod:`cpc_seq.kernels`)."""
    if kind in ("gru", "lstm"):
        return RNNContext(kind, dim_in, dim_c, num_layers, kernels)
    if kind == "transformer":
        return TransformerContext(dim_in, dim_c, num_layers, heads, dropout)
    raise ValueError(f"unknown context {kind!r}; one of {', '.join(CONTEXTS)}")
