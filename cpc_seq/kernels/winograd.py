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
(``tests/kernels/test_winograd.py``). The encoder kernel uses it in float32 on the CPU
(:func:`cpc_seq.kernels.encoder.conv_btc`), where training and extraction are bound by
these matmuls: :func:`two_tap_conv` for inference, :class:`TwoTapConv` (with the same
transforms in both gradients) for training.

What it buys, measured: 1.07-1.15x the speed of the whole fp32 training step against the
direct block form (``python benchmarks/bench_train.py --vs 63682f8 --threads 2 --reps 5
--inner 3 --precision fp32`` when it landed; docs/speed.md); its share of the encoder
kernel's figure is in :mod:`.encoder`.
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
    """The taps at the m + 1 points, ``w0 + p w1``: (m+1, D, C) in w0's dtype (with the
    points 0, +-1, +-1/2 each is one correctly rounded addition)."""
    _, g, _ = transforms(m)
    return torch.stack([w0 * float(g[j, 0]) + w1 * float(g[j, 1]) for j in range(m + 1)])


def two_tap_conv(x: Tensor, u: Tensor, bias: Tensor | None = None,
                 outputs: int | None = None) -> Tensor:
    """``y[b, t] = x[b, t] @ w0 + x[b, t+1] @ w1 + bias`` by F(m, 2).

    Tiles start at every sequence's first block, so a sequence's outputs do not depend on
    what else is in the batch (the blocks past its end must be zero, as the encoder's
    masking makes them): a padded batch gives the same bits as one sequence at a time.

    Args:
        x: (B, nb, D) input blocks.
        u: (m+1, D, C) transformed taps from :func:`transform_weights` (m from its size).
        bias: (C,) or None.
        outputs: return the first ``outputs`` only (default nb - 1; a caller that pads
            x to whole tiles, ``nb - 1`` a multiple of m, saves the last tile's own pass).

    Returns:
        (B, outputs, C), contiguous, in x's dtype.
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
    if full < tiles:
        _tile_chunk(_last_tile(x, m, full), u, y[:, full * m :], bufs)
    out = y[:, : nb - 1 if outputs is None else outputs]
    if bias is not None:
        return torch.add(out, bias.to(out.dtype))
    return out.contiguous()


def _last_tile(x: Tensor, m: int, full: int) -> Tensor:
    """The blocks of tile ``full`` (the one that runs past x's end), zeros after the end:
    (B, m + 1, D)."""
    tail = x.new_zeros(x.shape[0], m + 1, x.shape[2])
    tail[:, : x.shape[1] - full * m] = x[:, full * m :]
    return tail


def _tile_chunk(src: Tensor, u: Tensor, dst: Tensor, bufs: tuple[Tensor, Tensor]) -> None:
    """Outputs of ``tt`` tiles of every sequence: ``src`` (B, tt*m + 1, D) blocks, ``dst``
    (B, tt*m, C) written in place; ``bufs`` flat scratch space for the transformed
    inputs and the products."""
    n, dim, c_out = u.shape
    m = n - 1
    bsz = src.shape[0]
    tt = (src.shape[1] - 1) // m
    v = bufs[0][: n * bsz * tt * dim].view(n, bsz, tt, dim)
    _input_transform(src, v)
    rows = bsz * tt
    if rows < MIN_ROWS:  # the BLAS takes another kernel (other rounding) for a few rows
        padded = torch.cat([v.view(n, rows, dim), v.new_zeros(n, MIN_ROWS - rows, dim)], 1)
        prod = torch.bmm(padded, u)[:, :rows]
    else:
        prod = bufs[1][: n * rows * c_out].view(n, rows, c_out)
        torch.bmm(v.view(n, rows, dim), u, out=prod)
    _output_transform(prod, dst)


def _combine(out: Tensor, terms: list[tuple[float, Tensor]]) -> None:
    """``out = sum(c * t)`` over the nonzero coefficients, in place."""
    first = True
    for c, t in terms:
        if c == 0.0:
            continue
        if first:
            torch.mul(t, c, out=out)
            first = False
        else:
            out.add_(t, alpha=c)


def _input_transform(src: Tensor, v: Tensor) -> None:
    """``v[j] = sum_q B^T[j, q] src[:, tile*m + q]``: src (B, tt*m + 1, D) -> v (m+1, B, tt, D)."""
    n, _, tt, _ = v.shape
    m = n - 1
    bt = transforms(m)[2]
    blocks = [src[:, q : q + tt * m : m] for q in range(n)]  # (B, tt, D) each
    for j in range(n):
        _combine(v[j], [(float(bt[j, q]), blocks[q]) for q in range(n)])


def _output_transform(prod: Tensor, dst: Tensor) -> None:
    """``dst[:, tile*m + i] = sum_j A^T[i, j] prod[j]``: prod (m+1, B*tt, C) -> dst (B, tt*m, C)."""
    n, _, c_out = prod.shape
    m = n - 1
    at = transforms(m)[0]
    bsz = dst.shape[0]
    tt = dst.shape[1] // m
    tiles = dst.view(bsz, tt, m, c_out)
    terms = [prod[j].view(bsz, tt, c_out) for j in range(n)]
    for i in range(m):
        _combine(tiles[:, :, i], [(float(at[i, j]), terms[j]) for j in range(n)])


class TwoTapConv(torch.autograd.Function):
    """:func:`two_tap_conv` with its backward, for training: ``apply(x (B, nb, D), w0, w1
    (D, C), bias (C,) or None, m) -> (B, nb - 1, C)``.

    Every pass is F(m, 2): the forward's products ``V_j @ U_j``, the weight gradient
    ``dU_j = V_j^T @ Gt_j`` (``Gt_j = sum_i A^T[i, j] g_i`` over each tile's output
    gradients), folded back to the taps by ``G``, and the input gradient ``dV_j = Gt_j @
    U_j^T``, scattered back to the blocks by ``B^T``: m + 1 products per m outputs in
    each of the three matmuls of a convolution's step. The transformed input tiles are
    kept for the backward ((m+1)/m times the input's memory, instead of the input).
    """

    @staticmethod
    def forward(ctx, x: Tensor, w0: Tensor, w1: Tensor, bias: Tensor | None,  # type: ignore[override]
                m: int) -> Tensor:
        n = m + 1
        bsz, nb, dim = x.shape
        c_out = w0.shape[1]
        u = transform_weights(w0, w1, m)
        tiles = -(-(nb - 1) // m)
        full = (nb - 1) // m
        v = x.new_empty(n, bsz, tiles, dim)
        if full:
            _input_transform(x[:, : full * m + 1], v[:, :, :full])
        if full < tiles:
            _input_transform(_last_tile(x, m, full), v[:, :, full:])
        v = v.view(n, bsz * tiles, dim)
        y = x.new_empty(bsz, tiles * m, c_out)
        _output_transform(torch.bmm(v, u), y)
        ctx.save_for_backward(v, u)
        ctx.shape, ctx.m, ctx.has_bias = (bsz, nb, dim, c_out), m, bias is not None
        out = y[:, : nb - 1]
        return torch.add(out, bias) if bias is not None else out.contiguous()

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        v, u = ctx.saved_tensors
        bsz, nb, dim, c_out = ctx.shape
        m = ctx.m
        n = m + 1
        at, g, bt = transforms(m)
        tiles = v.shape[1] // bsz
        grad = grad.to(v.dtype)
        gpad = grad.new_zeros(bsz, tiles * m, c_out)
        gpad[:, : nb - 1] = grad
        gi = [gpad[:, i::m] for i in range(m)]  # (B, tiles, C): output i of every tile
        gt = grad.new_empty(n, bsz, tiles, c_out)
        for j in range(n):
            _combine(gt[j], [(float(at[i, j]), gi[i]) for i in range(m)])
        gt = gt.view(n, bsz * tiles, c_out)
        dx = dw0 = dw1 = db = None
        if ctx.needs_input_grad[0]:
            dv = torch.bmm(gt, u.transpose(1, 2)).view(n, bsz, tiles, dim)
            dx_pad = grad.new_zeros(bsz, tiles * m + 1, dim)
            for j in range(n):
                for q in range(n):
                    c = float(bt[j, q])
                    if c != 0.0:
                        dx_pad[:, q : q + tiles * m : m].add_(dv[j], alpha=c)
            dx = dx_pad[:, :nb]
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            du = torch.bmm(v.transpose(1, 2), gt)  # (n, D, C)
            dw0, dw1 = torch.empty_like(du[0]), torch.empty_like(du[0])
            _combine(dw0, [(float(g[j, 0]), du[j]) for j in range(n)])
            _combine(dw1, [(float(g[j, 1]), du[j]) for j in range(n)])
        if ctx.has_bias and ctx.needs_input_grad[3]:
            db = grad.sum(dim=(0, 1))
        return dx, dw0, dw1, db, None
