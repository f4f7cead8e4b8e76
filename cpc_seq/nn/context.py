"""Autoregressive context networks (the ``g_ar`` of CPC): GRU, LSTM, causal Transformer.

All map z (B, T, D_in) to c (B, T, D_c) causally: c[:, t] depends on z[:, :t+1] only,
so padding after a sequence's end never changes its valid frames. The Transformer uses
sinusoidal positions computed for any length (no window length baked in).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

CONTEXTS = ("gru", "lstm", "transformer")


class RNNContext(nn.Module):
    """GRU or LSTM context. ``forward(z (B, T, D_in)) -> c (B, T, D_c)``.

    On CPU the GRU runs in the parameters' precision even under autocast: for training
    as :class:`_GRULayer` (same parameters and result as ``nn.GRU``, about 5x faster with
    its backward), for inference (no gradient wanted) as ``nn.GRU`` itself; elsewhere,
    and for the LSTM, ``nn.GRU`` / ``nn.LSTM`` under the caller's autocast.
    """

    def __init__(self, kind: str, dim_in: int, dim_c: int, num_layers: int = 1) -> None:
        super().__init__()
        cls = {"gru": nn.GRU, "lstm": nn.LSTM}[kind]
        self.kind = kind
        self.rnn = cls(dim_in, dim_c, num_layers=num_layers, batch_first=True)

    def forward(self, z: Tensor) -> Tensor:
        if self.kind == "gru" and z.device.type == "cpu" and z.shape[1] > 0:
            h = z
            with torch.autocast("cpu", enabled=False):
                if not (torch.is_grad_enabled() and (z.requires_grad or self.rnn.weight_hh_l0.requires_grad)):
                    # inference: torch's own kernel is faster without the backward's state
                    return self.rnn(h.to(self.rnn.weight_hh_l0.dtype))[0]
                for layer in range(self.rnn.num_layers):
                    p = [getattr(self.rnn, f"{n}_l{layer}")
                         for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
                    h = _GRULayer.apply(h.to(p[0].dtype), *p)
            return h
        c, _ = self.rnn(z)
        return c


class _GRULayer(torch.autograd.Function):
    """One GRU layer from a zero state (``nn.GRU``'s equations and gate order r, z, n).

    ``x`` (B, T, I); weights (3H, I), (3H, H); biases (3H,). Returns h (B, T, H). The
    input projections of all steps are one matmul; the recurrence does one small matmul
    and a few element-wise ops per step, and the backward is hand-written: the
    gradient factors that do not depend on the incoming gradient are computed for all
    steps at once, the loop does one matmul and four multiplies per step, and the
    weight gradients are single matmuls over all steps.
    """

    @staticmethod
    def forward(ctx, x: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor,  # type: ignore[override]
                b_hh: Tensor) -> Tensor:
        bsz, steps, dim_in = x.shape
        hid = w_hh.shape[1]
        x_tb = x.transpose(0, 1).reshape(steps * bsz, dim_in)
        gi = torch.addmm(b_ih, x_tb, w_ih.t()).view(steps, bsz, 3 * hid)
        gh = x.new_empty(steps, bsz, 3 * hid)
        rz = x.new_empty(steps, bsz, 2 * hid)
        n = x.new_empty(steps, bsz, hid)
        out = x.new_empty(steps + 1, bsz, hid)  # out[0] = h_{-1} = 0, out[t+1] = h_t
        out[0].zero_()
        w_hh_t = w_hh.t().contiguous()  # (H, 3H) row-major: 2x faster for small batches
        # per-step views, made once (indexing in the loop costs as much as the math)
        gi_rz, gi_n = gi[..., : 2 * hid].unbind(0), gi[..., 2 * hid :].unbind(0)
        gh_t, gh_rz, gh_n = gh.unbind(0), gh[..., : 2 * hid].unbind(0), gh[..., 2 * hid :].unbind(0)
        rz_t, r_t, z_t = rz.unbind(0), rz[..., :hid].unbind(0), rz[..., hid:].unbind(0)
        n_t, out_t = n.unbind(0), out.unbind(0)
        for t in range(steps):
            h = out_t[t]
            torch.addmm(b_hh, h, w_hh_t, out=gh_t[t])
            torch.add(gi_rz[t], gh_rz[t], out=rz_t[t]).sigmoid_()
            torch.addcmul(gi_n[t], r_t[t], gh_n[t], out=n_t[t]).tanh_()
            # h_t = (1 - z) * n + z * h_{t-1} = n + z * (h_{t-1} - n)
            torch.sub(h, n_t[t], out=out_t[t + 1]).mul_(z_t[t]).add_(n_t[t])
        ctx.save_for_backward(x_tb, w_ih, w_hh, gh, rz, n, out)
        return out[1:].transpose(0, 1)

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        x_tb, w_ih, w_hh, gh, rz, n, out = ctx.saved_tensors
        steps, bsz, hid = n.shape
        g = g.transpose(0, 1).to(n.dtype)  # (T, B, H)
        r, z = rz[..., :hid], rz[..., hid:]
        h_prev = out[:-1]
        # Factors of dL/dh_t in the gate pre-activation gradients (all steps at once):
        f_n = (1 - z) * (1 - n * n)  # d a_n
        f_z = (h_prev - n) * z * (1 - z)  # d a_z
        f_r = gh[..., 2 * hid :] * r * (1 - r)  # d a_r, per unit of d a_n
        dgh = torch.empty_like(gh)  # gradients of the hidden pre-activations
        da_n = torch.empty_like(n)  # = gradient of the input pre-activation of n
        g_t, z_t, r_t = g.unbind(0), z.unbind(0), r.unbind(0)
        fn_t, fz_t, fr_t = f_n.unbind(0), f_z.unbind(0), f_r.unbind(0)
        da_t, dgh_t = da_n.unbind(0), dgh.unbind(0)
        dgh_r, dgh_z = dgh[..., :hid].unbind(0), dgh[..., hid : 2 * hid].unbind(0)
        dgh_n = dgh[..., 2 * hid :].unbind(0)
        dh = g_t[steps - 1]
        for t in range(steps - 1, -1, -1):
            torch.mul(dh, fn_t[t], out=da_t[t])
            torch.mul(da_t[t], fr_t[t], out=dgh_r[t])
            torch.mul(dh, fz_t[t], out=dgh_z[t])
            torch.mul(da_t[t], r_t[t], out=dgh_n[t])
            if t:
                dh = torch.addmm(torch.addcmul(g_t[t - 1], dh, z_t[t]), dgh_t[t], w_hh)
        dgi = torch.cat([dgh[..., : 2 * hid], da_n], dim=2).view(steps * bsz, 3 * hid)
        dgh2 = dgh.view(steps * bsz, 3 * hid)
        dx = (dgi @ w_ih).view(steps, bsz, -1).transpose(0, 1) if ctx.needs_input_grad[0] else None
        dw_ih = dgi.t() @ x_tb
        dw_hh = dgh2.t() @ h_prev.reshape(steps * bsz, hid)
        return dx, dw_ih, dw_hh, dgi.sum(0), dgh2.sum(0)


def sinusoidal_positions(length: int, dim: int, device: torch.device | None = None) -> Tensor:
    """(length, dim) sinusoidal position table (Vaswani et al.)."""
    pos = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(1)
    freq = torch.exp(
        torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim)
    )
    table = torch.zeros(length, dim, device=device)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return table


class TransformerContext(nn.Module):
    """Causal Transformer context. ``forward(z (B, T, D_in)) -> c (B, T, D_c)``."""

    def __init__(
        self, dim_in: int, dim_c: int, num_layers: int = 2, heads: int = 4, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_c)
        layer = nn.TransformerEncoderLayer(
            dim_c, heads, dim_feedforward=4 * dim_c, dropout=dropout, batch_first=True,
            norm_first=True,
        )
        self.layers = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim_c)

    def forward(self, z: Tensor) -> Tensor:
        t = z.shape[1]
        x = self.proj(z) + sinusoidal_positions(t, self.proj.out_features, z.device).to(z.dtype)
        mask = nn.Transformer.generate_square_subsequent_mask(t, device=z.device, dtype=x.dtype)
        return self.norm(self.layers(x, mask=mask, is_causal=True))


def build_context(
    kind: str, dim_in: int, dim_c: int, num_layers: int = 1, heads: int = 4, dropout: float = 0.0
) -> nn.Module:
    """Context network by name: ``gru`` | ``lstm`` | ``transformer``."""
    if kind in ("gru", "lstm"):
        return RNNContext(kind, dim_in, dim_c, num_layers)
    if kind == "transformer":
        return TransformerContext(dim_in, dim_c, num_layers, heads, dropout)
    raise ValueError(f"unknown context {kind!r}; one of {', '.join(CONTEXTS)}")
