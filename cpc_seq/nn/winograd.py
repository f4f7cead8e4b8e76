"""Two-tap block convolution with fewer multiplications (Winograd / Toom-Cook F(m, 2)).

The encoder's strided convolutions whose kernel is twice their stride (the paper's
layers 2-5: kernel 8 / stride 4, kernel 4 / stride 2) are, over blocks of ``stride``
frames, convolutions with two matrix taps::

    y[t] = x[t] @ w0 + x[t + 1] @ w1        x: (nb, D) blocks, w0, w1: (D, C)

Computed directly that is two (D x C) products per output. Winograd's minimal filtering
algorithm F(m, 2) gets ``m`` consecutive outputs from ``m + 1`` input blocks with
``m + 1`` products instead of ``2 m``: evaluate the tap polynomial ``w0 + w1 p`` at
``m`` points and infinity (the weight transform ``G``), combine the input blocks of a
tile linearly (``B^T``), multiply point by point (one batched matmul per tile chunk),
and interpolate the outputs back (``A^T``)::

    y[tile] = A^T [ (G w) (*) (B^T x[tile]) ]

With m = 5 (points 0, +-1, +-1/2, infinity) that is 6 products per 5 outputs: 0.6x the
multiplications of the direct form. The transforms are additions with small constants;
in float32 the result differs from the direct sum by about 1e-6 of the outputs' scale
(``tests/test_winograd.py``). Used for inference in float32 on the CPU only
(:func:`cpc_seq.audio.encoder._conv_btc`), where extraction is bound by these matmuls;
training keeps the direct form, whose backward it would otherwise have to mirror.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

#: Finite interpolation points for F(m, 2), m = len(points); infinity is the last point.
POINTS: dict[int, tuple[float, ...]] = {
    2: (0.0, 1.0),
    3: (0.0, 1.0, -1.0),
    4: (0.0, 1.0, -1.0, 0.5),
    5: (0.0, 1.0, -1.0, 0.5, -0.5),
}
DEFAULT_TILE = 5

#: Tiles multiplied at once: about 8 MiB of transformed input blocks in float32 (they
#: stay in the last-level cache between the transform and the matmul).
CHUNK_ELEMENTS = 1 << 21


@functools.cache
def transforms(m: int) -> tuple[Tensor, Tensor, Tensor]:
    """(A^T (m, m+1), G (m+1, 2), B^T (m+1, m+1)) of F(m, 2), float64.

    ``G`` evaluates the taps' polynomial at the points (row ``[1, p]``; ``[0, 1]`` at
    infinity), ``A^T[i, j] = p_j^i`` (infinity contributes to the last output only), and
    ``B^T`` is the unique input transform that makes the identity exact: it is solved
    for and checked here.
    """
    if m not in POINTS:
        raise ValueError(f"F({m}, 2) not available; tile sizes {sorted(POINTS)}")
    pts = torch.tensor(POINTS[m], dtype=torch.float64)
    n = m + 1
    g = torch.zeros(n, 2, dtype=torch.float64)
    g[:m, 0], g[:m, 1], g[m, 1] = 1.0, pts, 1.0
    at = torch.zeros(m, n, dtype=torch.float64)
    at[:, :m] = pts.unsqueeze(0) ** torch.arange(m, dtype=torch.float64).unsqueeze(1)
    at[0, 0] = 1.0  # 0^0
    at[m - 1, m] = 1.0
    # sum_j AT[i, j] G[j, k] BT[j, l] = [l == i + k] for every output i, tap k, input l
    coef = (at.unsqueeze(1) * g.t().unsqueeze(0)).reshape(2 * m, n)  # row 2 i + k
    rhs = torch.zeros(2 * m, n, dtype=torch.float64)
    for i in range(m):
        for k in range(2):
            rhs[2 * i + k, i + k] = 1.0
    bt = torch.linalg.lstsq(coef, rhs).solution  # (n, n): column l = input l
    if (coef @ bt - rhs).abs().max() > 1e-9:
        raise AssertionError(f"F({m}, 2) transforms do not solve exactly")
    bt[bt.abs() < 1e-12] = 0.0
    return at, g, bt


def transform_weights(w0: Tensor, w1: Tensor, m: int = DEFAULT_TILE) -> Tensor:
    """The taps at the m + 1 points: (m+1, D, C) in w0's dtype (computed in float64)."""
    _, g, _ = transforms(m)
    w0d, w1d = w0.double(), w1.double()
    return torch.stack([g[j, 0].item() * w0d + g[j, 1].item() * w1d
                        for j in range(m + 1)]).to(w0.dtype)


def two_tap_conv(x: Tensor, u: Tensor, bias: Tensor | None = None) -> Tensor:
    """``y[b, t] = x[b, t] @ w0 + x[b, t+1] @ w1 + bias`` by F(m, 2).

    Args:
        x: (B, nb, D) input blocks.
        u: (m+1, D, C) transformed taps from :func:`transform_weights` (m from its size).
        bias: (C,) or None.

    Returns:
        (B, nb - 1, C), contiguous, in x's dtype.
    """
    n, dim, c_out = u.shape
    m = n - 1
    at, _, bt = transforms(m)
    bsz, nb, _ = x.shape
    # The batch as one sequence: an output that straddles two sequences (one per
    # sequence, at its end) is computed and dropped.
    flat = x.reshape(bsz * nb, dim)
    outputs = bsz * nb - 1
    tiles = -(-outputs // m)
    b_rows = [[(q, float(bt[j, q])) for q in range(n) if bt[j, q] != 0] for j in range(n)]
    a_rows = [[(j, float(at[i, j])) for j in range(n) if at[i, j] != 0] for i in range(m)]
    y_flat = x.new_empty(max(tiles * m, bsz * nb), c_out)
    y = y_flat[: tiles * m].view(tiles, m, c_out)
    step = min(max(16, CHUNK_ELEMENTS // dim), tiles)
    v_buf, p_buf = x.new_empty(n * step * dim), x.new_empty(n * step * c_out)
    for t0 in range(0, tiles, step):
        tt = min(tiles - t0, step)
        v = v_buf[: n * tt * dim].view(n, tt, dim)
        prod = p_buf[: n * tt * c_out].view(n, tt, c_out)
        src = flat[t0 * m : (t0 + tt) * m + 1]
        if src.shape[0] < tt * m + 1:  # the last tile runs past the input: zero blocks
            src = torch.cat([src, src.new_zeros(tt * m + 1 - src.shape[0], dim)])
        for j, terms in enumerate(b_rows):  # V_j = sum_q BT[j, q] x[tile + q]
            vj = v[j]
            for i, (q, c) in enumerate(terms):
                block = src[q : q + tt * m : m]
                if i == 0:
                    torch.mul(block, c, out=vj)
                else:
                    vj.add_(block, alpha=c)
        torch.bmm(v, u, out=prod)
        for i, terms in enumerate(a_rows):  # y_i = sum_j AT[i, j] M_j
            yi = y[t0 : t0 + tt, i]
            for q, (j, c) in enumerate(terms):
                if q == 0:
                    torch.mul(prod[j], c, out=yi)
                else:
                    yi.add_(prod[j], alpha=c)
    out = y_flat[: bsz * nb].view(bsz, nb, c_out)[:, : nb - 1]
    if bias is not None:
        return torch.add(out, bias.to(out.dtype))
    return out.contiguous()
