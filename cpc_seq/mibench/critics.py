"""Small MLP critics ``T(x, y)`` that score every pair of a batch at once.

- :class:`SeparableCritic`: ``T(x, y) = g(x) . h(y)``, two MLPs and one matmul, so all
  ``N^2`` pairs cost ``O(N)`` network evaluations (the InfoNCE/CPC style critic).
- :class:`ConcatCritic`: ``T(x, y) = MLP([x, y])`` on every pair, ``N^2`` evaluations
  (more expressive, the MINE style critic).

Both map ``x (N, d_x), y (M, d_y) -> scores (N, M)``; entry ``(i, j) = T(x_i, y_j)``.
"""

from __future__ import annotations

import typing
from typing import Literal

import torch
from torch import Tensor, nn

__all__ = ["CRITICS", "SeparableCritic", "ConcatCritic", "build_critic", "mlp"]

CriticKind = Literal["separable", "concat"]
CRITICS = typing.get_args(CriticKind)


def mlp(d_in: int, hidden: int, d_out: int, layers: int = 2) -> nn.Sequential:
    """``layers`` hidden ReLU layers of width ``hidden``, then a linear map to ``d_out``."""
    mods: list[nn.Module] = []
    d = d_in
    for _ in range(layers):
        mods += [nn.Linear(d, hidden), nn.ReLU()]
        d = hidden
    mods.append(nn.Linear(d, d_out))
    return nn.Sequential(*mods)


class SeparableCritic(nn.Module):
    """``g(x) . h(y)`` with ``g, h``: MLPs into an ``embed``-dim space."""

    def __init__(self, d_x: int, d_y: int, hidden: int = 64, embed: int = 32,
                 layers: int = 2) -> None:
        super().__init__()
        self.g = mlp(d_x, hidden, embed, layers)
        self.h = mlp(d_y, hidden, embed, layers)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return self.g(x) @ self.h(y).t()


class ConcatCritic(nn.Module):
    """``MLP([x_i, y_j])`` for every pair ``(i, j)``."""

    def __init__(self, d_x: int, d_y: int, hidden: int = 64, layers: int = 2) -> None:
        super().__init__()
        self.f = mlp(d_x + d_y, hidden, 1, layers)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        n, m = x.shape[0], y.shape[0]
        pairs = cat_pairs(x, y)  # (N*M, d_x + d_y)
        return self.f(pairs).view(n, m)


def cat_pairs(x: Tensor, y: Tensor) -> Tensor:
    """``(N, a), (M, b) -> (N*M, a + b)``: row ``i*M + j`` is ``[x_i, y_j]``."""
    n, m = x.shape[0], y.shape[0]
    return torch.cat([x[:, None, :].expand(n, m, -1), y[None, :, :].expand(n, m, -1)],
                     dim=-1).reshape(n * m, -1)


def build_critic(kind: str, d_x: int, d_y: int, hidden: int = 64, embed: int = 32,
                 layers: int = 2) -> nn.Module:
    """``separable`` or ``concat`` critic for ``d_x``- and ``d_y``-dim inputs."""
    if kind == "separable":
        return SeparableCritic(d_x, d_y, hidden, embed, layers)
    if kind == "concat":
        return ConcatCritic(d_x, d_y, hidden, layers)
    raise ValueError(f"unknown critic {kind!r}; choose one of {CRITICS}")
