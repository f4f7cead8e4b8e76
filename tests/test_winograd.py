"""Winograd F(m, 2) for the encoder's two-tap block convolutions (the inference path).

Against the direct two-tap sum: exact in float64 (the transforms are an identity), within
1e-5 of the outputs' scale in float32; the encoder takes the path only for float32
inference and follows weight updates; features of a padded batch still match one
utterance at a time.
"""

from __future__ import annotations

import pytest
import torch

from cpc_seq.audio.encoder import ConvEncoder, paper_layers
from cpc_seq.nn import winograd


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


def test_encoder_inference_path_matches_training_path() -> None:
    torch.manual_seed(0)
    enc = ConvEncoder(paper_layers(64))
    wave = torch.randn(2, 16000)
    lengths = torch.tensor([16000, 9000])
    z_train, _, layers_train = enc(wave, lengths, return_layers=True)  # direct (gradients)
    with torch.no_grad():
        z_inf, _, layers_inf = enc(wave, lengths, return_layers=True)
    assert all(hasattr(conv, "_winograd_cache") for conv in enc.convs[1:])  # layers 2-5
    assert not hasattr(enc.convs[0], "_winograd_cache")  # kernel 10 / stride 5: not two taps
    for a, b in zip(layers_inf, layers_train):
        assert (a - b).abs().max() < 1e-5 * b.abs().max()
    torch.testing.assert_close(z_inf, z_train.detach(), rtol=0, atol=1e-5 * float(z_train.abs().max()))
    # an optimizer-style in-place update invalidates the cached transformed taps
    with torch.no_grad():
        enc.convs[1].weight.mul_(-2.0)
        z_new, _ = enc(wave, lengths)
    z_ref, _ = enc(wave, lengths)
    torch.testing.assert_close(z_new, z_ref.detach(), rtol=0, atol=1e-5 * float(z_ref.abs().max()))
    assert (z_new - z_inf).abs().max() > 1e-2


def test_encoder_keeps_the_direct_form_where_it_should() -> None:
    """float64, bf16 autocast and gradients take the direct path (exact against conv1d
    elsewhere in the suite)."""
    torch.manual_seed(0)
    enc = ConvEncoder(paper_layers(16)).double()
    with torch.no_grad():
        enc(torch.randn(1, 8000, dtype=torch.float64))
    enc32 = ConvEncoder(paper_layers(16))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        enc32(torch.randn(1, 8000))
    enc32(torch.randn(1, 8000))  # gradients wanted
    assert not any(hasattr(c, "_winograd_cache") for c in [*enc.convs, *enc32.convs])


def test_extracted_features_do_not_depend_on_the_batch() -> None:
    """The same bits for an utterance alone and in a padded batch (groups of the encoder,
    Winograd tiles, per-utterance normalisation); c within float rounding (the GRU's
    matmuls take other kernels for a batch of one)."""
    from cpc_seq.audio.extract import run_layers
    from cpc_seq.audio.model import ModelConfig, build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(encoder="custom", encoder_layers=[
        [k, s, 32] for k, s in ((10, 5), (8, 4), (4, 2), (4, 2), (4, 2))], dim_c=16)).eval()
    waves = [torch.randn(n) * 3 + 1 for n in (16000, 12345, 8000, 30001, 2000)]
    names = ["conv2", "conv3", "conv4", "z", "c"]
    batch = run_layers(model, waves, names, encoder_samples=40000)  # several groups
    for i, wave in enumerate(waves):
        alone = run_layers(model, [wave], names)[0]
        for name in names[:-1]:
            assert torch.equal(batch[i][name], alone[name]), (i, name)
        torch.testing.assert_close(batch[i]["c"], alone["c"], rtol=0, atol=1e-6)
