"""AMDIM's regularised, soft-clipped NCE, built on the loss core's :func:`infonce`.

Bachman et al. (2019), "Learning Representations by Maximizing Mutual Information Across
Views". A *source* vector of image ``i`` (e.g. its 1x1 global feature, view 1) has as
positives every location of image ``i``'s *target* map (e.g. its 5x5 map, view 2), and as
negatives every location of every other image's target map. All positives of one source
share the same negatives, so the loss is computed from a single ``(R, B*L)`` score matrix:
the log-sum-exp over the negatives is taken once per row, never once per positive (that is
:func:`cpc_seq.losses.estimators.infonce` with several positives per row).

Scores and their regularisation, as in the paper::

    s        = <phi_src, phi_trg> / sqrt(d)               raw score
    penalty  = lambda * mean(s ** 2)                       over every raw score in the matrix
    s_clip   = c * tanh(s / c)                             soft clip (c <= 0 disables it)
    loss     = infonce(s_clip, positives) + penalty

The penalty keeps the raw scores near zero and the clip bounds what the NCE can see, which
is what makes AMDIM stable (without them the scores grow without limit and training
diverges).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from cpc_seq.losses.estimators import infonce

__all__ = ["AmdimNCEOutput", "amdim_scores", "tanh_clip", "owner_mask", "amdim_nce"]

DEFAULT_PENALTY = 4e-2
DEFAULT_CLIP = 10.0


@dataclass
class AmdimNCEOutput:
    """``loss = nce + penalty`` (to minimise); ``nce`` the InfoNCE part; ``penalty`` the
    ``lambda * mean(s^2)`` part; ``mi`` the InfoNCE bound (detached); ``acc`` the fraction of
    positives scored above every negative of their row (detached)."""

    loss: Tensor
    nce: Tensor
    penalty: Tensor
    mi: Tensor
    acc: Tensor


def amdim_scores(src: Tensor, trg: Tensor) -> Tensor:
    """Raw scores ``src @ trg.T / sqrt(d)``: ``(R, d)`` x ``(C, d)`` -> ``(R, C)`` float32."""
    if src.dim() != 2 or trg.dim() != 2 or src.shape[1] != trg.shape[1]:
        raise ValueError(f"expected (R, d) and (C, d), got {tuple(src.shape)}, {tuple(trg.shape)}")
    return (src.float() @ trg.float().t()) / math.sqrt(src.shape[1])


def tanh_clip(scores: Tensor, clip: float) -> Tensor:
    """Soft clip ``c * tanh(s / c)`` (identity when ``clip <= 0``); values in ``(-c, c)``."""
    if clip <= 0:
        return scores
    return clip * torch.tanh(scores / clip)


def owner_mask(src_owner: Tensor, trg_owner: Tensor) -> Tensor:
    """``(R,)`` and ``(C,)`` image ids -> ``(R, C)`` bool, True where the images match."""
    return src_owner.view(-1, 1) == trg_owner.view(1, -1)


def clipped_scores(src: Tensor, trg: Tensor, penalty: float, clip: float, who: str
                   ) -> tuple[Tensor, Tensor, Tensor]:
    """The score matrix both AMDIM NCEs start from: ``src (B, S, d)``, ``trg (B, L, d)`` ->
    (soft-clipped scores ``(B S, B L)``, positive mask (same image), penalty
    ``lambda * mean(raw^2)``, a scalar)."""
    b, s_per, d = src.shape
    n_loc = trg.shape[1]
    if b < 2:
        raise ValueError(f"{who} needs at least 2 images in the batch (negatives)")
    raw = amdim_scores(src.reshape(b * s_per, d), trg.reshape(b * n_loc, d))  # (B*S, B*L)
    dev = raw.device
    pos = owner_mask(torch.arange(b, device=dev).repeat_interleave(s_per),
                     torch.arange(b, device=dev).repeat_interleave(n_loc))
    reg = penalty * raw.pow(2).mean() if penalty > 0 else raw.new_zeros(())
    return tanh_clip(raw, clip), pos, reg


def amdim_nce(
    src: Tensor,
    trg: Tensor,
    *,
    penalty: float = DEFAULT_PENALTY,
    clip: float = DEFAULT_CLIP,
) -> AmdimNCEOutput:
    """Shared-negative NCE between sources and target maps of the same batch of images.

    Args:
        src: ``(B, d)`` one source vector per image, or ``(B, S, d)`` ``S`` source vectors
            per image (each is its own row).
        trg: ``(B, L, d)`` ``L`` target locations per image (a flattened map, e.g. 5x5 ->
            ``L = 25``). Image ``i`` of ``src`` and ``trg`` is the same image (two views).
        penalty: ``lambda`` of the ``lambda * mean(s^2)`` score penalty (0 disables it).
        clip: ``c`` of the soft clip ``c * tanh(s / c)`` (<= 0 disables it).

    Returns:
        :class:`AmdimNCEOutput`; the NCE is averaged over every (source, positive location)
        pair, each scored against the ``(B - 1) * L`` locations of the other images.
    """
    if src.dim() == 2:
        src = src.unsqueeze(1)
    if src.dim() != 3 or trg.dim() != 3 or src.shape[0] != trg.shape[0]:
        raise ValueError(f"expected src (B, [S,] d), trg (B, L, d); got {tuple(src.shape)}, "
                         f"{tuple(trg.shape)}")
    scores, pos, reg = clipped_scores(src, trg, penalty, clip, "amdim_nce")
    est = infonce(scores, pos)
    with torch.no_grad():
        best_neg = scores.masked_fill(pos, float("-inf")).amax(dim=1, keepdim=True)
        acc = ((scores > best_neg) & pos).sum().float() / pos.sum()
    return AmdimNCEOutput(loss=est.loss + reg, nce=est.loss, penalty=reg, mi=est.mi, acc=acc)
