"""Cross-entropy and top-1 hit of every row of a score matrix, in cache-sized chunks
(``model.kernels: auto``).

The plain path of :func:`cpc_seq.losses.kstep.row_xent` converts the whole (R, C)
score matrix to float32, takes ``cross_entropy`` (which keeps its log-softmax for the
backward) and a separate ``argmax``. :class:`RowXent` reads the scores in their own
dtype (bf16 under autocast) a block of rows at a time that stays in cache, keeps only
the (R,) log-normalisers for the backward, finds the hit with ``amax`` (argmax only for
rows with ties), and writes the gradient straight in the scores' dtype.

What it buys, measured on an idle 2-core AMD EPYC with avx512_bf16 (``OMP_NUM_THREADS=2 python benchmarks/bench_kernels.py --threads 2 --reps 5 --inner 2``,
small-preset step shapes, batch 8 x 20480, forward + backward, median of 5 alternating
rounds, range in brackets): the whole k-step loss at 1.13x the plain path's speed
(1.08-1.15) with ``cross_batch`` negatives in fp32, 1.64x (1.47-1.85) in bf16; with ``all``
negatives 0.96x (0.94-1.11) in fp32, a wash, and 1.29x (1.20-1.44) in bf16.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: Scores converted to float32 at once: about 1 MiB on the CPU (stays in cache).
CHUNK_ELEMENTS = 1 << 18


def _rows_per_chunk(width: int) -> int:
    return max(1, CHUNK_ELEMENTS // max(width, 1))


def row_xent(scores: Tensor, target: Tensor, cols: Tensor | None, col_mask: Tensor | None
             ) -> tuple[Tensor, Tensor]:
    """:class:`RowXent`; the arguments and results of :func:`cpc_seq.losses.kstep.row_xent`."""
    return RowXent.apply(scores, target, cols, col_mask)


class RowXent(torch.autograd.Function):
    """Cross-entropy and top-1 hit of every row of a score matrix, in float32.

    ``scores`` (R, C) in any float dtype; ``target`` (R,) the positive's column; ``cols``
    (R, M) or None: score only these columns of each row (sampled negatives; the
    positive is then ``scores[i, target[i]]`` and counts as column 0); ``col_mask`` (C,)
    bool or None: columns that take part. Returns ``ce`` (R,) float32 and ``hit`` (R,)
    bool, with argmax's first-maximum rule.
    """

    @staticmethod
    def forward(ctx, scores: Tensor, target: Tensor, cols: Tensor | None,  # type: ignore[override]
                col_mask: Tensor | None) -> tuple[Tensor, Tensor]:
        rows = scores.shape[0]
        step = _rows_per_chunk(cols.shape[1] + 1 if cols is not None else scores.shape[1])
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
        step = _rows_per_chunk(scores.shape[1])  # dense float32 rows
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
