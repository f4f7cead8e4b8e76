"""Strided 1-D convolutional waveform encoder (the ``g_enc`` of CPC).

Each layer is ``Conv1d(kernel, stride, padding=ceil((kernel-stride)/2)) -> norm -> ReLU``.
With the paper's kernels (10, 8, 4, 4, 4) and strides (5, 4, 2, 2, 2) the total stride
is 160: one frame per 10 ms at 16 kHz. An input of N samples gives exactly
``N // 160`` frames (the encoder trims the at most one extra frame a partial hop can
give), and frame t is centred on samples [160 t, 160 (t+1)): its receptive field is
that span extended by the kernels' reach on both sides (see :func:`cpc_seq.nn.layers.receptive_field`).

Padded batches give the same frames as one utterance at a time: after each layer the
frames beyond that layer's valid length are zeroed, which is exactly what the next
layer's zero padding would supply for the unpadded utterance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cpc_seq.nn import winograd
from cpc_seq.nn.layers import ChannelNorm, UnbiasedChannelNorm

#: (kernel, stride) of the CPC paper's encoder: 160x downsampling.
PAPER_KERNELS_STRIDES: tuple[tuple[int, int], ...] = ((10, 5), (8, 4), (4, 2), (4, 2), (4, 2))

#: ``channel``: layer norm over channels; ``channel_unbiased``: the same with the unbiased
#: variance (CPC_audio's ChannelNorm, for imported checkpoints).
NORMS = ("none", "batch", "channel", "channel_unbiased")


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "none":
        return nn.Identity()
    if kind == "batch":
        return nn.BatchNorm1d(channels)
    if kind == "channel":
        return ChannelNorm(channels)
    if kind == "channel_unbiased":
        return UnbiasedChannelNorm(channels)
    raise ValueError(f"unknown norm {kind!r}; one of {', '.join(NORMS)}")


class ConvEncoder(nn.Module):
    """Strided conv stack from a list of (kernel, stride, channels).

    ``forward(wave (B, N), lengths (B,) samples) -> (z (B, T, C), frame_lengths (B,))``
    with ``T = N // prod(strides)``; ``forward(..., return_layers=True)`` also returns
    every layer's output (B, T_l, C_l).
    """

    def __init__(
        self,
        layers: Sequence[tuple[int, int, int]],
        norm: str = "channel",
        in_channels: int = 1,
    ) -> None:
        super().__init__()
        if not layers:
            raise ValueError("encoder needs at least one layer")
        self.specs = [tuple(int(v) for v in spec) for spec in layers]
        convs, norms = [], []
        c_in = in_channels
        for kernel, stride, channels in self.specs:
            pad = math.ceil((kernel - stride) / 2)
            convs.append(nn.Conv1d(c_in, channels, kernel, stride=stride, padding=pad))
            norms.append(_norm(norm, channels))
            c_in = channels
        self.convs = nn.ModuleList(convs)
        self.norms = nn.ModuleList(norms)
        self.out_channels = c_in
        self.downsample = math.prod(s for _, s, _ in self.specs)

    def frame_lengths(self, lengths: Tensor) -> Tensor:
        """Valid output frames for inputs of ``lengths`` samples: ``lengths // downsample``."""
        return torch.div(lengths, self.downsample, rounding_mode="floor")

    def _layer_lengths(self, lengths: Tensor) -> list[Tensor]:
        out, cur = [], lengths
        for conv in self.convs:
            k, s, p = conv.kernel_size[0], conv.stride[0], conv.padding[0]
            cur = torch.div(cur + 2 * p - k, s, rounding_mode="floor") + 1
            out.append(cur.clamp_min(0))
        return out

    def forward(
        self, wave: Tensor, lengths: Tensor | None = None, return_layers: bool = False
    ) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, list[Tensor]]:
        """Encode a batch of waveforms.

        Args:
            wave: (B, N) float waveforms (normalised), zero-padded after ``lengths``.
            lengths: (B,) valid samples; ``None`` means all N.
            return_layers: also return every layer's output (B, T_l, C_l).

        Returns:
            z: (B, T, C) with T = N // downsample; frame_lengths: (B,).
        """
        bsz, n = wave.shape
        full = lengths is None
        if full:
            lengths = torch.full((bsz,), n, dtype=torch.long, device=wave.device)
        layer_lens = self._layer_lengths(lengths)
        # Activations stay (B, T, C) contiguous from layer to layer: the convolutions run
        # as matmuls on that layout (see _conv_btc), the channel layer norm normalises
        # the last dimension in place, and nothing is transposed or cast in between.
        h = wave.unsqueeze(2)  # (B, N, 1)
        layers = []
        for conv, norm, ln in zip(self.convs, self.norms, layer_lens):
            h = _conv_btc(h, conv, None if full else ln)
            if isinstance(norm, ChannelNorm):
                h = F.layer_norm(h, (h.shape[2],), norm.norm.weight, norm.norm.bias, norm.norm.eps)
            elif isinstance(norm, UnbiasedChannelNorm):
                h = norm.btc(h)
            elif isinstance(norm, nn.BatchNorm1d):
                h = norm(h.transpose(1, 2)).transpose(1, 2)
            # In place: h is a fresh tensor here and neither the norms' nor the convs'
            # backward needs their output. These element-wise passes over the first
            # layers' large outputs cost about as much as the convolutions otherwise.
            h = torch.relu_(h) if h.is_contiguous() else torch.relu(h)  # (B, T_l, C_l)
            if not full and int(ln.min()) < h.shape[1]:  # some utterance ends early
                mask = torch.arange(h.shape[1], device=h.device).unsqueeze(0) < ln.unsqueeze(1)
                mask = mask.unsqueeze(2).to(h.dtype)
                # relu's backward reads its output, so only mask in place without autograd
                h = h.mul_(mask) if not torch.is_grad_enabled() else h * mask
            if return_layers:
                layers.append(h)
        frame_lengths = self.frame_lengths(lengths)
        t_out = n // self.downsample
        z = h[:, :t_out]
        if return_layers:
            return z, frame_lengths, layers
        return z, frame_lengths


def _compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype a matmul on ``x`` runs in: autocast's where it is on, else x's own."""
    dev = x.device.type
    if torch.is_autocast_enabled(dev) and x.is_floating_point():
        return torch.get_autocast_dtype(dev)
    return x.dtype


class _NarrowLinear(torch.autograd.Function):
    """``F.linear(cols, w, bias)`` for a narrow ``cols`` (R, K), K a handful (the waveform
    layer: C_in * kernel = 10); ``w`` (C, K). The weight gradient is computed as
    ``(cols^T @ g)^T``: the BLAS runs autograd's ``g^T @ cols``, (C x R) @ (R x K) with
    K outputs per row, far below its matmul rate in float32 (``bench_train.py
    --profile`` showed it), and this (K x R) @ (R x C) form well within it."""

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


class _BlockConv(torch.autograd.Function):
    """Strided conv with ``kernel = m * stride`` as one matmul over stride-sized blocks.

    ``x``: (B, nb * s, C_in) already padded; ``w``: (s * C_in, m * C_out) (see
    :func:`_block_weight`); returns y (B, nb - m + 1, C_out) with
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


def _block_weight(weight: Tensor, s: int) -> Tensor:
    """Conv1d weight (C_out, C_in, m*s) -> (s*C_in, m*C_out): rows (r, c_in) of a block,
    columns (q, c_out) for tap ``q*s + r``."""
    c_out, c_in, k = weight.shape
    m = k // s
    return weight.permute(2, 1, 0).reshape(m, s * c_in, c_out).permute(1, 0, 2).reshape(
        s * c_in, m * c_out)


def _conv_btc(h: Tensor, conv: nn.Conv1d, out_lengths: Tensor | None = None) -> Tensor:
    """``conv`` on a (B, T, C_in) tensor, giving (B, T_out, C_out) (C contiguous).

    ``out_lengths`` (B,): valid outputs of each sequence (None: all); outputs past them
    are garbage the caller masks.

    Same result as ``conv(h.transpose(1, 2)).transpose(1, 2)`` (zero padding, stride,
    bias): narrow inputs (C_in * kernel <= 64, the waveform layer) as one im2col matmul
    (:class:`_NarrowLinear`), kernel = 2 x stride in float32 on the CPU by Winograd's
    F(5, 2) (:mod:`cpc_seq.nn.winograd`, within float32 rounding), other kernels that are
    a multiple of the stride as :class:`_BlockConv`, anything else through ``conv1d``.
    """
    k, s, p = conv.kernel_size[0], conv.stride[0], conv.padding[0]
    bsz, length, c_in = h.shape
    t_out = (length + 2 * p - k) // s + 1
    dtype = _compute_dtype(h)
    if c_in * k <= 64:
        hp = F.pad(h, (0, 0, p, p))
        cols = hp.unfold(1, k, s)[:, :t_out]  # (B, T_out, C_in, k)
        w = conv.weight.reshape(conv.out_channels, -1)
        with torch.autocast(h.device.type, enabled=False):
            y = _NarrowLinear.apply(cols.reshape(bsz * t_out, c_in * k).to(dtype), w.to(dtype),
                                    None if conv.bias is None else conv.bias.to(dtype))
        return y.view(bsz, t_out, conv.out_channels)
    if k % s == 0:
        m = k // s
        wino = m == 2 and t_out > 0 and _winograd_applies(h, conv)
        train = torch.is_grad_enabled() and (h.requires_grad or conv.weight.requires_grad)
        # Winograd inference: whole tiles (zero blocks after the last), no separate tail
        extra = (-t_out) % winograd.DEFAULT_TILE if wino and not train else 0
        # pad (or crop) on the right to exactly the blocks the outputs need
        hp = F.pad(h, (0, 0, p, (t_out + m - 1 + extra) * s - length - p))
        if wino:
            blocks = hp.view(bsz, t_out + 1 + extra, s * c_in)
            if train:  # Winograd in all three matmuls
                w = _block_weight(conv.weight, s)
                return winograd.TwoTapConv.apply(blocks, w[:, : conv.out_channels],
                                                 w[:, conv.out_channels :], conv.bias,
                                                 winograd.DEFAULT_TILE)
            if out_lengths is not None:
                # A tile reads every block it spans, and rounding differs unless the
                # blocks past a sequence's needs are zero, as they are when it runs
                # alone: zero them (hp is F.pad's fresh copy), so the features do not
                # depend on the batch.
                for b, need in enumerate((out_lengths + 1).tolist()):
                    if need < blocks.shape[1]:
                        blocks[b, need:] = 0
            return winograd.two_tap_conv(blocks, _winograd_weights(conv, s), conv.bias,
                                         outputs=t_out)
        w = _block_weight(conv.weight, s).to(dtype)
        bias = conv.bias
        with torch.autocast(h.device.type, enabled=False):
            return _BlockConv.apply(hp.to(dtype), w, bias, s, m)
    y = F.conv1d(h.transpose(1, 2), conv.weight, conv.bias, stride=s, padding=p)
    return y.transpose(1, 2).contiguous()


def _winograd_applies(h: Tensor, conv: nn.Conv1d) -> bool:
    """float32 on the CPU, where these convolutions' matmuls are most of the time of both
    training and extraction (bf16 keeps the direct form: the transforms would round in
    bf16; float64 keeps it as the exact reference; GPUs are not measured)."""
    return (h.device.type == "cpu" and h.dtype == torch.float32
            and conv.weight.dtype == torch.float32 and _compute_dtype(h) == torch.float32)


def _winograd_weights(conv: nn.Conv1d, s: int) -> Tensor:
    """The conv's taps transformed for :func:`cpc_seq.nn.winograd.two_tap_conv`, cached on
    the module until its weight changes (any in-place update bumps ``_version``)."""
    key = (conv.weight.data_ptr(), conv.weight._version)
    cached = getattr(conv, "_winograd_cache", None)
    if cached is None or cached[0] != key:
        w = _block_weight(conv.weight.detach(), s)  # (s*C_in, 2*C_out)
        c_out = conv.out_channels
        cached = (key, winograd.transform_weights(w[:, :c_out], w[:, c_out:]))
        conv._winograd_cache = cached
    return cached[1]


def paper_layers(channels: int = 512) -> list[tuple[int, int, int]]:
    """The CPC paper's layer list with ``channels`` in every layer."""
    return [(k, s, channels) for k, s in PAPER_KERNELS_STRIDES]
