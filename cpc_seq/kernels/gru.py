"""The GRU context on the CPU with a hand-written backward (``model.kernels: auto``).

Same parameters and result as ``nn.GRU`` (gate order r, z, n), computed differently:
the input projections of all steps are one matmul; the recurrence does one small
matmul and a few in-place element-wise ops per step; the backward is hand-written: the
gradient factors that do not depend on the incoming gradient are computed for all steps
at once, the loop does one matmul and four multiplies per step, and the weight
gradients are single matmuls over all steps. It runs in the parameters' precision even
under autocast. Without gradients ``nn.GRU``'s own kernel is faster, and is used.

What it buys, measured on an idle 2-core AMD EPYC with avx512_bf16 (``OMP_NUM_THREADS=2 python benchmarks/bench_kernels.py --threads 2 --reps 5 --inner 2``,
small-preset step shapes, batch 8 x 20480, forward + backward, median of 5 alternating
rounds, range in brackets): 1.51x the speed of ``nn.GRU`` in fp32 (0.62-1.61), 1.70x in bf16
autocast (1.64-1.89).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def forward(rnn: nn.GRU, z: Tensor) -> Tensor:
    """``rnn(z)[0]`` for a batch-first GRU: z (B, T, D_in) -> (B, T, H). A GRU this
    kernel does not cover (bidirectional, without biases, dropout between layers) runs
    as ``rnn`` itself."""
    if rnn.bidirectional or not rnn.bias or not rnn.batch_first or rnn.proj_size or (
            rnn.dropout and rnn.training):
        return rnn(z)[0]
    weight = rnn.weight_hh_l0
    with torch.autocast(z.device.type, enabled=False):
        if z.shape[1] == 0 or not (torch.is_grad_enabled()
                                   and (z.requires_grad or weight.requires_grad)):
            return rnn(z.to(weight.dtype))[0]
        h = z
        for layer in range(rnn.num_layers):
            p = [getattr(rnn, f"{n}_l{layer}")
                 for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            h = GRULayer.apply(h.to(p[0].dtype), *p)
    return h


class GRULayer(torch.autograd.Function):
    """One GRU layer from a zero state (``nn.GRU``'s equations and gate order r, z, n).

    ``x`` (B, T, I); weights (3H, I), (3H, H); biases (3H,). Returns h (B, T, H).
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
