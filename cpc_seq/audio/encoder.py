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

from cpc_seq.nn.layers import ChannelNorm

#: (kernel, stride) of the CPC paper's encoder: 160x downsampling.
PAPER_KERNELS_STRIDES: tuple[tuple[int, int], ...] = ((10, 5), (8, 4), (4, 2), (4, 2), (4, 2))

NORMS = ("none", "batch", "channel")


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "none":
        return nn.Identity()
    if kind == "batch":
        return nn.BatchNorm1d(channels)
    if kind == "channel":
        return ChannelNorm(channels)
    raise ValueError(f"unknown norm {kind!r}; one of {', '.join(NORMS)}")


class ConvEncoder(nn.Module):
    """Strided conv stack from a list of (kernel, stride, channels).

    ``forward(wave (B, N), lengths (B,) samples) -> (z (B, T, C), frame_lengths (B,))``
    with ``T = N // prod(strides)``; ``layer_outputs`` lists every layer's (B, T_l, C_l).
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
        # Convolutions run as conv2d on (B, C, 1, T) tensors in channels-last memory
        # format: the physical layout is then (B, 1, T, C), which is what the channel
        # layer norm wants, so no transposing copies are needed between layers.
        h = wave.reshape(bsz, 1, 1, n).contiguous(memory_format=torch.channels_last)
        layers = []
        for conv, norm, ln in zip(self.convs, self.norms, layer_lens):
            h = F.conv2d(h, conv.weight.unsqueeze(2), conv.bias, stride=(1, conv.stride[0]),
                         padding=(0, conv.padding[0]))
            if isinstance(norm, ChannelNorm):
                t = F.layer_norm(h.permute(0, 2, 3, 1), (h.shape[1],), norm.norm.weight,
                                 norm.norm.bias, norm.norm.eps)
            elif isinstance(norm, nn.BatchNorm1d):
                t = norm(h.squeeze(2)).unsqueeze(2).permute(0, 2, 3, 1)
            else:
                t = h.permute(0, 2, 3, 1)
            # In place: t is a fresh tensor here and neither the norms' nor the convs'
            # backward needs their output. These element-wise passes over the first
            # layers' large outputs cost about as much as the convolutions otherwise.
            t = torch.relu_(t)  # (B, 1, T_l, C_l)
            if not full and int(ln.min()) < t.shape[2]:  # some utterance ends early
                mask = torch.arange(t.shape[2], device=t.device).unsqueeze(0) < ln.unsqueeze(1)
                mask = mask[:, None, :, None].to(t.dtype)
                # relu's backward reads its output, so only mask in place without autograd
                t = t.mul_(mask) if not torch.is_grad_enabled() else t * mask
            if return_layers:
                layers.append(t.squeeze(1))
            h = t.permute(0, 3, 1, 2)
        frame_lengths = self.frame_lengths(lengths)
        t_out = n // self.downsample
        z = t.squeeze(1)[:, :t_out]
        if return_layers:
            return z, frame_lengths, layers
        return z, frame_lengths


def paper_layers(channels: int = 512) -> list[tuple[int, int, int]]:
    """The CPC paper's layer list with ``channels`` in every layer."""
    return [(k, s, channels) for k, s in PAPER_KERNELS_STRIDES]
