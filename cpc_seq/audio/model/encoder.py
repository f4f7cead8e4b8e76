"""Strided 1-D convolutional waveform encoder (the ``g_enc`` of CPC).

Each layer is ``Conv1d(kernel, stride, padding=ceil((kernel-stride)/2)) -> norm -> ReLU``.
With the paper's kernels (10, 8, 4, 4, 4) and strides (5, 4, 2, 2, 2) the total stride
is 160: one frame per 10 ms at 16 kHz. An input of N samples gives exactly
``N // 160`` frames (the encoder trims the at most one extra frame a partial hop can
give), and frame t is centred on samples [160 t, 160 (t+1)): its receptive field is
that span extended by the kernels' reach on both sides (see
:func:`cpc_seq.nn.layers.receptive_field`).

Padded batches give the same frames as one utterance at a time: after each layer the
frames beyond that layer's valid length are zeroed, which is exactly what the next
layer's zero padding would supply for the unpadded utterance.

On the CPU, ``kernels="auto"`` runs the same computation by the speed kernels of
:mod:`cpc_seq.kernels.encoder`; ``reference`` (and any GPU) runs the code below.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from cpc_seq.kernels import encoder as encoder_kernel
from cpc_seq.kernels import use_kernels
from cpc_seq.nn.layers import ChannelNorm, UnbiasedChannelNorm

#: (kernel, stride) of the CPC paper's encoder: 160x downsampling.
PAPER_KERNELS_STRIDES: tuple[tuple[int, int], ...] = ((10, 5), (8, 4), (4, 2), (4, 2), (4, 2))

#: ``channel``: layer norm over channels; ``channel_unbiased``: the same with the unbiased
#: variance (CPC_audio's ChannelNorm, for imported checkpoints).
Norm = Literal["none", "batch", "channel", "channel_unbiased"]
NORMS = typing.get_args(Norm)


def _norm(kind: str, channels: int) -> nn.Module:
    """A norm over (B, C, T) by name."""
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
        kernels: str = "auto",
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
        self.kernels = kernels

    def frame_lengths(self, lengths: Tensor) -> Tensor:
        """Valid output frames for inputs of ``lengths`` samples: ``lengths // downsample``."""
        return torch.div(lengths, self.downsample, rounding_mode="floor")

    def layer_lengths(self, lengths: Tensor) -> list[Tensor]:
        """Valid outputs (B,) of every layer for inputs of ``lengths`` (B,) samples."""
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
        if use_kernels(self.kernels, wave):
            return encoder_kernel.forward(self, wave, lengths, return_layers)
        bsz, n = wave.shape
        if lengths is None:
            lengths = torch.full((bsz,), n, dtype=torch.long, device=wave.device)
        h = wave.unsqueeze(1)  # (B, 1, N)
        layers = []
        for conv, norm, valid in zip(self.convs, self.norms, self.layer_lengths(lengths)):
            h = torch.relu(norm(conv(h)))  # (B, C_l, T_l)
            inside = torch.arange(h.shape[2], device=h.device) < valid.unsqueeze(1)  # (B, T_l)
            h = h * inside.unsqueeze(1)  # zero past each utterance's end
            layers.append(h.transpose(1, 2))  # (B, T_l, C_l)
        z = layers[-1][:, : n // self.downsample]  # (B, T, C)
        if return_layers:
            return z, self.frame_lengths(lengths), layers
        return z, self.frame_lengths(lengths)


def paper_layers(channels: int = 512) -> list[tuple[int, int, int]]:
    """The CPC paper's layer list with ``channels`` in every layer."""
    return [(k, s, channels) for k, s in PAPER_KERNELS_STRIDES]
