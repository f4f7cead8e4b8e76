"""CPC_audio's Transformer prediction network, for checkpoints imported from it.

CPC_audio (Riviere et al. 2020, "modified CPC") predicts z[t + k] from c with one causal
Transformer layer per step (or one layer shared by the steps, its ``--multihead_rnn``).
Its layer differs from :mod:`cpc_seq.nn.predictors`' ``transformer`` in four ways, all
reproduced here so an imported checkpoint keeps its trained prediction heads:

- post-norm: ``h = LN(x + attn(x))``, ``out = LN(h + ff(h))`` (ff: Linear, ReLU, Linear);
- no biases in the query/key/value/output projections;
- relative positions: each head adds ``q_i . r[W - 1 - (i - j)]`` to the score of key j
  for query i, from a learned table ``r`` (d_head, W) of ``W`` window positions;
- the prediction is the layer's output itself (dim_c = dim_z), not a further linear map.

The shared variant's feed-forward layer emits K * D values, which are added to ``h``
step by step before the last norm. CPC_audio scores a prediction against a candidate by
the *mean* over channels of their product; these predictors return the prediction
divided by D, so :func:`cpc_seq.losses.kstep_infonce`'s dot product gives the same
logits. Its ``--dropout`` (p = 0.5) acts on the predictions, as here (``out_dropout``).

CPC_audio only runs the layer on windows of exactly ``W`` frames. Here a query attends to
the keys at most ``W - 1`` frames back, so windows of up to W frames give CPC_audio's
result and longer sequences see a sliding window of the last W frames.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class RelPosCausalLayer(nn.Module):
    """One post-norm causal Transformer layer with relative position scores.

    ``forward(x (B, T, D)) -> (B, T, M, D)``: M = ``out_mult`` outputs per frame (1 for a
    per-step layer, K for the shared one).
    """

    def __init__(self, dim: int, heads: int, ff: int, window: int, out_mult: int = 1,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"{heads} heads do not divide the width {dim}")
        self.dim, self.heads, self.window, self.out_mult = dim, heads, window, out_mult
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        self.o = nn.Linear(dim, dim, bias=False)
        d_head = dim // heads
        self.rel = nn.Parameter(torch.empty(d_head, window).uniform_(-1, 1) / math.sqrt(d_head))
        self.norm1 = nn.LayerNorm(dim)
        self.ff1 = nn.Linear(dim, ff)
        self.ff2 = nn.Linear(ff, dim * out_mult)
        self.norm2 = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def _heads(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.heads, self.dim // self.heads).transpose(1, 2)  # (B, H, T, d)

    def attention(self, x: Tensor) -> Tensor:
        """Causal multi-head self-attention with relative positions: (B, T, D) -> (B, T, D)."""
        b, t, _ = x.shape
        q, k, v = self._heads(self.q(x)), self._heads(self.k(x)), self._heads(self.v(x))
        scores = q @ k.transpose(-2, -1)  # (B, H, T, T)
        back = (torch.arange(t, device=x.device).unsqueeze(1)
                - torch.arange(t, device=x.device).unsqueeze(0))  # i - j
        allowed = (back >= 0) & (back < self.window)
        col = (self.window - 1 - back).clamp(0, self.window - 1)  # table column of (i, j)
        rel = (q @ self.rel).gather(-1, col.expand(b, self.heads, t, t))  # (B, H, T, T)
        scores = (scores + rel) / math.sqrt(q.shape[-1])
        scores = scores.masked_fill(~allowed, float("-inf"))
        att = self.drop(torch.softmax(scores, dim=-1))
        y = (att @ v).transpose(1, 2).reshape(b, t, self.dim)
        return self.o(y)

    def forward(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        h = self.norm1(x + self.attention(x))
        f = self.ff2(self.drop(F.relu(self.ff1(h))))
        return self.norm2(f.view(b, t, self.out_mult, self.dim) + h.unsqueeze(2))


class RelPosTransformerPredictor(nn.Module):
    """CPC_audio's prediction network: ``forward(c (B, T, D)) -> (B, T, K, D)``.

    ``shared=False``: K layers (``layers.k``), one per step; ``shared=True``: one layer
    (``layer``) emitting all K. Predictions are divided by D (see the module docstring).
    """

    def __init__(self, dim: int, n_steps: int, heads: int = 8, ff: int = 2048,
                 window: int = 116, shared: bool = False, dropout: float = 0.0,
                 out_dropout: float = 0.0) -> None:
        super().__init__()
        self.n_steps, self.dim_z, self.shared = n_steps, dim, shared
        if shared:
            self.layer = RelPosCausalLayer(dim, heads, ff, window, n_steps, dropout)
        else:
            self.layers = nn.ModuleList(RelPosCausalLayer(dim, heads, ff, window, 1, dropout)
                                        for _ in range(n_steps))
        self.out_dropout = nn.Dropout(out_dropout)

    def forward(self, c: Tensor) -> Tensor:
        if self.shared:
            pred = self.layer(c)
        else:
            pred = torch.cat([layer(c) for layer in self.layers], dim=2)
        return self.out_dropout(pred) / self.dim_z
