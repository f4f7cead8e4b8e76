"""k-step InfoNCE for sequences (CPC).

Given predictions ``pred[b, t, k-1]`` of the encoded frame ``z[b, t+k]`` made from the
context ``c[b, t]`` (k = 1..K), each prediction is scored by a dot product against its
positive ``z[b, t+k]`` and N negatives, and the loss is the cross-entropy of picking the
positive (InfoNCE). ``log(N+1) - L_k`` is a lower bound on I(z_{t+k}; c_t) in nats.

Negative modes (``negatives``):

``all``
    Every valid frame of the batch is a candidate: N + 1 = number of valid frames.
    One (rows x D) @ (D x B*T) matmul per step, no sampling.
``same_sequence``
    N negatives drawn uniformly (with replacement) from the positive's own sequence.
``cross_batch``
    N negatives drawn uniformly from all valid frames of the batch (any sequence,
    including the positive's own: this is CPC_audio's behaviour).
``mixed``
    ``ceil(N/2)`` from the own sequence and the rest from the whole batch.

``exclude_positive=True`` redraws nothing: it samples from the pool *minus* the
positive (so the positive never appears among its negatives); with ``False`` a draw
may coincide with the positive, as in CPC_audio.

Memory: sampled negatives are never gathered as vectors. For each step the full score
matrix ``pred_k @ z^T`` of shape (B*(T-k), B*T) is formed and the sampled columns are
gathered from it, so the largest tensor is (B*(T-k), B*T) scores plus the (B, T, N)
index tensor - never (B, T, K, N, D). The score matmul runs in the autocast dtype
(bf16 on a CPU with AMX); the softmax, loss and top-1 accuracy are computed in float32
by :class:`_RowXent`, a cache-sized block of rows at a time, without a float32 copy
of the score matrix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

NEGATIVE_MODES = ("all", "same_sequence", "cross_batch", "mixed")


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


def positive_index(batch: int, frames: int, k: int, device: torch.device | None = None) -> Tensor:
    """Flat index (into the B*T frames) of the positive of every query at step k.

    Queries are (b, t) for t in [0, T-k), flattened as ``b*(T-k) + t``; the positive is
    frame ``b*T + t + k``. Returns (B*(T-k),) int64.
    """
    b = torch.arange(batch, device=device).unsqueeze(1)
    t = torch.arange(frames - k, device=device).unsqueeze(0)
    return (b * frames + t + k).reshape(-1)


def _uniform_below(high: Tensor | int, shape: tuple[int, ...], generator: torch.Generator | None,
                   device: torch.device | None = None) -> Tensor:
    """Integer draws uniform in [0, high) where ``high`` (>= 1) broadcasts against ``shape``.

    ``floor(u * high)`` for u ~ U[0, 1) in float32 (clamped: the float product can round
    up to ``high``); in place on the fresh draws, an int ``high`` needs no broadcast.
    """
    dev = device if isinstance(high, int) else high.device
    u = torch.rand(shape, generator=generator, device=dev)
    return u.mul_(high).long().clamp_max_(high - 1)


def _sample_block(
    mode: str,
    n: int,
    pos_t: Tensor,
    seq: Tensor,
    frames: int,
    lengths: Tensor,
    exclude_positive: bool,
    generator: torch.Generator | None,
) -> Tensor:
    """Negatives for a block of queries.

    ``pos_t``: (..., ) frame of each query's positive within its sequence; ``seq``:
    candidate sequence of each query (broadcastable to ``pos_t``); ``lengths``: (B_c,)
    valid frames per candidate sequence. Returns (..., n) flat indices into B_c*T.
    """
    shape = torch.broadcast_shapes(pos_t.shape, seq.shape)
    pos_t, seq = pos_t.expand(shape), seq.expand(shape)
    n_same = {"same_sequence": n, "cross_batch": 0, "mixed": (n + 1) // 2}[mode]
    n_cross = n - n_same
    parts = []
    if n_same:
        seq_len = lengths[seq].unsqueeze(-1)  # (..., 1)
        pool = seq_len - 1 if exclude_positive else seq_len
        j = _uniform_below(pool.clamp_min(1), (*shape, n_same), generator)
        if exclude_positive:
            j += j >= pos_t.unsqueeze(-1)
        parts.append(j.add_(seq.unsqueeze(-1) * frames))
    if n_cross:
        device = lengths.device
        valid = (torch.arange(frames, device=device).unsqueeze(0) < lengths.unsqueeze(1)).reshape(-1)
        valid_idx = valid.nonzero().squeeze(1)  # sorted flat indices of valid frames
        m = valid_idx.numel()
        r = _uniform_below(max(m - 1 if exclude_positive else m, 1), (*shape, n_cross), generator,
                           device)
        if exclude_positive:
            if m == valid.numel():  # no padding: the rank of a frame is its index
                rank = seq * frames + pos_t
            else:
                rank = torch.searchsorted(valid_idx, (seq * frames + pos_t).reshape(-1)).view(shape)
            r += r >= rank.unsqueeze(-1)
        # without padding valid_idx is the identity
        parts.append(r.clamp_max_(m - 1) if m == valid.numel() else valid_idx[r.clamp_max_(m - 1)])
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)


def sample_negatives(
    mode: str,
    n: int,
    batch: int,
    frames: int,
    k: int,
    lengths: Tensor,
    exclude_positive: bool,
    generator: torch.Generator | None = None,
    query_offset: int = 0,
) -> Tensor:
    """Flat candidate indices (into the candidates' B_c*T frames) of the negatives for step k.

    Queries are the ``batch`` sequences starting at candidate sequence ``query_offset``
    (0 unless candidates were gathered from other processes), at frames t < T - k.
    ``lengths``: (B_c,) valid frames of every candidate sequence.
    Returns (batch*(T-k), n) int64.
    """
    device = lengths.device
    pos_t = (torch.arange(frames - k, device=device) + k).unsqueeze(0)  # (1, T-k)
    seq = (torch.arange(batch, device=device) + query_offset).unsqueeze(1)  # (B, 1)
    idx = _sample_block(mode, n, pos_t, seq, frames, lengths, exclude_positive, generator)
    return idx.reshape(-1, n)


#: Scores :class:`_RowXent` converts to float32 at once: about 1 MiB on the CPU (stays in
#: cache), 64 MiB on a GPU (few kernel launches).
XENT_CHUNK_ELEMENTS = {"cpu": 1 << 18}
XENT_CHUNK_ELEMENTS_DEFAULT = 1 << 24


def _xent_rows(scores: Tensor, width: int) -> int:
    per = XENT_CHUNK_ELEMENTS.get(scores.device.type, XENT_CHUNK_ELEMENTS_DEFAULT)
    return max(1, per // max(width, 1))


class _RowXent(torch.autograd.Function):
    """Cross-entropy and top-1 hit of every row of a score matrix, in float32.

    ``scores`` (R, C) in any float dtype (bf16 under autocast); ``target`` (R,) the
    positive's column; ``cols`` (R, M) or None: score only these columns of each row
    (sampled negatives; the positive is then ``scores[i, target[i]]`` and ``cols``
    holds the negatives); ``col_mask`` (C,) bool or None: columns that take part.

    Returns ``ce`` (R,) float32 = logsumexp - positive score, and ``hit`` (R,) bool:
    ``argmax == target`` with argmax's first-maximum rule (the positive counts as
    column 0 when ``cols`` is given). Same values as ``F.cross_entropy`` plus
    ``argmax`` on the float32 scores, but without the float32 copy, the log-softmax
    output or a separate argmax pass: rows are processed in chunks that stay in
    cache, and the backward writes the gradient straight in the scores' dtype.
    """

    @staticmethod
    def forward(ctx, scores: Tensor, target: Tensor, cols: Tensor | None,  # type: ignore[override]
                col_mask: Tensor | None) -> tuple[Tensor, Tensor]:
        rows = scores.shape[0]
        step = _xent_rows(scores, cols.shape[1] + 1 if cols is not None else scores.shape[1])
        lse = scores.new_empty(rows, dtype=torch.float32)
        ce = torch.empty_like(lse)
        hit = torch.empty(rows, dtype=torch.bool, device=scores.device)
        low = torch.finfo(torch.float32).min
        for r0 in range(0, rows, step):
            sl = slice(r0, min(r0 + step, rows))
            tgt = target[sl].unsqueeze(1)
            pos = scores[sl].gather(1, tgt).float()  # (r, 1)
            if cols is not None:
                x = scores[sl].gather(1, cols[sl]).float()
                mx = x.amax(dim=1, keepdim=True)
                hit[sl] = (pos >= mx).squeeze(1)  # positive first: ties go to it
                mx = torch.maximum(mx, pos)
                total = x.sub_(mx).exp_().sum(dim=1, keepdim=True) + (pos - mx).exp_()
            else:
                x = scores[sl].to(torch.float32, copy=True)  # a copy: modified in place
                if col_mask is not None:
                    x.masked_fill_(~col_mask, low)
                # max without indices (8x faster than max/argmax); the positive is the
                # argmax if it is the maximum and no earlier column ties with it
                mx = x.amax(dim=1, keepdim=True)
                top = (pos >= mx).squeeze(1)
                tied = top & ((x == mx).sum(dim=1) > 1)
                if bool(tied.any()):
                    rows_t = tied.nonzero().squeeze(1)
                    top[rows_t] = x[rows_t].argmax(dim=1) == target[sl][rows_t]
                hit[sl] = top
                total = x.sub_(mx).exp_().sum(dim=1, keepdim=True)
            lse_c = total.log_().add_(mx).squeeze(1)
            lse[sl] = lse_c
            ce[sl] = lse_c - pos.squeeze(1)
        ctx.save_for_backward(scores, target, lse, cols, col_mask)
        ctx.mark_non_differentiable(hit)
        return ce, hit

    @staticmethod
    def backward(ctx, g_ce: Tensor, g_hit: Tensor | None):  # type: ignore[override]
        scores, target, lse, cols, col_mask = ctx.saved_tensors
        rows = scores.shape[0]
        step = _xent_rows(scores, scores.shape[1])  # dense float32 rows
        grad = torch.empty_like(scores)
        low = torch.finfo(torch.float32).min
        g_ce = g_ce.float()
        for r0 in range(0, rows, step):
            sl = slice(r0, min(r0 + step, rows))
            tgt = target[sl].unsqueeze(1)
            g = g_ce[sl].unsqueeze(1)
            lse_c = lse[sl].unsqueeze(1)
            if cols is not None:
                p = scores[sl].gather(1, cols[sl]).float().sub_(lse_c).exp_().mul_(g)
                dense = torch.zeros(p.shape[0], scores.shape[1], device=p.device)
                dense.scatter_add_(1, cols[sl], p)
                p_pos = scores[sl].gather(1, tgt).float().sub_(lse_c).exp_().sub_(1).mul_(g)
                dense.scatter_add_(1, tgt, p_pos)
            else:
                dense = scores[sl].to(torch.float32, copy=True)
                if col_mask is not None:
                    dense.masked_fill_(~col_mask, low)
                dense.sub_(lse_c).exp_().mul_(g)
                dense.scatter_add_(1, tgt, -g)
            grad[sl] = dense
        return grad, None, None, None


#: Largest score block (query rows x candidate columns) formed at once; steps k are
#: processed in chunks that fit (all 12 at once for the paper's batch of 8 x 128 frames).
SCORE_BLOCK_ELEMENTS = 1 << 25


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
) -> KStepOutput:
    """k-step InfoNCE loss.

    Args:
        pred: (B, T, K, D) predictions; ``pred[:, t, k-1]`` predicts ``z[:, t+k]``.
        z: (B, T, D) encoded frames (the targets and negatives; gradients flow into z).
        lengths: (B,) valid frames per sequence (default: all T). Queries whose
            positive lies beyond the length, and padded candidates, are ignored.
        negatives: ``all`` | ``same_sequence`` | ``cross_batch`` | ``mixed``.
        n_negatives: N for the sampled modes (ignored for ``all``).
        exclude_positive: never draw the positive as one of its own negatives.
        generator: RNG for the sampled modes (reproducibility).
        candidates: (B_c, T, D) frames to draw positives and negatives from instead of
            ``z`` - e.g. z gathered from every process (cross-rank negatives); the
            queries are candidate sequences ``query_offset .. query_offset + B - 1``.
        candidate_lengths: (B_c,) valid frames of ``candidates``.

    Returns:
        :class:`KStepOutput`.
    """
    if negatives not in NEGATIVE_MODES:
        raise ValueError(f"unknown negatives mode {negatives!r}; one of {', '.join(NEGATIVE_MODES)}")
    bsz, frames, n_steps, dim = pred.shape
    if z.shape != (bsz, frames, dim):
        raise ValueError(f"z has shape {tuple(z.shape)}, expected {(bsz, frames, dim)}")
    if n_steps >= frames:
        raise ValueError(f"{n_steps} prediction steps need more than {frames} frames")
    device = z.device
    if lengths is None:
        lengths = torch.full((bsz,), frames, device=device, dtype=torch.long)
    lengths = lengths.to(device=device, dtype=torch.long)
    if candidates is None:
        candidates, candidate_lengths, query_offset = z, lengths, 0
    elif candidate_lengths is None:
        candidate_lengths = torch.full((candidates.shape[0],), frames, device=device)
    cand_lengths = candidate_lengths.to(device=device, dtype=torch.long)
    z_flat = candidates.reshape(-1, dim)
    frame_ids = torch.arange(frames, device=device)
    cand_valid = (frame_ids.unsqueeze(0) < cand_lengths.unsqueeze(1)).reshape(-1)  # (B_c*T,)
    n_valid = int(cand_lengths.sum())  # one host sync per call (needed for N anyway)
    if negatives == "all":
        num_candidates = n_valid
    else:
        num_candidates = n_negatives + 1
    log_n = math.log(num_candidates)

    # Queries (b, t, k) for every t; those whose positive t+k lies past the sequence's
    # length (or past T) are computed and masked out (about k/T of the rows).
    t_ids = frame_ids.view(1, frames, 1)
    seq = (torch.arange(bsz, device=device) + query_offset).view(bsz, 1, 1)
    q_len = cand_lengths[seq]  # (B, 1, 1)
    any_padding = n_valid < z_flat.shape[0]
    per_k = bsz * frames * z_flat.shape[0]
    chunk = max(1, SCORE_BLOCK_ELEMENTS // max(per_k, 1))
    losses, accs = [], []
    for k0 in range(1, n_steps + 1, chunk):
        ks = torch.arange(k0, min(k0 + chunk, n_steps + 1), device=device)  # (Kc,)
        kc = len(ks)
        pos_t_raw = t_ids + ks.view(1, 1, kc)  # (1, T, Kc)
        q_valid = pos_t_raw < q_len  # (B, T, Kc)
        pos_t = pos_t_raw.clamp_max(frames - 1)
        pos = (seq * frames + pos_t).reshape(-1)  # (B*T*Kc,)
        q_pred = pred[:, :, k0 - 1 : k0 - 1 + kc].reshape(-1, dim)  # (B*T*Kc, D)
        # In the matmul's dtype (bf16 under autocast); _RowXent reads it in float32.
        scores = q_pred @ z_flat.t()  # (B*T*Kc, B_c*T)
        if negatives == "all":
            ce, hit = _RowXent.apply(scores, pos, None, cand_valid if any_padding else None)
        else:
            neg_idx = _sample_block(negatives, n_negatives, pos_t, seq, frames, cand_lengths,
                                    exclude_positive, generator)  # (B, T, Kc, N)
            ce, hit = _RowXent.apply(scores, pos, neg_idx.view(-1, n_negatives), None)
        ce = ce.view(bsz, frames, kc)
        w = q_valid.to(ce.dtype)
        denom = w.sum(dim=(0, 1)).clamp_min(1.0)  # (Kc,)
        losses.append((ce * w).sum(dim=(0, 1)) / denom)
        accs.append((hit.view(bsz, frames, kc) & q_valid).sum(dim=(0, 1)).to(ce.dtype) / denom)
    step_loss = torch.cat(losses)
    return KStepOutput(
        loss=step_loss.mean(),
        step_loss=step_loss.detach(),
        step_acc=torch.cat(accs),
        step_mi=log_n - step_loss.detach(),
        num_candidates=num_candidates,
    )
