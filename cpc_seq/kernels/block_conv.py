"""Strided convolutions as single matmuls on (B, T, C) activations.

:class:`NarrowLinear` is the waveform layer (C_in * kernel = 10 columns per output frame)
as one im2col matmul whose weight gradient is computed in the BLAS-friendly orientation;
:class:`BlockConv` is a convolution whose kernel is a multiple of its stride as one
matmul over stride-sized blocks of the input (no im2col copy), forward and backward.
Together with :mod:`.winograd` they let the encoder run without ``conv1d`` and without a
transpose between layers (:mod:`.encoder`); what that buys is measured there. The
waveform layer's weight gradient in :class:`NarrowLinear`'s orientation saved about 14 ms
of the fp32 step when it landed (docs/speed.md).
"""

from __future__ import annotations

import torch
from torch import Tensor


def compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype a matmul on ``x`` runs in: autocast's where it is on, else x's own."""
    dev = x.device.type
    if torch.is_autocast_enabled(dev) and x.is_floating_point():
        return torch.get_autocast_dtype(dev)
    return x.dtype


class NarrowLinear(torch.autograd.Function):
    """``F.linear(cols, w, bias)`` for a narrow ``cols`` (R, K), K a handful (the waveform
    layer: C_in * kernel = 10); ``w`` (C, K). The weight gradient is computed as
    ``(cols^T @ g)^T``: autograd's ``g^T @ cols`` is (C x R) @ (R x K) with K outputs per
    row, far below the BLAS's matmul rate in float32, and this (K x R) @ (R x C) form runs
    well within it."""

    @staticmethod
    def forward(ctx, cols: Tensor, w: Tensor, bias: Tensor | None) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(cols, w)
        ctx.has_bias = bias is not None
        return cols @ w.t() if bias is None else torch.addmm(bias, cols, w.t())

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        cols, w = ctx.saved_tensors
        g = g.to(w.dtype)
        d_cols = g @ w if ctx.needs_input_grad[0] else None
        d_w = (cols.t() @ g).t() if ctx.needs_input_grad[1] else None
        d_b = None
        if ctx.has_bias and ctx.needs_input_grad[2]:
            d_b = g.sum(0, dtype=torch.float32 if g.element_size() < 4 else g.dtype).to(g.dtype)
        return d_cols, d_w, d_b


class BlockConv(torch.autograd.Function):
    """Strided conv with ``kernel = m * stride`` as one matmul over stride-sized blocks.

    ``x``: (B, nb * s, C_in) already padded; ``w``: (s * C_in, m * C_out) (see
    :func:`block_weight`); returns y (B, nb - m + 1, C_out) with
    ``y[t] = bias + sum_q (blocks @ w)[t + q, q-th C_out slice]``. The forward and the
    backward are each one matmul (plus the weight-gradient matmul), with no im2col copy.
    """

    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, bias: Tensor | None, s: int, m: int) -> Tensor:  # type: ignore[override]
        bsz, length, c_in = x.shape
        nb = length // s
        c_out = w.shape[1] // m
        blocks = x.reshape(bsz * nb, s * c_in)
        y_all = (blocks @ w).view(bsz, nb, m * c_out)
        t_out = nb - m + 1
        y = y_all[:, :t_out, :c_out].clone() if bias is None else \
            torch.add(bias.to(y_all.dtype), y_all[:, :t_out, :c_out])
        for q in range(1, m):
            y += y_all[:, q : q + t_out, q * c_out : (q + 1) * c_out]
        ctx.save_for_backward(x, w)
        ctx.s, ctx.m, ctx.has_bias, ctx.bias_dtype = s, m, bias is not None, \
            None if bias is None else bias.dtype
        return y

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        x, w = ctx.saved_tensors
        s, m = ctx.s, ctx.m
        bsz, length, c_in = x.shape
        nb = length // s
        c_out = w.shape[1] // m
        t_out = nb - m + 1
        g = g.to(w.dtype)
        gy = g.new_empty(bsz, nb, m * c_out) if m > 1 else g
        if m > 1:
            for q in range(m):  # y[t] used block t + q's q-th slice; the m - 1 others are 0
                cs = slice(q * c_out, (q + 1) * c_out)
                gy[:, q : q + t_out, cs] = g
                gy[:, :q, cs] = 0
                gy[:, q + t_out :, cs] = 0
        gy2 = gy.reshape(bsz * nb, m * c_out)
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = (gy2 @ w.t()).view(bsz, length, c_in)
        if ctx.needs_input_grad[1]:
            gw = x.reshape(bsz * nb, s * c_in).t() @ gy2
        if ctx.has_bias and ctx.needs_input_grad[2]:
            acc = torch.float32 if g.element_size() < 4 else g.dtype
            gb = g.sum(dim=(0, 1), dtype=acc).to(ctx.bias_dtype)
        return gx, gw, gb, None, None


def block_weight(weight: Tensor, s: int) -> Tensor:
    """Conv1d weight (C_out, C_in, m*s) -> (s*C_in, m*C_out): rows (r, c_in) of a block,
    columns (q, c_out) for tap ``q*s + r``."""
    c_out, c_in, k = weight.shape
    m = k // s
    return weight.permute(2, 1, 0).reshape(m, s * c_in, c_out).permute(1, 0, 2).reshape(
        s * c_in, m * c_out)
