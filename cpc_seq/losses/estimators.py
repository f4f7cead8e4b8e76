"""Mutual-information estimators on a score matrix with a positive mask.

These are shared by CPC (sequence), DIM and AMDIM (images). Each takes

- ``scores``: (R, C) real scores, row ``r`` is a query (a context, a global feature),
  column ``c`` a candidate (a future frame, a local feature);
- ``pos_mask``: (R, C) bool, True where (r, c) is a positive pair;
- ``valid_mask``: optional (R, C) bool, False for candidates that must be ignored
  (padding); positives must be valid.

Every row needs at least one positive and one negative (valid, not positive).
Each returns an :class:`EstimatorOutput` with the loss to *minimise* and the MI
estimate in nats (for JSD the estimate is the Jensen-Shannon MI surrogate, not nats).

Conventions (signs are where reimplementations go wrong):

- InfoNCE: for each positive (r, p): ``-log( e^{s_rp} / (e^{s_rp} + sum_neg e^{s_rn}) )``,
  averaged over positives. MI lower bound ``log(n_neg + 1) - loss`` (per row, averaged).
- JSD (softplus form, Nowozin et al./DIM): ``I_JSD = E_pos[-sp(-s)] - E_neg[sp(s)]``,
  loss ``= -I_JSD = E_pos[sp(-s)] + E_neg[sp(s)]`` (always >= 0, = 2 log 2 at s = 0).
- Donsker-Varadhan: ``I_DV = E_pos[s] - log E_neg[e^s]``, loss ``= -I_DV``
  (can be negative: that is a large MI estimate, not a bug).

All reductions use log-sum-exp / softplus, so no ``log(0)`` and no overflow.
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Estimator = Literal["infonce", "jsd", "dv"]
ESTIMATORS = typing.get_args(Estimator)
#: every name :func:`estimate` accepts: the above plus the stateless bounds of
#: :mod:`cpc_seq.losses.bounds` (MINE keeps a moving average, so it is called directly).


@dataclass
class EstimatorOutput:
    """``loss``: scalar to minimise; ``mi``: scalar MI estimate (detached)."""

    loss: Tensor
    mi: Tensor


def _masks(scores: Tensor, pos_mask: Tensor, valid_mask: Tensor | None) -> tuple[Tensor, Tensor]:
    if scores.shape != pos_mask.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and pos_mask {tuple(pos_mask.shape)} differ")
    pos = pos_mask.bool()
    neg = ~pos if valid_mask is None else (~pos & valid_mask.bool())
    return pos, neg


def infonce(scores: Tensor, pos_mask: Tensor, valid_mask: Tensor | None = None) -> EstimatorOutput:
    """InfoNCE with any number of positives per row; negatives are shared per row.

    Memory: O(R*C), no per-positive copy of the negatives: ``lse_neg`` is computed once
    per row and each positive's loss is ``softplus(lse_neg - s_pos)``.
    """
    s = scores.float()
    pos, neg = _masks(s, pos_mask, valid_mask)
    neg_inf = torch.finfo(s.dtype).min
    lse_neg = torch.logsumexp(s.masked_fill(~neg, neg_inf), dim=1, keepdim=True)  # (R, 1)
    per_pair = F.softplus(lse_neg - s)  # = -log(e^s / (e^s + sum e^neg))
    n_pos = pos.sum(dim=1).clamp_min(1)
    per_row = (per_pair * pos).sum(dim=1) / n_pos
    loss = per_row.mean()
    n_neg = neg.sum(dim=1).float()
    mi = (torch.log1p(n_neg) - per_row).mean()
    return EstimatorOutput(loss=loss, mi=mi.detach())


def jsd(scores: Tensor, pos_mask: Tensor, valid_mask: Tensor | None = None) -> EstimatorOutput:
    """Jensen-Shannon MI estimator (softplus form), averaged over all pairs."""
    s = scores.float()
    pos, neg = _masks(s, pos_mask, valid_mask)
    e_pos = (-F.softplus(-s) * pos).sum() / pos.sum().clamp_min(1)
    e_neg = (F.softplus(s) * neg).sum() / neg.sum().clamp_min(1)
    mi = e_pos - e_neg
    return EstimatorOutput(loss=-mi, mi=mi.detach())


def donsker_varadhan(
    scores: Tensor, pos_mask: Tensor, valid_mask: Tensor | None = None
) -> EstimatorOutput:
    """Donsker-Varadhan bound ``E_pos[s] - log E_neg[exp s]`` over all pairs."""
    s = scores.float()
    pos, neg = _masks(s, pos_mask, valid_mask)
    e_pos = (s * pos).sum() / pos.sum().clamp_min(1)
    neg_inf = torch.finfo(s.dtype).min
    log_mean_exp_neg = torch.logsumexp(s.masked_fill(~neg, neg_inf).flatten(), dim=0) - torch.log(
        neg.sum().clamp_min(1).float()
    )
    mi = e_pos - log_mean_exp_neg
    return EstimatorOutput(loss=-mi, mi=mi.detach())


def log_num_candidates(n: int) -> float:
    """``log(n)``: the ceiling of the InfoNCE bound with ``n`` candidates (1 positive)."""
    return math.log(n)
