"""Small layers the modalities share: channel-wise layer norm, k-step prediction heads."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


class ChannelNorm(nn.Module):
    """Layer norm over channels at every time step. Input/output (B, C, T)."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


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
