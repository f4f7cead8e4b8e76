"""Negative sampling for the k-step InfoNCE loss (:mod:`cpc_seq.losses.kstep`).

Frames are addressed by flat index ``b * T + t`` into the candidates' (B_c * T) frames.
Modes (``loss.negatives``): ``same_sequence`` draws from the positive's own sequence,
``cross_batch`` from all valid frames of the batch (any sequence, the positive's own
included: CPC_audio's behaviour), ``mixed`` ``ceil(N/2)`` from the own sequence and the
rest from the batch. ``exclude_positive=True`` samples from the pool *minus* the
positive (nothing is redrawn); with ``False`` a draw may coincide with the positive.
"""

from __future__ import annotations

import torch
from torch import Tensor


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


def sample_block(
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

    ``pos_t``: (...,) frame of each query's positive within its sequence; ``seq``:
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
    idx = sample_block(mode, n, pos_t, seq, frames, lengths, exclude_positive, generator)
    return idx.reshape(-1, n)
