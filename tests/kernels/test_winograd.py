"""Winograd F(m, 2) for the encoder's two-tap block convolutions (float32 on the CPU).

Against the direct two-tap sum: exact in float64 (the transforms are an identity), with
gradients; within 1e-5 of the outputs' scale in float32; the encoder takes the path for
float32 training and inference only and follows weight updates; features of a padded
batch still match one utterance at a time, bit for bit.
"""

from __future__ import annotations

import pytest
import torch

from cpc_seq.audio.model.encoder import ConvEncoder, paper_layers
from cpc_seq.kernels import winograd


def _direct(x: torch.Tensor, w0: torch.Tensor, w1: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return x[:, :-1] @ w0 + x[:, 1:] @ w1 + bias


@pytest.mark.parametrize("m", sorted(winograd.POINTS))
@pytest.mark.parametrize("bsz,nb", [(1, 2), (1, 11), (3, 7), (2, 40)])
def test_two_tap_conv_is_exact_in_float64(m: int, bsz: int, nb: int) -> None:
    torch.manual_seed(m)
    x = torch.randn(bsz, nb, 6, dtype=torch.float64)
    w0, w1 = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 5, dtype=torch.float64)
    bias = torch.randn(5, dtype=torch.float64)
    y = winograd.two_tap_conv(x, winograd.transform_weights(w0, w1, m), bias)
    assert y.shape == (bsz, nb - 1, 5) and y.is_contiguous()
    torch.testing.assert_close(y, _direct(x, w0, w1, bias), rtol=1e-11, atol=1e-11)


def test_two_tap_conv_float32_error_and_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Several tile chunks (a short last one), the default tile: float32 error ~1e-6."""
    monkeypatch.setattr(winograd, "CHUNK_ELEMENTS", 64 * 32)  # 64 tiles per chunk
    torch.manual_seed(0)
    x = torch.randn(3, 401, 64)
    w0, w1 = torch.randn(64, 48) / 8, torch.randn(64, 48) / 8
    y = winograd.two_tap_conv(x, winograd.transform_weights(w0, w1))
    ref = _direct(x.double(), w0.double(), w1.double(), torch.zeros(48, dtype=torch.float64))
    assert (y.double() - ref).abs().max() < 1e-5 * ref.abs().max()


def test_transforms_refuse_unknown_tiles() -> None:
    with pytest.raises(ValueError, match="tile sizes"):
        winograd.transforms(9)


@pytest.mark.parametrize("m", sorted(winograd.POINTS))
def test_two_tap_conv_gradients(m: int) -> None:
    """The training form: forward and all three gradients against the direct sum."""
    torch.manual_seed(m)
    args = [torch.randn(2, 9, 6, dtype=torch.float64, requires_grad=True),
            torch.randn(6, 4, dtype=torch.float64, requires_grad=True),
            torch.randn(6, 4, dtype=torch.float64, requires_grad=True),
            torch.randn(4, dtype=torch.float64, requires_grad=True)]
    y = winograd.TwoTapConv.apply(*args, m)
    ref = _direct(*args)
    torch.testing.assert_close(y, ref, rtol=1e-11, atol=1e-11)
    g = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad((y * g).sum(), args), torch.autograd.grad((ref * g).sum(), args)):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-11)
    assert torch.autograd.gradcheck(lambda *a: winograd.TwoTapConv.apply(*a, m), tuple(args))


def test_encoder_float32_paths_match_float64_direct() -> None:
    """float32 training (gradients) and inference both take F(5, 2) and stay within
    float32 rounding of the float64 direct form; an in-place weight update reaches the
    inference path's cached taps."""
    torch.manual_seed(0)
    enc = ConvEncoder(paper_layers(64))
    enc64 = ConvEncoder(paper_layers(64)).double()
    enc64.load_state_dict(enc.state_dict())
    wave = torch.randn(2, 16000)
    lengths = torch.tensor([16000, 9000])
    z_train, _ = enc(wave, lengths)
    z_ref, _ = enc64(wave.double(), lengths)
    scale = float(z_ref.abs().max())
    assert (z_train.double() - z_ref).abs().max() < 1e-5 * scale
    w = torch.randn_like(z_ref)
    grads = torch.autograd.grad((z_train * w.float()).sum(), list(enc.parameters()))
    grads_ref = torch.autograd.grad((z_ref * w).sum(), list(enc64.parameters()))
    for a, b in zip(grads, grads_ref):
        assert (a.double() - b).abs().max() <= 1e-4 * b.abs().max() + 1e-7
    with torch.no_grad():
        z_inf, _ = enc(wave, lengths)
    assert all(hasattr(conv, "_winograd_cache") for conv in enc.convs[1:])  # layers 2-5
    assert not hasattr(enc.convs[0], "_winograd_cache")  # kernel 10 / stride 5: not two taps
    assert (z_inf.double() - z_ref).abs().max() < 1e-5 * scale
    with torch.no_grad():
        enc.convs[1].weight.mul_(-2.0)
        enc64.convs[1].weight.mul_(-2.0)
        z_new, _ = enc(wave, lengths)
    z_ref2, _ = enc64(wave.double(), lengths)
    assert (z_new.double() - z_ref2).abs().max() < 1e-5 * float(z_ref2.abs().max())


def test_encoder_keeps_the_direct_form_where_it_should(monkeypatch: pytest.MonkeyPatch) -> None:
    """float64 (the exact reference) and bf16 autocast take the direct form, with and
    without gradients."""
    def refuse(*_a: object, **_k: object) -> None:
        raise AssertionError("Winograd path taken")

    monkeypatch.setattr(winograd, "two_tap_conv", refuse)
    monkeypatch.setattr(winograd.TwoTapConv, "apply", refuse)
    torch.manual_seed(0)
    enc64 = ConvEncoder(paper_layers(16)).double()
    enc64(torch.randn(1, 8000, dtype=torch.float64))
    with torch.no_grad():
        enc64(torch.randn(1, 8000, dtype=torch.float64))
    enc = ConvEncoder(paper_layers(16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        enc(torch.randn(1, 8000))
        with torch.no_grad():
            enc(torch.randn(1, 8000))


def test_extracted_features_do_not_depend_on_the_batch() -> None:
    """The same bits for an utterance alone and in a padded batch (groups of the encoder,
    Winograd tiles, per-utterance normalisation); c within float rounding (the GRU's
    matmuls take other kernels for a batch of one)."""
    from cpc_seq.audio.extract import run_layers
    from cpc_seq.audio.model.cpc import ModelConfig, build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(encoder="custom", encoder_layers=[
        [k, s, 32] for k, s in ((10, 5), (8, 4), (4, 2), (4, 2), (4, 2))], dim_c=16)).eval()
    g = torch.Generator().manual_seed(3)
    # int16-scale samples with an offset: normalising over a zero-padded row would round
    # differently from the utterance alone
    waves = [torch.randn(n, generator=g) * 3000 + 1
             for n in (16000, 12345, 8000, 30001, 2000, 47999, 777)]
    names = ["conv2", "conv3", "conv4", "z", "c"]
    alone = [run_layers(model, [wave], names)[0] for wave in waves]
    for groups in (None, 40000):  # one padded group; several
        batch = run_layers(model, waves, names, encoder_samples=groups)
        for i in range(len(waves)):
            for name in names[:-1]:
                assert torch.equal(batch[i][name], alone[i][name]), (groups, i, name)
            scale = float(alone[i]["c"].abs().max())
            torch.testing.assert_close(batch[i]["c"], alone[i]["c"], rtol=0, atol=1e-6 * scale)
