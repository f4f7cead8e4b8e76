"""The waveform encoder's forward on the CPU without ``conv1d`` (``model.kernels: auto``).

Same result as :meth:`cpc_seq.audio.model.encoder.ConvEncoder.forward`'s plain path (conv1d ->
norm -> ReLU -> zero past each utterance's end, in (B, C, T)), computed differently:

- activations stay (B, T, C) contiguous from layer to layer: every convolution is a
  matmul on that layout (:func:`conv_btc`), the channel norm normalises the last
  dimension, and nothing is transposed or cast in between;
- the waveform layer is one im2col matmul (:class:`.block_conv.NarrowLinear`), two-tap
  layers (kernel = 2 x stride) run Winograd's F(5, 2) in float32 (:mod:`.winograd`,
  within float32 rounding), other kernels that are a multiple of the stride run as
  :class:`.block_conv.BlockConv`, anything else through ``conv1d``;
- ReLU and the padding mask run in place where autograd allows.

What it buys, measured on an idle 2-core AMD EPYC with avx512_bf16 (``OMP_NUM_THREADS=2 python benchmarks/bench_kernels.py --threads 2 --reps 5 --inner 2``,
small-preset step shapes, batch 8 x 20480, forward + backward, median of 5 alternating
rounds, range in brackets): 1.75x the plain encoder's speed in fp32 (1.63-1.83), 1.72x in
bf16 autocast (1.60-1.81).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cpc_seq.kernels import winograd
from cpc_seq.kernels.block_conv import BlockConv, NarrowLinear, block_weight, compute_dtype
from cpc_seq.nn.layers import ChannelNorm, UnbiasedChannelNorm


def forward(enc: nn.Module, wave: Tensor, lengths: Tensor | None, return_layers: bool
            ) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, list[Tensor]]:
    """``enc.forward`` (a :class:`~cpc_seq.audio.model.encoder.ConvEncoder`) by these kernels."""
    bsz, n = wave.shape
    full = lengths is None
    if lengths is None:
        lengths = torch.full((bsz,), n, dtype=torch.long, device=wave.device)
    h = wave.unsqueeze(2)  # (B, N, 1)
    layers = []
    for conv, norm, ln in zip(enc.convs, enc.norms, enc.layer_lengths(lengths)):
        h = conv_btc(h, conv, None if full else ln)
        if type(norm) is ChannelNorm:
            h = F.layer_norm(h, (h.shape[2],), norm.norm.weight, norm.norm.bias, norm.norm.eps)
        elif isinstance(norm, UnbiasedChannelNorm):
            h = norm.btc(h)
        elif not isinstance(norm, nn.Identity):
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
    frame_lengths = enc.frame_lengths(lengths)
    z = h[:, : n // enc.downsample]
    if return_layers:
        return z, frame_lengths, layers
    return z, frame_lengths


def conv_btc(h: Tensor, conv: nn.Conv1d, out_lengths: Tensor | None = None) -> Tensor:
    """``conv`` on a (B, T, C_in) tensor, giving (B, T_out, C_out) (C contiguous).

    Same result as ``conv(h.transpose(1, 2)).transpose(1, 2)`` (zero padding, stride,
    bias). ``out_lengths`` (B,): valid outputs of each sequence (None: all); outputs
    past them are garbage the caller masks.
    """
    k, s, p = conv.kernel_size[0], conv.stride[0], conv.padding[0]
    bsz, length, c_in = h.shape
    t_out = (length + 2 * p - k) // s + 1
    dtype = compute_dtype(h)
    if c_in * k <= 64:
        hp = F.pad(h, (0, 0, p, p))
        cols = hp.unfold(1, k, s)[:, :t_out]  # (B, T_out, C_in, k)
        w = conv.weight.reshape(conv.out_channels, -1)
        with torch.autocast(h.device.type, enabled=False):
            y = NarrowLinear.apply(cols.reshape(bsz * t_out, c_in * k).to(dtype), w.to(dtype),
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
                w = block_weight(conv.weight, s)
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
        w = block_weight(conv.weight, s).to(dtype)
        with torch.autocast(h.device.type, enabled=False):
            return BlockConv.apply(hp.to(dtype), w, conv.bias, s, m)
    y = F.conv1d(h.transpose(1, 2), conv.weight, conv.bias, stride=s, padding=p)
    return y.transpose(1, 2).contiguous()


def _winograd_applies(h: Tensor, conv: nn.Conv1d) -> bool:
    """float32 on the CPU, where these convolutions' matmuls are most of the time of both
    training and extraction (bf16 keeps the direct form: the transforms would round in
    bf16; float64 keeps it as the exact reference)."""
    return (h.device.type == "cpu" and h.dtype == torch.float32
            and conv.weight.dtype == torch.float32 and compute_dtype(h) == torch.float32)


def _winograd_weights(conv: nn.Conv1d, s: int) -> Tensor:
    """The conv's taps transformed for :func:`.winograd.two_tap_conv`, cached on the
    module until its weight changes (any in-place update bumps ``_version``)."""
    key = (conv.weight.data_ptr(), conv.weight._version)
    cached = getattr(conv, "_winograd_cache", None)
    if cached is None or cached[0] != key:
        w = block_weight(conv.weight.detach(), s)  # (s*C_in, 2*C_out)
        c_out = conv.out_channels
        cached = (key, winograd.transform_weights(w[:, :c_out], w[:, c_out:]))
        conv._winograd_cache = cached
    return cached[1]
