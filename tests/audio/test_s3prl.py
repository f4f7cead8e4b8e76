"""The s3prl upstream expert (cpc_seq.audio.s3prl_expert) against s3prl's interface
contract, without s3prl: list of unpadded 1-D waves in; dict with hidden_states, a list
of equally shaped padded (B, T, H) tensors; get_downsample_rates(key) = 160."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import cpc_seq
from cpc_seq.audio.s3prl_expert import UpstreamExpert, cpc_seq_local
from cpc_seq.cli import main
from cpc_seq.errors import CheckpointError, ConfigError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("s3prl") / "run"
    rc = main(["audio", "train", f"data.train={ROOT / 'data/tiny/dev'}", "data.dev=null",
               "data.window=3200", "data.batch_size=4", "model.encoder=tiny",
               "model.encoder_channels=16", "model.dim_c=16", "model.n_steps=3",
               "train.steps=2", "train.progress=false", "train.threads=1",
               "optim.warmup_steps=1", "train.precision=fp32", f"train.out_dir={out}"])
    assert rc == 0
    return out / "last.pt"


def _wavs():
    g = torch.Generator().manual_seed(0)
    # s3prl feeds 1-3 s of 16 kHz audio; lengths that are not multiples of 160
    return [torch.randn(n, generator=g) * 0.1 for n in (16000, 24321, 9999)]


def test_forward_contract(ckpt: Path) -> None:
    expert = cpc_seq_local(str(ckpt))  # the hub entry s3prl calls
    assert isinstance(expert, torch.nn.Module)
    wavs = _wavs()
    with torch.no_grad():
        out = expert(wavs)
    hs = out["hidden_states"]
    assert isinstance(hs, list) and len(hs) == 2 and expert.layers == ["z", "c"]
    t_max = max(len(w) for w in wavs) // 160
    for h in hs:
        assert h.shape == (3, t_max, 16) and h.dtype == torch.float32
    assert out["last_hidden_state"] is hs[-1]
    assert torch.equal(out["c"], hs[1]) and torch.equal(out["z"], hs[0])
    for key in ("hidden_states", "last_hidden_state", "z", "c"):
        assert expert.get_downsample_rates(key) == 160
    # padding: frames after len // 160 are zero; valid frames equal a batch of one
    for i, w in enumerate(wavs):
        n = len(w) // 160
        single = expert([w])["hidden_states"]
        for h, s in zip(hs, single):
            assert s.shape[1] == n
            assert torch.allclose(h[i, :n], s[0], atol=1e-5)
            assert not h[i, n:].any()
    # the same numbers as the toolkit's own API
    api = cpc_seq.load(ckpt).extract_features(wavs)["hidden_states"]
    assert all(torch.equal(a, b) for a, b in zip(api, hs))


def test_layers_options_and_errors(ckpt: Path, tmp_path: Path) -> None:
    only_c = UpstreamExpert(str(ckpt), model_config="ignored.yaml", layers="c")
    out = only_c(_wavs()[:1])
    assert len(out["hidden_states"]) == 1 and "z" not in out
    rand = UpstreamExpert(str(ckpt), random_init=True)
    a, b = rand(_wavs()[:1])["hidden_states"][1], only_c(_wavs()[:1])["hidden_states"][0]
    assert a.shape == b.shape and not torch.allclose(a, b)
    with pytest.raises(ConfigError, match="choose from z, c"):
        UpstreamExpert(str(ckpt), layers="conv9")
    with pytest.raises(CheckpointError):
        UpstreamExpert(str(tmp_path / "missing.pt"))
    with pytest.raises(ValueError, match="at least one"):
        only_c([])


def test_moves_with_the_module_and_keeps_the_input_device(ckpt: Path) -> None:
    expert = UpstreamExpert(str(ckpt)).to(torch.float32)
    assert any(p.numel() for p in expert.parameters())  # s3prl moves/freezes these
    wavs = [w.double() for w in _wavs()[:2]]  # any float dtype is accepted
    out = expert(wavs)
    assert all(h.device == wavs[0].device for h in out["hidden_states"])
