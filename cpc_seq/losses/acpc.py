"""Aligned k-step contrastive loss (ACPC, Chorowski et al. 2021).

Plain CPC makes K predictions from c_t and scores prediction k against z_{t+k} only.
ACPC makes K predictions but scores them against the next M > K frames
z_{t+1} .. z_{t+M} under the best monotonic alignment: every future frame m is matched to
one prediction a(m), with a(1) = 1, a(M) = K and a(m+1) - a(m) in {0, 1} (each
prediction covers a run of at least one consecutive frame, in order). The prediction
network then predicts the next "symbols" without their exact timing, which pushes the
encoder towards piece-wise constant codes.

Per query (b, t), prediction k and frame m the cost is the InfoNCE loss of z_{t+m}
among the candidates, ``-log softmax(p_k . candidates)[z_{t+m}]``; the query's loss is
the minimum over alignments of the summed cost (a Viterbi pass over the K x M grid,
vectorised over all queries; the gradient flows through the best path), divided by M.
The loss is the mean over queries whose M future frames lie inside their sequence.

Candidates (``negatives``): ``all`` (every valid frame of the batch, so the
log-normaliser of a prediction is shared by all M frames: one matmul) or ``cross_batch``
(``n_negatives`` frames drawn uniformly from the batch's valid frames per prediction,
shared by its M frames; a draw may coincide with the positive, as in CPC_audio).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from cpc_seq.losses.kstep import KStepOutput, float32_scores

ACPC_NEGATIVES = ("all", "cross_batch")


def align_costs(cost: Tensor) -> tuple[Tensor, Tensor]:
    """Best monotonic alignment of K predictions to M frames, for every query.

    ``cost`` (..., K, M): cost of matching prediction k to frame m (M >= K). Returns
    ``total`` (...,): the minimal summed cost over alignments with a(1) = 1, a(M) = K,
    steps of 0 or 1; and ``path`` (..., M) int64: a(m) - 1 on a best alignment.
    """
    *lead, k_n, m_n = cost.shape
    if m_n < k_n:
        raise ValueError(f"{k_n} predictions cannot align to {m_n} frames")
    inf = torch.finfo(cost.dtype).max / 4
    d = cost.new_full((*lead, k_n), inf)
    d[..., 0] = cost[..., 0, 0]
    back = []
    for m in range(1, m_n):
        stay, move = d, torch.cat([d.new_full((*lead, 1), inf), d[..., :-1]], dim=-1)
        took_move = move < stay
        back.append(took_move)
        d = torch.minimum(stay, move) + cost[..., :, m]
    total = d[..., k_n - 1]
    path = torch.empty((*lead, m_n), dtype=torch.long, device=cost.device)
    cur = torch.full(tuple(lead), k_n - 1, dtype=torch.long, device=cost.device)
    path[..., m_n - 1] = cur
    for m in range(m_n - 1, 0, -1):
        cur = cur - back[m - 1].gather(-1, cur.unsqueeze(-1)).squeeze(-1).long()
        path[..., m - 1] = cur
    return total, path


def acpc_loss(
    pred: Tensor,
    z: Tensor,
    lengths: Tensor | None = None,
    horizon: int = 12,
    negatives: str = "all",
    n_negatives: int = 128,
    generator: torch.Generator | None = None,
) -> KStepOutput:
    """Aligned k-step contrastive loss.

    Args:
        pred: (B, T, K, D) the K predictions made at every frame.
        z: (B, T, D) encoded frames (positives and candidates).
        lengths: (B,) valid frames per sequence (default all T).
        horizon: M, the future frames the K predictions align to (M >= K, M < T).
        negatives: ``all`` | ``cross_batch``.
        n_negatives: candidates per prediction for ``cross_batch``.
        generator: RNG for ``cross_batch``.

    Returns:
        :class:`~cpc_seq.losses.kstep.KStepOutput` whose per-step entries are per future
        frame m = 1..M: the aligned cost, the top-1 accuracy of z_{t+m} under its aligned
        prediction, and ``log(N+1)`` minus the cost.
    """
    _check_inputs(pred, z, horizon, negatives)
    bsz, frames, k_n, dim = pred.shape
    device = z.device
    if lengths is None:
        lengths = torch.full((bsz,), frames, device=device, dtype=torch.long)
    lengths = lengths.to(device=device, dtype=torch.long)
    frame_ids = torch.arange(frames, device=device)
    valid = (frame_ids.unsqueeze(0) < lengths.unsqueeze(1)).reshape(-1)  # (B*T,)
    z_flat = z.reshape(-1, dim)
    q = pred.reshape(-1, dim)  # (B*T*K, D) rows (b, t, k)
    pos_rows = _positive_rows(bsz, frames, k_n, horizon, device)
    if negatives == "all":
        scored = _score_all(q, z_flat, valid, pos_rows)
    else:
        scored = _score_cross_batch(q, z_flat, valid, pos_rows, n_negatives, generator)
    q_valid = (frame_ids.view(1, frames) + horizon) < lengths.view(bsz, 1)  # (B, T)
    # queries whose horizon runs past the sequence: cost 0 (masked out below, no inf/nan)
    cost = torch.where(q_valid.view(bsz, frames, 1, 1),
                       scored.cost.view(bsz, frames, k_n, horizon), scored.cost.new_zeros(()))
    total, path = align_costs(cost)  # (B, T), (B, T, M)
    w = q_valid.to(total.dtype)
    n_q = w.sum().clamp_min(1.0)
    loss = (total * w).sum() / (n_q * horizon)
    step_loss, step_acc = _aligned_step_stats(cost, path, scored, q_valid, w, n_q)
    num_candidates = scored.num_candidates
    return KStepOutput(loss=loss, step_loss=step_loss, step_acc=step_acc,
                       step_mi=math.log(num_candidates) - step_loss,
                       num_candidates=num_candidates)


def _check_inputs(pred: Tensor, z: Tensor, horizon: int, negatives: str) -> None:
    """Refuse an unknown negatives mode, a ``z`` that does not match ``pred`` and a
    horizon below the K predictions or not below T (ValueError)."""
    if negatives not in ACPC_NEGATIVES:
        raise ValueError(f"ACPC negatives {negatives!r}: one of {', '.join(ACPC_NEGATIVES)}")
    bsz, frames, k_n, dim = pred.shape
    if z.shape != (bsz, frames, dim):
        raise ValueError(f"z has shape {tuple(z.shape)}, expected {(bsz, frames, dim)}")
    if not k_n <= horizon < frames:
        raise ValueError(f"horizon {horizon} must be at least the {k_n} predictions and "
                         f"below the {frames} frames")


def _positive_rows(bsz: int, frames: int, k_n: int, horizon: int,
                   device: torch.device) -> Tensor:
    """(B*T*K, M) the flat frame index of the positive z_{t+m} of every prediction row
    (b, t, k) and future frame m: ``b*T + min(t+m, T-1)``."""
    frame_ids = torch.arange(frames, device=device)
    ms = torch.arange(1, horizon + 1, device=device)
    pos = (torch.arange(bsz, device=device).view(bsz, 1, 1) * frames
           + (frame_ids.view(1, frames, 1) + ms.view(1, 1, horizon)).clamp_max(frames - 1))
    return pos.unsqueeze(2).expand(bsz, frames, k_n, horizon).reshape(-1, horizon)


class _Scored(NamedTuple):
    """Every prediction row's InfoNCE cost of each of its M future frames, with what the
    accuracy needs."""

    cost: Tensor  # (R, M) float32: -log softmax(p . candidates)[z_{t+m}]
    s_pos: Tensor  # (R, M) float32: the positives' scores
    s_max: Tensor  # (R, 1) float32: the best candidate score
    num_candidates: int  # N + 1


def _score_all(q: Tensor, z_flat: Tensor, valid: Tensor, pos_rows: Tensor) -> _Scored:
    """Candidates ``all``: every valid frame of the batch (one matmul, one log-normaliser
    per prediction shared by its M frames)."""
    scores = float32_scores(q, z_flat)  # (B*T*K, B*T)
    scores = scores.masked_fill(~valid, float("-inf"))
    lse = torch.logsumexp(scores, dim=1, keepdim=True)  # (R, 1)
    s_pos = scores.gather(1, pos_rows)  # (R, M)
    cost = lse - s_pos
    num_candidates = int(valid.sum())
    s_max = scores.amax(dim=1, keepdim=True)
    return _Scored(cost, s_pos, s_max, num_candidates)


def _score_cross_batch(q: Tensor, z_flat: Tensor, valid: Tensor, pos_rows: Tensor,
                       n_negatives: int, generator: torch.Generator | None) -> _Scored:
    """Candidates ``cross_batch``: ``n_negatives`` valid frames drawn uniformly per
    prediction (from ``generator``), shared by its M frames, plus the positive."""
    device = z_flat.device
    valid_idx = valid.nonzero().squeeze(1)
    m = len(valid_idx)
    gdev = generator.device if generator is not None else device
    u = torch.rand(q.shape[0], n_negatives, generator=generator, device=gdev)
    r = u.mul_(m).long().clamp_max_(m - 1).to(device)
    cand = z_flat[valid_idx[r]]  # (R, N, D)
    with torch.autocast(q.device.type, enabled=False):  # float32 scores (kstep.py)
        q32 = q.float()
        s_neg = torch.einsum("rd,rnd->rn", q32, cand.float())
        s_pos = torch.einsum("rd,rmd->rm", q32, z_flat[pos_rows].float())  # (R, M)
    lse_neg = torch.logsumexp(s_neg, dim=1, keepdim=True)
    cost = torch.logaddexp(lse_neg, s_pos) - s_pos
    num_candidates = n_negatives + 1
    s_max = s_neg.amax(dim=1, keepdim=True)
    return _Scored(cost, s_pos, s_max, num_candidates)


def _aligned_step_stats(cost: Tensor, path: Tensor, scored: _Scored, q_valid: Tensor,
                        w: Tensor, n_q: Tensor) -> tuple[Tensor, Tensor]:
    """Per future frame m (M,), detached: the cost under its aligned prediction and the
    top-1 accuracy of z_{t+m} under it, averaged over the valid queries."""
    bsz, frames, k_n, horizon = cost.shape
    with torch.no_grad():
        sel = path.unsqueeze(2)  # (B, T, 1, M)
        c_m = cost.gather(2, sel).squeeze(2)  # (B, T, M) aligned cost per frame
        hit = (scored.s_pos.view(bsz, frames, k_n, horizon)
               >= scored.s_max.view(bsz, frames, k_n, 1)).gather(2, sel).squeeze(2)
        step_loss = (c_m * w.unsqueeze(2)).sum(dim=(0, 1)) / n_q
        step_acc = (hit & q_valid.unsqueeze(2)).sum(dim=(0, 1)).float() / n_q
    return step_loss, step_acc
