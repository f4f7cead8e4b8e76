"""The code heads of ``loss.kind: cotrain`` (McAllester, "Information Theoretic
Co-Training", arXiv 1802.07572) on a CPC model's ``z`` and ``c``.

At frame ``t`` of a sequence with ``L`` valid frames:

- past window ``x_t`` = ``c_t`` (B, T, D_c): the context network's summary of the frames
  ``0..t``; its code ``P(k | x_t) = softmax(W_x BN(c_t) + b_x)`` (B, T, K);
- future window ``y_t`` = the mean of ``z_{t+1} .. z_{t+W}`` (B, T - W, D_z), ``W`` =
  ``loss.cotrain_window`` frames; its code ``P(k' | y_t) = softmax(W_y BN(y_t) + b_y)``;

for the frames ``t`` with ``t + W < L`` (the whole future window inside the sequence):
``N = sum_b max(0, L_b - W)`` pairs ``(x_t, y_t)``. :class:`~cpc_seq.losses.cotrain.CoTraining`
(``K = loss.cotrain_codes`` codes, ``beta = loss.cotrain_beta``) turns the pairs' code
logits ``(N, K)`` into the loss. The two views share nothing but the signal: ``c_t`` has
seen no frame after ``t``, ``y_t`` none before ``t + 1``.

``BN``: batch normalisation without affine parameters over the batch's valid frames
(running statistics at evaluation and extraction). Without it the codes of a fresh model
are one code for nearly every frame (the part of ``c`` shared by all frames dominates the
logits; the batch's plug-in MI was 1e-7 nats at init and stayed there), and nothing
moves them off it.

The head is a submodule ``cotrain`` of :class:`~cpc_seq.audio.model.CPCModel` (so the
optimiser, checkpoints, resume and extraction see it); extraction's layer ``codes`` is
``P(k | x_t)`` (T, K).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from cpc_seq.losses.cotrain import CoTraining, plugin_mi

__all__ = ["CoTrainHead", "CoTrainStats", "future_windows"]


@dataclass
class CoTrainStats:
    """One batch's co-training loss and its detached statistics (nats).

    ``loss``: scalar to minimise. ``mi``: the models' estimate ``H^(z_x) - H^(z_x|z_y)``;
    ``mi_plugin``: the MI of the batch's joint code distribution (:func:`plugin_mi`, in
    ``[0, ln K]``); ``h_x``, ``h_x_given_y``: the cross-entropies; ``pairs``: N.
    """

    loss: Tensor
    mi: Tensor
    mi_plugin: Tensor
    h_x: Tensor
    h_x_given_y: Tensor
    pairs: int


def future_windows(z: Tensor, lengths: Tensor, window: int) -> tuple[Tensor, Tensor]:
    """Mean of ``z_{t+1} .. z_{t+window}`` for every ``t`` and its validity.

    ``z (B, T, D)``, ``lengths (B,)`` valid frames -> ``(y (B, T - window, D), valid
    (B, T - window) bool)``, ``valid[b, t] = t + window < lengths[b]``. ``T <= window``
    gives empty tensors.
    """
    b, t, d = z.shape
    n = max(0, t - window)
    csum = torch.cat([z.new_zeros(b, 1, d), z.float().cumsum(1)], 1)  # (B, T + 1, D)
    y = (csum[:, window + 1 : window + 1 + n] - csum[:, 1 : 1 + n]) / window
    idx = torch.arange(n, device=z.device)
    valid = idx[None, :] + window < lengths.to(z.device)[:, None]
    return y.to(z.dtype), valid


class CoTrainHead(nn.Module):
    """Code heads on ``c`` (past) and pooled ``z`` (future) and the co-training models.

    ``forward(z (B, T, D_z), c (B, T, D_c), lengths (B,))`` -> :class:`CoTrainStats`;
    :meth:`codes` ``(c (B, T, D_c)) -> P(k | x_t) (B, T, K)``.
    """

    def __init__(self, dim_z: int, dim_c: int, codes: int, beta: float, window: int,
                 model_scale: float = 1.0) -> None:
        super().__init__()
        if window < 1:
            raise ValueError(f"window must be at least 1 frame, got {window}")
        self.window = window
        self.norm_past = nn.BatchNorm1d(dim_c, affine=False)
        self.norm_future = nn.BatchNorm1d(dim_z, affine=False)
        self.past = nn.Linear(dim_c, codes)
        self.future = nn.Linear(dim_z, codes)
        self.objective = CoTraining(codes, beta, model_scale)

    @property
    def ceiling(self) -> float:
        """``ln K``: the most MI the codes can carry."""
        return self.objective.ceiling

    def codes(self, c: Tensor) -> Tensor:
        """``(B, T, D_c) -> (B, T, K)``: the past window's code distribution (the
        normalisation's running statistics, whatever the mode)."""
        b, t, d = c.shape
        norm = self.norm_past
        x = (c.float().reshape(-1, d) - norm.running_mean) / torch.sqrt(norm.running_var
                                                                       + norm.eps)
        return torch.softmax(self.past(x).reshape(b, t, -1), -1)

    def forward(self, z: Tensor, c: Tensor, lengths: Tensor) -> CoTrainStats:
        # float32 outside autocast: under bf16 the cross-entropies (about ln K) round in
        # steps of 0.016-0.03 nats, more than the MI signal of early training
        with torch.autocast(z.device.type, enabled=False):
            y, valid = future_windows(z.float(), lengths, self.window)
            n = y.shape[1]
            logits_x = self.past(self.norm_past(c[:, :n].float()[valid]))  # (N, K)
            logits_y = self.future(self.norm_future(y[valid]))  # (N, K)
            return self._objective(logits_x, logits_y)

    def _objective(self, logits_x: Tensor, logits_y: Tensor) -> CoTrainStats:
        if logits_x.shape[0] < 2:
            raise ValueError(f"co-training needs at least 2 frame pairs, got "
                             f"{logits_x.shape[0]} (window {self.window} frames)")
        out = self.objective(logits_x, logits_y)
        with torch.no_grad():
            px = torch.softmax(logits_x.float(), -1)
            py = torch.softmax(logits_y.float(), -1)
            mi_plugin = plugin_mi(px, py)
        return CoTrainStats(loss=out.loss, mi=out.mi, mi_plugin=mi_plugin, h_x=out.h_x,
                            h_x_given_y=out.h_x_given_y, pairs=int(logits_x.shape[0]))
