"""k-step InfoNCE for sequences (CPC).

Given predictions ``pred[b, t, k-1]`` of the encoded frame ``z[b, t+k]`` made from the
context ``c[b, t]`` (k = 1..K), each prediction is scored by a dot product against its
positive ``z[b, t+k]`` and N negatives, and the loss is the cross-entropy of picking the
positive (InfoNCE). ``log(N+1) - L_k`` is a lower bound on I(z_{t+k}; c_t) in nats.

Negatives (``negatives``): ``all`` scores every valid frame of the batch (N + 1 = the
number of valid frames, no sampling); ``other_sequences`` every valid frame of the
*other* sequences plus the positive (the query's own sequence, but for its positive,
is left out: the task is then "which sequence does this continue", not "which frame of
this sequence", N + 1 = the frames of the other sequences + 1, its smallest value over
the queries reported); ``same_sequence``, ``cross_batch`` and ``mixed`` draw N per
query (:mod:`cpc_seq.losses.negatives`).

Memory: sampled negatives are never gathered as vectors. For each step the full score
matrix ``pred_k @ z^T`` of shape (B*T, B_c*T) is formed and the sampled columns are
picked from it, so the largest tensor is a block of scores (at most
:data:`SCORE_BLOCK_ELEMENTS`) - never (B, T, K, N, D).
The score matmul runs in float32 even under bf16 autocast, as do the softmax, loss and
top-1 accuracy (:func:`row_xent`): with bf16 scores (8 bits of mantissa) the tiny audio
recipe stayed at chance for two of three seeds (train.seed 1 and 2), and learned in
float32 (docs/training.md, "Precision").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from cpc_seq.kernels import use_kernels
from cpc_seq.kernels import xent as xent_kernel
from cpc_seq.losses.negatives import sample_block

NEGATIVE_MODES = ("all", "other_sequences", "same_sequence", "cross_batch", "mixed")


def float32_scores(queries: Tensor, keys: Tensor) -> Tensor:
    """``queries @ keys^T`` in float32, also under bf16/fp16 autocast (module docstring):
    (R, D) x (C, D) -> (R, C) float32."""
    with torch.autocast(queries.device.type, enabled=False):
        return queries.float() @ keys.float().t()


#: Largest score block (query rows x candidate columns) formed at once; steps k are
#: processed in chunks that fit (all 12 at once for the paper's batch of 8 x 128 frames).
SCORE_BLOCK_ELEMENTS = 1 << 25


@dataclass
class KStepOutput:
    """Result of :func:`kstep_infonce`.

    ``loss``: scalar, mean over steps of the per-step losses (what is minimised).
    ``step_loss``, ``step_acc``, ``step_mi``: (K,) detached, per step k = 1..K: InfoNCE
    loss, top-1 accuracy of the positive among the candidates, and the MI lower bound
    ``log(N+1) - L_k`` in nats. ``num_candidates``: N + 1.
    """

    loss: Tensor
    step_loss: Tensor
    step_acc: Tensor
    step_mi: Tensor
    num_candidates: int


def kstep_infonce(
    pred: Tensor,
    z: Tensor,
    lengths: Tensor | None = None,
    negatives: str = "all",
    n_negatives: int = 128,
    exclude_positive: bool = True,
    generator: torch.Generator | None = None,
    candidates: Tensor | None = None,
    candidate_lengths: Tensor | None = None,
    query_offset: int = 0,
    kernels: str = "auto",
) -> KStepOutput:
    """k-step InfoNCE loss.

    Args:
        pred: (B, T, K, D) predictions; ``pred[:, t, k-1]`` predicts ``z[:, t+k]``.
        z: (B, T, D) encoded frames (the targets and negatives; gradients flow into z).
        lengths: (B,) valid frames per sequence (default: all T). Queries whose
            positive lies beyond the length, and padded candidates, are ignored.
        negatives: ``all`` | ``other_sequences`` | ``same_sequence`` | ``cross_batch`` |
            ``mixed``.
        n_negatives: N for the sampled modes (unused by ``all`` and ``other_sequences``).
        exclude_positive: never draw the positive as one of its own negatives.
        generator: RNG for the sampled modes (reproducibility).
        candidates: (B_c, T, D) frames to draw positives and negatives from instead of
            ``z`` - e.g. z gathered from every process (cross-rank negatives); the
            queries are candidate sequences ``query_offset .. query_offset + B - 1``.
        candidate_lengths: (B_c,) valid frames of ``candidates``.
        kernels: ``auto`` | ``reference`` (:mod:`cpc_seq.kernels`).

    Returns:
        :class:`KStepOutput`.
    """
    _check_inputs(pred, z, negatives)
    cands = _candidate_frames(z, lengths, candidates, candidate_lengths, query_offset)
    if negatives == "all":
        num_candidates = cands.n_valid
    elif negatives == "other_sequences":
        own = cands.lengths[cands.query_offset : cands.query_offset + pred.shape[0]]
        num_candidates = cands.n_valid - int(own.max()) + 1
    else:
        num_candidates = n_negatives + 1
    step_loss, step_acc = _step_losses(pred, cands, negatives, n_negatives, exclude_positive,
                                       generator, kernels)
    return KStepOutput(
        loss=step_loss.mean(),
        step_loss=step_loss.detach(),
        step_acc=step_acc,
        step_mi=math.log(num_candidates) - step_loss.detach(),
        num_candidates=num_candidates,
    )


def _check_inputs(pred: Tensor, z: Tensor, negatives: str) -> None:
    """Refuse an unknown negatives mode, a ``z`` that does not match ``pred`` and more
    prediction steps than frames (ValueError)."""
    if negatives not in NEGATIVE_MODES:
        raise ValueError(f"unknown negatives mode {negatives!r}; one of {', '.join(NEGATIVE_MODES)}")
    bsz, frames, n_steps, dim = pred.shape
    if z.shape != (bsz, frames, dim):
        raise ValueError(f"z has shape {tuple(z.shape)}, expected {(bsz, frames, dim)}")
    if n_steps >= frames:
        raise ValueError(f"{n_steps} prediction steps need more than {frames} frames")


@dataclass
class _Candidates:
    """The frames every query scores (its positive and its negatives come from them)."""

    flat: Tensor  # (B_c*T, D) float32
    lengths: Tensor  # (B_c,) long: valid frames per candidate sequence
    valid: Tensor  # (B_c*T,) bool: the frames within those lengths
    n_valid: int  # valid.sum()
    query_offset: int  # the queries are candidate sequences query_offset .. + B - 1


def _candidate_frames(z: Tensor, lengths: Tensor | None, candidates: Tensor | None,
                      candidate_lengths: Tensor | None, query_offset: int) -> _Candidates:
    """``candidates`` (default: ``z`` itself, with ``lengths``, default all T) flattened,
    with their valid-frame mask; one host sync (the number of valid frames)."""
    bsz, frames, dim = z.shape
    device = z.device
    if lengths is None:
        lengths = torch.full((bsz,), frames, device=device, dtype=torch.long)
    lengths = lengths.to(device=device, dtype=torch.long)
    if candidates is None:
        candidates, candidate_lengths, query_offset = z, lengths, 0
    elif candidate_lengths is None:
        candidate_lengths = torch.full((candidates.shape[0],), frames, device=device)
    cand_lengths = candidate_lengths.to(device=device, dtype=torch.long)
    z_flat = candidates.reshape(-1, dim).float()  # (B_c*T, D), float32 once for every step
    frame_ids = torch.arange(frames, device=device)
    cand_valid = (frame_ids.unsqueeze(0) < cand_lengths.unsqueeze(1)).reshape(-1)  # (B_c*T,)
    n_valid = int(cand_lengths.sum())  # one host sync per call (needed for N anyway)
    return _Candidates(z_flat, cand_lengths, cand_valid, n_valid, query_offset)


@dataclass
class _Queries:
    """The query grid (b, t) shared by every step k."""

    t_ids: Tensor  # (1, T, 1) frame index t
    seq: Tensor  # (B, 1, 1) the query's candidate sequence
    q_len: Tensor  # (B, 1, 1) its length
    col_mask: Tensor | None  # (B_c*T,) the valid candidate columns; None: all are


def _step_losses(pred: Tensor, cands: _Candidates, negatives: str, n_negatives: int,
                 exclude_positive: bool, generator: torch.Generator | None,
                 kernels: str) -> tuple[Tensor, Tensor]:
    """Per-step InfoNCE loss and top-1 accuracy, (K,) each, over steps processed in chunks
    whose score blocks fit :data:`SCORE_BLOCK_ELEMENTS`.

    Queries (b, t, k) for every t; those whose positive t+k lies past the sequence's
    length (or past T) are computed and masked out (about k/T of the rows)."""
    bsz, frames, n_steps, _ = pred.shape
    device = cands.lengths.device
    seq = (torch.arange(bsz, device=device) + cands.query_offset).view(bsz, 1, 1)
    queries = _Queries(
        t_ids=torch.arange(frames, device=device).view(1, frames, 1),
        seq=seq,
        q_len=cands.lengths[seq],
        col_mask=cands.valid if cands.n_valid < cands.flat.shape[0] else None,
    )
    chunk = max(1, SCORE_BLOCK_ELEMENTS // max(bsz * frames * cands.flat.shape[0], 1))
    losses, accs = [], []
    for k0 in range(1, n_steps + 1, chunk):
        loss, acc = _chunk_loss(pred, cands, queries, k0, min(k0 + chunk, n_steps + 1),
                                negatives, n_negatives, exclude_positive, generator, kernels)
        losses.append(loss)
        accs.append(acc)
    return torch.cat(losses), torch.cat(accs)


def _chunk_loss(pred: Tensor, cands: _Candidates, queries: _Queries, k0: int, k_end: int,
                negatives: str, n_negatives: int, exclude_positive: bool,
                generator: torch.Generator | None, kernels: str) -> tuple[Tensor, Tensor]:
    """Loss and top-1 accuracy, (Kc,) each, of steps ``k0 .. k_end - 1``: one score block
    ``pred_k @ z^T``, its rows' cross-entropy over all valid columns (``all``) or over the
    positive and the sampled negatives' columns, averaged over the valid queries."""
    bsz, frames, _, dim = pred.shape
    ks = torch.arange(k0, k_end, device=cands.lengths.device)  # (Kc,)
    kc = len(ks)
    pos_t_raw = queries.t_ids + ks.view(1, 1, kc)  # (1, T, Kc)
    q_valid = pos_t_raw < queries.q_len  # (B, T, Kc)
    pos_t = pos_t_raw.clamp_max(frames - 1)
    pos = (queries.seq * frames + pos_t).reshape(-1)  # (B*T*Kc,) the positives' columns
    q_pred = pred[:, :, k0 - 1 : k0 - 1 + kc].reshape(-1, dim)  # (B*T*Kc, D)
    scores = float32_scores(q_pred, cands.flat)  # (B*T*Kc, B_c*T)
    if negatives in ("all", "other_sequences"):  # dense: every valid column
        if negatives == "other_sequences":
            scores = _mask_own_sequence(scores, pos, queries.seq, frames)
        ce, hit = row_xent(scores, pos, None, queries.col_mask, kernels)
    else:
        neg = sample_block(negatives, n_negatives, pos_t, queries.seq, frames, cands.lengths,
                           exclude_positive, generator)  # (B, T, Kc, N)
        ce, hit = row_xent(scores, pos, neg.view(-1, n_negatives), None, kernels)
    w = q_valid.to(ce.dtype)
    denom = w.sum(dim=(0, 1)).clamp_min(1.0)  # (Kc,)
    loss = (ce.view(bsz, frames, kc) * w).sum(dim=(0, 1)) / denom
    acc = (hit.view(bsz, frames, kc) & q_valid).sum(dim=(0, 1)).to(ce.dtype) / denom
    return loss, acc


def _mask_own_sequence(scores: Tensor, pos: Tensor, seq: Tensor, frames: int) -> Tensor:
    """``other_sequences``: the columns of each query's own sequence set to the lowest
    score, but for its positive. ``scores`` (B*T*Kc, B_c*T) rows in (b, t, k) order,
    ``pos`` (B*T*Kc,) the positives' columns, ``seq`` (B, 1, 1) each query's sequence."""
    bsz = seq.shape[0]
    rows, cols = scores.shape
    pos_scores = scores.gather(1, pos.unsqueeze(1))
    by_seq = scores.view(bsz, rows // bsz, cols // frames, frames)
    col_seq = torch.arange(cols // frames, device=scores.device).view(1, 1, -1, 1)
    own = col_seq == seq.view(bsz, 1, 1, 1)  # (B, 1, B_c, 1): no (rows, cols) mask built
    masked = by_seq.masked_fill(own, torch.finfo(scores.dtype).min).view(rows, cols)
    return masked.scatter(1, pos.unsqueeze(1), pos_scores)


def row_xent(scores: Tensor, target: Tensor, cols: Tensor | None = None,
             col_mask: Tensor | None = None, kernels: str = "auto") -> tuple[Tensor, Tensor]:
    """Cross-entropy (float32) and top-1 hit of every row of a score matrix.

    Args:
        scores: (R, C) in any float dtype.
        target: (R,) the positive's column of every row.
        cols: (R, N) or None: the sampled negatives' columns; the row's candidates are
            then its positive followed by these (ties go to the positive).
        col_mask: (C,) bool or None: the columns that take part (with ``cols=None``).
        kernels: ``auto`` | ``reference`` (:mod:`cpc_seq.kernels.xent`).

    Returns:
        ce (R,) float32 = logsumexp - positive score; hit (R,) bool: argmax is the
        positive (argmax's first-maximum rule).
    """
    if use_kernels(kernels, scores):
        return xent_kernel.row_xent(scores, target, cols, col_mask)
    logits = scores.float()
    if cols is not None:
        logits = torch.cat([logits.gather(1, target.unsqueeze(1)), logits.gather(1, cols)], 1)
        target = torch.zeros_like(target)  # the positive is column 0
    elif col_mask is not None:
        logits = logits.masked_fill(~col_mask, torch.finfo(torch.float32).min)
    ce = F.cross_entropy(logits, target, reduction="none")
    return ce, logits.argmax(dim=1) == target
