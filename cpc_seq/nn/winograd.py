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

#: Fewest rows per product: below this the CPU's BLAS switches to a kernel that rounds
#: differently, and a sequence's features would depend on the batch it came in.
MIN_ROWS = 4


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

    Tiles start at every sequence's first block, so a sequence's outputs do not depend on
    what else is in the batch (the blocks past its end must be zero, as the encoder's
    masking makes them): a padded batch gives the same bits as one sequence at a time.

    Args:
        x: (B, nb, D) input blocks.
        u: (m+1, D, C) transformed taps from :func:`transform_weights` (m from its size).
        bias: (C,) or None.

    Returns:
        (B, nb - 1, C), contiguous, in x's dtype.
    """
    n, dim, c_out = u.shape
    m = n - 1
    bsz, nb, _ = x.shape
    tiles = -(-(nb - 1) // m)
    full = (nb - 1) // m  # tiles whose m + 1 blocks all lie in x
    y = x.new_empty(bsz, tiles * m, c_out)
    step = min(max(1, CHUNK_ELEMENTS // (dim * bsz)), max(full, 1))
    bufs = (x.new_empty(n * bsz * step * dim), x.new_empty(n * bsz * step * c_out))
    for t0 in range(0, full, step):
        tt = min(full - t0, step)
        _tile_chunk(x[:, t0 * m : (t0 + tt) * m + 1], u, y[:, t0 * m : (t0 + tt) * m], bufs)
    if full < tiles:  # the last tile runs past the input: zero blocks after it
        tail = x.new_zeros(bsz, m + 1, dim)
        tail[:, : nb - full * m] = x[:, full * m :]
        _tile_chunk(tail, u, y[:, full * m :], bufs)
    out = y[:, : nb - 1]
    if bias is not None:
        return torch.add(out, bias.to(out.dtype))
    return out.contiguous()


def _tile_chunk(src: Tensor, u: Tensor, dst: Tensor, bufs: tuple[Tensor, Tensor]) -> None:
    """Outputs of ``tt`` tiles of every sequence: ``src`` (B, tt*m + 1, D) blocks, ``dst``
    (B, tt*m, C) written in place; ``bufs`` flat scratch space for the transformed
    inputs and the products."""
    n, dim, c_out = u.shape
    m = n - 1
    at, _, bt = transforms(m)
    bsz = src.shape[0]
    tt = (src.shape[1] - 1) // m
    v = bufs[0][: n * bsz * tt * dim].view(n, bsz, tt, dim)
    prod = bufs[1][: n * bsz * tt * c_out].view(n, bsz * tt, c_out)
    for j in range(n):  # V_j = sum_q BT[j, q] x[tile + q]
        first = True
        for q in range(n):
            c = float(bt[j, q])
            if c == 0.0:
                continue
            block = src[:, q : q + tt * m : m]  # (B, tt, D)
            if first:
                torch.mul(block, c, out=v[j])
                first = False
            else:
                v[j].add_(block, alpha=c)
    rows = bsz * tt
    if rows < MIN_ROWS:  # the BLAS takes another kernel (other rounding) for a few rows
        padded = torch.cat([v.view(n, rows, dim), v.new_zeros(n, MIN_ROWS - rows, dim)], 1)
        prod = torch.bmm(padded, u)[:, :rows]
    else:
        torch.bmm(v.view(n, rows, dim), u, out=prod)
    tiles = dst.view(bsz, tt, m, c_out)
    for i in range(m):  # y_i = sum_j AT[i, j] M_j
        first = True
        for j in range(n):
            c = float(at[i, j])
            if c == 0.0:
                continue
            term = prod[j].view(bsz, tt, c_out)
            if first:
                torch.mul(term, c, out=tiles[:, :, i])
                first = False
            else:
                tiles[:, :, i].add_(term, alpha=c)
