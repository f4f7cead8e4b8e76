"""Every speed kernel of :mod:`cpc_seq.kernels` against the plain path it replaces.

``model.kernels: auto`` against ``reference`` (and the reference against a hand-built
``conv1d`` stack), forward and backward: the encoder (block convolutions, Winograd), the
CPU GRU, the k-step loss's row cross-entropy. Tolerances: float64 to 1e-10, float32 to
1e-5 (relative), bf16 autocast losses to 2e-3. The Winograd transforms themselves are
tested in ``test_winograd.py``, the allocator policy in ``test_memory.py``.
"""

from __future__ import annotations

import math

import pytest
import torch

from cpc_seq.audio.model.encoder import ConvEncoder, paper_layers
from cpc_seq.errors import ConfigError
from cpc_seq.kernels import use_kernels
from cpc_seq.kernels import xent as xent_kernel
from cpc_seq.kernels.gru import GRULayer
from cpc_seq.losses import kstep_infonce
from cpc_seq.losses.negatives import sample_block
from cpc_seq.nn.context import RNNContext


def _conv1d_stack(enc: ConvEncoder, wave: torch.Tensor, lengths: torch.Tensor):
    """Conv1d -> norm -> ReLU -> zero past the layer's length, in (B, C, T), by hand."""
    h, outs = wave.unsqueeze(1), []
    for conv, norm, ln in zip(enc.convs, enc.norms, enc.layer_lengths(lengths)):
        h = torch.relu(norm(conv(h)))
        h = h * (torch.arange(h.shape[2]) < ln.unsqueeze(1)).unsqueeze(1)
        outs.append(h.transpose(1, 2))
    return h.transpose(1, 2)[:, : wave.shape[1] // enc.downsample], outs


def _encode_with_grads(enc: ConvEncoder, wave: torch.Tensor, lengths: torch.Tensor | None,
                       w: torch.Tensor | None = None):
    z, fl, outs = enc(wave, lengths, return_layers=True)
    w = torch.randn_like(z) if w is None else w
    return z, fl, outs, torch.autograd.grad((z * w).sum(), list(enc.parameters())), w


ENCODERS = [
    (paper_layers(16), "channel"),  # narrow first layer, Winograd two-tap layers
    ([(10, 5, 8), (8, 4, 12), (5, 2, 8), (3, 1, 6)], "batch"),  # 5/2, 3/1: conv1d fallback
    ([(4, 2, 6), (6, 3, 8)], "none"),  # BlockConv with three taps
    ([(10, 5, 8), (8, 4, 8), (4, 2, 8)], "channel_unbiased"),
]


@pytest.mark.parametrize("layers,norm", ENCODERS)
def test_encoder_kernel_matches_reference_float64(layers, norm) -> None:
    """Exact paths in float64: auto = reference = a hand-built conv1d stack, with gradients."""
    torch.manual_seed(0)
    enc = ConvEncoder(layers, norm=norm).double()
    wave = torch.randn(3, 1900, dtype=torch.float64)
    lengths = torch.tensor([1900, 1300, 611])
    z, fl, outs, grads, w = _encode_with_grads(enc, wave, lengths)
    enc.kernels = "reference"
    z_r, fl_r, outs_r, grads_r, _ = _encode_with_grads(enc, wave, lengths, w)
    z_h, outs_h = _conv1d_stack(enc, wave, lengths)
    assert z.shape == z_r.shape == z_h.shape and torch.equal(fl, fl_r)
    for a, b, c in zip([z, *outs], [z_r, *outs_r], [z_h, *outs_h]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(b, c, rtol=1e-10, atol=1e-10)
    for a, b in zip(grads, grads_r):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("lengths", [None, [16000, 9000]])
def test_encoder_kernel_matches_reference_float32(lengths) -> None:
    """float32 (Winograd in training): auto within float32 rounding of reference."""
    torch.manual_seed(0)
    enc = ConvEncoder(paper_layers(64))
    wave = torch.randn(2, 16000)
    ln = None if lengths is None else torch.tensor(lengths)
    z, _, _, grads, w = _encode_with_grads(enc, wave, ln)
    enc.kernels = "reference"
    z_r, _, _, grads_r, _ = _encode_with_grads(enc, wave, ln, w)
    assert (z - z_r).abs().max() < 1e-5 * z_r.abs().max()
    for a, b in zip(grads, grads_r):
        assert (a - b).abs().max() <= 1e-4 * b.abs().max() + 1e-7


def test_encoder_bf16_autocast_close_to_fp32() -> None:
    torch.manual_seed(0)
    enc = ConvEncoder(paper_layers(32))
    wave = torch.randn(2, 3200)
    z32, _ = enc(wave)
    for kernels in ("auto", "reference"):
        enc.kernels = kernels
        with torch.autocast("cpu", dtype=torch.bfloat16):
            z16, _ = enc(wave)
        assert z16.dtype == torch.bfloat16  # no float32 round trips between layers
        assert (z16.float() - z32).abs().max() < 0.1 * z32.abs().max()


def test_kernels_switch_is_validated_and_cpu_only() -> None:
    from cpc_seq.audio.model.cpc import ModelConfig, build_model
    from cpc_seq.config import from_dict

    with pytest.raises(ConfigError, match="model.kernels: 'fast' is not one of 'auto', 'reference'"):
        from_dict(ModelConfig, {"kernels": "fast"}, prefix="model.")
    model = build_model(from_dict(ModelConfig, {"encoder": "tiny", "kernels": "reference"}))
    assert model.encoder.kernels == model.context.kernels == "reference"
    x = torch.zeros(1)
    assert use_kernels("auto", x) and not use_kernels("reference", x)
    assert not use_kernels("auto", torch.zeros(1, device="meta"))  # any other device
    with pytest.raises(ValueError, match="unknown kernels mode"):
        use_kernels("fast", x)


def test_gru_kernel_matches_nn_gru_with_gradients() -> None:
    torch.manual_seed(0)
    ctx = RNNContext("gru", 5, 4, num_layers=2).double()
    x = torch.randn(3, 9, 5, dtype=torch.float64, requires_grad=True)
    out = ctx(x)
    ctx.kernels = "reference"
    ref = ctx(x)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(out)
    params = [x, *ctx.parameters()]
    for a, b in zip(torch.autograd.grad((out * g).sum(), params),
                    torch.autograd.grad((ref * g).sum(), params)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    p = [ctx.rnn.weight_ih_l0, ctx.rnn.weight_hh_l0, ctx.rnn.bias_ih_l0, ctx.rnn.bias_hh_l0]
    assert torch.autograd.gradcheck(GRULayer.apply, (x[:, :4], *p))


def test_gru_kernel_runs_float32_under_autocast() -> None:
    torch.manual_seed(0)
    ctx = RNNContext("gru", 8, 8)
    x = torch.randn(2, 6, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        c = ctx(x.bfloat16())
    ref, _ = ctx.rnn(x.bfloat16().float())
    torch.testing.assert_close(c, ref, rtol=1e-5, atol=1e-6)


def _kstep(kernels: str, pred, z, lengths, mode, bf16, **kw):
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = kstep_infonce(pred, z, lengths, negatives=mode, n_negatives=7,
                            generator=torch.Generator().manual_seed(1), kernels=kernels, **kw)
    return out.step_loss, out.step_acc, torch.autograd.grad(out.loss, [pred, z])


@pytest.mark.parametrize("mode", ["all", "same_sequence", "cross_batch", "mixed"])
@pytest.mark.parametrize("bf16", [False, True])
def test_xent_kernel_matches_reference(mode: str, bf16: bool) -> None:
    """The k-step loss with the row cross-entropy kernel against its plain path."""
    torch.manual_seed(0)
    b, t, k, d = 3, 20, 4, 16
    pred = torch.randn(b, t, k, d, requires_grad=True)
    z = torch.randn(b, t, d, requires_grad=True)
    lengths = torch.tensor([20, 15, 9])
    l1, a1, g1 = _kstep("auto", pred, z, lengths, mode, bf16)
    l2, a2, g2 = _kstep("reference", pred, z, lengths, mode, bf16)
    tol = 2e-3 if bf16 else 1e-5
    torch.testing.assert_close(l1, l2, rtol=tol, atol=tol)
    torch.testing.assert_close(a1, a2, rtol=0, atol=0)  # same argmax rule, ties included
    for x, y in zip(g1, g2):
        torch.testing.assert_close(x, y, rtol=tol, atol=tol * float(y.abs().max()))


@pytest.mark.parametrize("mode", ["all", "mixed"])
def test_xent_kernel_row_chunks_change_nothing(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Scores processed a few rows at a time give the same loss, accuracy and gradients."""
    torch.manual_seed(0)
    pred = torch.randn(2, 16, 3, 8, requires_grad=True)
    z = torch.randn(2, 16, 8, requires_grad=True)
    lengths = torch.tensor([16, 11])
    res = []
    for chunk in (1 << 18, 40):  # 40 elements: one or two rows per chunk
        monkeypatch.setattr(xent_kernel, "CHUNK_ELEMENTS", chunk)
        res.append(_kstep("auto", pred, z, lengths, mode, False))
    (l1, a1, g1), (l2, a2, g2) = res
    torch.testing.assert_close(l1, l2)
    assert torch.equal(a1, a2)
    for x, y in zip(g1, g2):
        torch.testing.assert_close(x, y)


@pytest.mark.parametrize("kernels", ["auto", "reference"])
def test_kstep_accuracy_ties_follow_argmax(kernels: str) -> None:
    """Equal scores: argmax picks the first column, so a positive elsewhere misses."""
    b, t, k, d = 2, 6, 2, 3
    pred, z = torch.zeros(b, t, k, d), torch.randn(b, t, d)
    out = kstep_infonce(pred, z, negatives="all", kernels=kernels)
    assert torch.all(out.step_acc == 0.0)  # positives are never column 0
    out = kstep_infonce(pred, z, negatives="cross_batch", n_negatives=5,
                        generator=torch.Generator().manual_seed(0), kernels=kernels)
    assert torch.all(out.step_acc == 1.0)  # the positive comes first among equals
    assert torch.allclose(out.step_loss, torch.full((k,), math.log(6.0)))


def _old_uniform_below(high, shape, gen):
    u = torch.rand(shape, generator=gen)
    return (u * high).long().clamp_max(high - 1).clamp_min(0)


@pytest.mark.parametrize("padded", [False, True])
def test_cross_batch_sampling_draws_the_same_frames(padded: bool) -> None:
    """The in-place sampler gives exactly the indices of the plain formulation."""
    b, t, k, n = 4, 30, 3, 16
    lengths = torch.tensor([30, 25, 30, 12]) if padded else torch.full((b,), t)
    pos_t = (torch.arange(t).view(1, t, 1) + torch.arange(1, k + 1).view(1, 1, k)).clamp_max(t - 1)
    seq = torch.arange(b).view(b, 1, 1)
    got = sample_block("cross_batch", n, pos_t, seq, t, lengths, True,
                        torch.Generator().manual_seed(3))
    valid = (torch.arange(t).unsqueeze(0) < lengths.unsqueeze(1)).reshape(-1)
    valid_idx = valid.nonzero().squeeze(1)
    m = valid_idx.numel()
    shape = torch.broadcast_shapes(pos_t.shape, seq.shape)
    r = _old_uniform_below(torch.full((1,), m - 1), (*shape, n), torch.Generator().manual_seed(3))
    rank = torch.searchsorted(valid_idx, (seq * t + pos_t).reshape(-1)).view(shape)
    r = r + (r >= rank.unsqueeze(-1)).long()
    assert torch.equal(got, valid_idx[r.clamp_max(m - 1)])


# -- CUDA: the same model and loss on the GPU agree with the CPU (benchmarks/gpu_check.sh) --


@pytest.mark.cuda
@pytest.mark.parametrize("mode", ["all", "cross_batch"])
def test_cuda_kstep_matches_cpu(mode: str) -> None:
    torch.manual_seed(0)
    pred, z = torch.randn(3, 24, 4, 16), torch.randn(3, 24, 16)
    lengths = torch.tensor([24, 20, 11])
    cpu = kstep_infonce(pred, z, lengths, negatives=mode, n_negatives=7,
                        generator=torch.Generator().manual_seed(0))
    gpu = kstep_infonce(pred.cuda(), z.cuda(), lengths.cuda(), negatives=mode, n_negatives=7,
                        generator=torch.Generator(device="cuda").manual_seed(0))
    if mode == "all":  # no sampling: the same candidates on both devices
        torch.testing.assert_close(gpu.step_loss.cpu(), cpu.step_loss, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(gpu.step_acc.cpu(), cpu.step_acc)
    assert torch.isfinite(gpu.loss) and gpu.num_candidates == cpu.num_candidates


@pytest.mark.cuda
def test_cuda_model_matches_cpu_with_gradients() -> None:
    from cpc_seq.audio.model.cpc import ModelConfig, build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(encoder="tiny", dim_c=32, n_steps=3))
    x, lengths = torch.randn(2, 4000), torch.tensor([4000, 2500])
    z, c, fl = model(x, lengths)
    grads = torch.autograd.grad(c.square().mean() + z.square().mean(), list(model.parameters()))
    gm = model.cuda()
    zg, cg, flg = gm(x.cuda(), lengths.cuda())
    grads_g = torch.autograd.grad(cg.square().mean() + zg.square().mean(), list(gm.parameters()))
    torch.testing.assert_close(zg.cpu(), z, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(cg.cpu(), c, rtol=1e-3, atol=1e-4)
    for a, b in zip(grads_g, grads):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-3, atol=1e-4 * float(b.abs().max()) + 1e-7)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        zb, cb, _ = gm(x.cuda(), lengths.cuda())
    assert torch.isfinite(zb.float()).all() and torch.isfinite(cb.float()).all()


def test_gpu_check_dry_run() -> None:
    """benchmarks/gpu_check.py runs every section on the CPU and prints its table."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    # (the cuda tests section runs pytest; this suite collects those tests itself)
    res = subprocess.run([sys.executable, str(root / "benchmarks" / "gpu_check.py"), "--dry-run",
                          "--skip", "tests"],
                         capture_output=True, text=True, cwd=str(root), timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr[-2000:]
    table = res.stdout
    for row in ("| train tiny bf16", "| train tiny fp32",
                "| extract tiny fp32", "| DDP 2 processes, gloo on CPU", "| largest paper batch"):
        assert row in table, table
    assert "FAIL" not in table
    assert "weights equal across ranks: True" in table
