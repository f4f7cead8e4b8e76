"""Audio CPC model: encoder geometry, causality of the contexts, padding invariance."""

from __future__ import annotations

import pytest
import torch

from cpc_seq.audio.model.cpc import ConvEncoder, ModelConfig, build_model, cpc_paper, cpc_small
from cpc_seq.nn.context import build_context


def test_paper_preset_geometry() -> None:
    m = cpc_paper()
    assert m.encoder.downsample == 160
    assert [c.kernel_size[0] for c in m.encoder.convs] == [10, 8, 4, 4, 4]
    assert [c.stride[0] for c in m.encoder.convs] == [5, 4, 2, 2, 2]
    assert m.encoder.out_channels == 512
    z, c, fl = m(torch.randn(2, 20480))
    assert z.shape == (2, 128, 512) and c.shape == (2, 128, 256)
    assert fl.tolist() == [128, 128]
    assert m.predict(c).shape == (2, 128, 12, 512)


@pytest.mark.parametrize("n", [160, 161, 319, 3200, 4001, 16079])
def test_frames_are_n_div_160(n: int) -> None:
    m = cpc_small(dim_c=32, n_steps=2, encoder_channels=16)
    z, c, fl = m(torch.randn(1, n))
    assert z.shape[1] == n // 160 == int(fl[0])


@pytest.mark.parametrize("norm", ["none", "batch", "channel"])
def test_norms(norm: str) -> None:
    enc = ConvEncoder([(10, 5, 8), (8, 4, 8)], norm=norm)
    z, fl = enc(torch.randn(3, 400))
    assert z.shape == (3, 20, 8)


@pytest.mark.parametrize("kind", ["gru", "lstm", "transformer"])
def test_context_is_causal(kind: str) -> None:
    torch.manual_seed(0)
    ctx = build_context(kind, 6, 8, num_layers=2).eval()
    z = torch.randn(2, 20, 6)
    z2 = z.clone()
    z2[:, 12:] = torch.randn(2, 8, 6) * 10
    c, c2 = ctx(z), ctx(z2)
    assert torch.allclose(c[:, :12], c2[:, :12], atol=1e-5)
    assert not torch.allclose(c[:, 12:], c2[:, 12:], atol=1e-3)


def test_transformer_takes_any_length() -> None:
    m = build_model(ModelConfig(encoder="tiny", context="transformer", dim_c=32, n_steps=2))
    for n in (3200, 9600, 48000):
        assert m(torch.randn(1, n))[1].shape == (1, n // 160, 32)


@pytest.mark.parametrize("kind", ["gru", "transformer"])
def test_padded_batch_equals_one_at_a_time(kind: str) -> None:
    torch.manual_seed(0)
    m = build_model(ModelConfig(encoder="tiny", context=kind, dim_c=32, n_steps=2)).eval()
    waves = [torch.randn(n) for n in (3000, 5123, 1700)]
    lengths = torch.tensor([len(w) for w in waves])
    x = torch.zeros(3, int(lengths.max()))
    for i, w in enumerate(waves):
        x[i, : len(w)] = w
    with torch.no_grad():
        z, c, fl = m(x, lengths)
        for i, w in enumerate(waves):
            z1, c1, f1 = m(w[None])
            n = int(f1[0])
            assert n == int(fl[i])
            assert torch.allclose(z[i, :n], z1[0], atol=1e-5)
            assert torch.allclose(c[i, :n], c1[0], atol=1e-5)


def test_config_validation_messages() -> None:
    from cpc_seq.config import from_dict
    from cpc_seq.errors import ConfigError

    with pytest.raises(ConfigError, match="model.context"):
        from_dict(ModelConfig, {"context": "rnn"}, prefix="model.")
    with pytest.raises(ConfigError, match="unknown config key model.dimc"):
        from_dict(ModelConfig, {"dimc": 3}, prefix="model.")
    with pytest.raises(ConfigError, match="model.dim_c: expected an integer"):
        from_dict(ModelConfig, {"dim_c": "big"}, prefix="model.")


def test_bf16_autocast_loss_close_to_fp32() -> None:
    """bf16 autocast (CPU here, the same code path on CUDA) stays within 2 % of fp32."""
    from cpc_seq.losses import kstep_infonce

    torch.manual_seed(0)
    m = build_model(ModelConfig(encoder="tiny", dim_c=64, n_steps=4))
    x = torch.randn(4, 6400)
    losses = {}
    for bf16 in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            z, c, fl = m(x)
            out = kstep_infonce(m.predict(c), z, fl, negatives="all")
        assert out.loss.dtype == torch.float32  # scores are softmaxed in fp32
        losses[bf16] = float(out.loss.detach())
    assert abs(losses[True] - losses[False]) / losses[False] < 0.02
