"""``loss.kind: cotrain`` in audio training: runs, logs its MI, resumes exactly, loads and
extracts codes; the options it cannot honour are config errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import cpc_seq
from cpc_seq.audio.model.cotrain_head import future_windows
from cpc_seq.audio.train import load_config, make_engine
from cpc_seq.cli import main
from cpc_seq.errors import ConfigError
from cpc_seq.text.train import load_text_config

ROOT = Path(__file__).resolve().parents[2]
DEV = ROOT / "data" / "tiny" / "dev"
TINY = [  # as tests/audio/test_train_extract.py
    f"data.train={DEV}", "data.dev=null", "data.window=3200", "data.batch_size=4",
    "model.encoder=tiny", "model.encoder_channels=16", "model.dim_c=16", "model.n_steps=3",
    "train.steps=4", "train.log_every=2", "train.save_every=2", "train.progress=false",
    "train.threads=1", "optim.warmup_steps=2", "train.precision=fp32",
]
K = 8
COTRAIN = ["loss.kind=cotrain", f"loss.cotrain_codes={K}", "loss.cotrain_window=4"]


def _cfg(tmp_path: Path, *extra: str):
    return load_config(None, [*TINY, *COTRAIN, f"train.out_dir={tmp_path / 'run'}", *extra])


def test_future_windows_mean_and_validity() -> None:
    z = torch.arange(2 * 7 * 1, dtype=torch.float32).reshape(2, 7, 1)
    y, valid = future_windows(z, torch.tensor([7, 5]), 3)
    assert y.shape == (2, 4, 1) and valid.shape == (2, 4)
    assert torch.allclose(y[0, :, 0], torch.tensor([2.0, 3.0, 4.0, 5.0]))  # mean z[t+1..t+3]
    assert valid[0].tolist() == [True] * 4 and valid[1].tolist() == [True, True, False, False]


def test_cotrain_trains_logs_mi_in_range_and_resumes_exactly(tmp_path: Path) -> None:
    full = make_engine(_cfg(tmp_path / "a", "train.steps=6", "train.log_every=1"))
    full.run()
    lines = [json.loads(x) for x in (tmp_path / "a" / "run" / "log.jsonl").read_text()
             .splitlines()]
    assert [x["step"] for x in lines] == list(range(1, 7))
    for x in lines:
        assert 0.0 <= x["train/mi_plugin"] <= math.log(K) + 1e-6
        assert -0.05 <= x["train/mi"] <= math.log(K) + 0.05  # the models' estimate
        assert np.isfinite(x["train/loss"]) and "train/acc" not in x
    part = make_engine(_cfg(tmp_path / "b", "train.steps=3", "train.log_every=1"))
    part.run()
    resumed = make_engine(_cfg(tmp_path / "b", "train.steps=6", "train.log_every=1"),
                          resume=True)
    assert resumed.step == 3
    resumed.run()
    names = list(full.model.state_dict())
    assert any(n.startswith("cotrain.") for n in names)
    for (name, p1), p2 in zip(full.model.state_dict().items(),
                              resumed.model.state_dict().values()):
        assert torch.equal(p1, p2), name
    # the code heads and the co-training models are trained
    assert not torch.equal(full.model.cotrain.objective.conditional,
                           torch.zeros(K, K))


def test_cotrain_checkpoint_loads_and_extracts_codes(tmp_path: Path) -> None:
    make_engine(_cfg(tmp_path)).run()
    ckpt = tmp_path / "run" / "last.pt"
    up = cpc_seq.load(ckpt)
    assert up is not None
    out = tmp_path / "codes"
    assert main(["audio", "extract", "--ckpt", str(ckpt), "--layer", "codes", "--no-progress",
                 f"scp:{DEV}/wav.scp", f"npy:{out}"]) == 0
    files = sorted(out.glob("*.npy"))
    assert files
    codes = np.load(files[0])
    assert codes.shape[1] == K and np.allclose(codes.sum(1), 1.0, atol=1e-5)
    assert main(["audio", "extract", "--ckpt", str(ckpt), "--layer", "c", "--no-progress",
                 f"scp:{DEV}/wav.scp", f"npy:{tmp_path / 'c'}"]) == 0
    c = np.load(tmp_path / "c" / files[0].name)
    assert c.shape[0] == codes.shape[0]


def test_cotrain_resume_refuses_other_code_count(tmp_path: Path) -> None:
    make_engine(_cfg(tmp_path, "train.steps=2")).run()
    with pytest.raises(ConfigError, match="loss.cotrain_codes is 4 here but 8"):
        make_engine(_cfg(tmp_path, "train.steps=3", "loss.cotrain_codes=4"), resume=True)


@pytest.mark.parametrize("bad, key", [
    ("loss.negatives=cross_batch", "loss.negatives"),
    ("loss.n_negatives=10", "loss.n_negatives"),
    ("loss.exclude_positive=true", "loss.exclude_positive"),
    ("loss.cross_rank=true", "loss.cross_rank"),
    ("loss.acpc_horizon=20", "loss.acpc_horizon"),
    ("loss.cotrain_codes=1", "loss.cotrain_codes"),
    ("loss.cotrain_beta=1.0", "loss.cotrain_beta"),
    ("loss.cotrain_window=0", "loss.cotrain_window"),
    ("loss.cotrain_window=30", "data.window"),
])
def test_cotrain_config_errors(tmp_path: Path, bad: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as e:
        _cfg(tmp_path, bad)
    assert "\n" not in str(e.value)


def test_cotrain_keys_refused_under_other_kinds(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"loss\.cotrain_codes: only used by loss.kind"):
        load_config(None, [*TINY, "loss.cotrain_codes=16"])
    with pytest.raises(ConfigError, match=r"loss\.kind: cotrain is for audio only"):
        load_text_config(None, ["loss.kind=cotrain"])


def test_codes_in_spans_match_whole_utterance(tmp_path: Path) -> None:
    from cpc_seq.audio.data.kaldi import load_data_dir
    from cpc_seq.audio.extract import run_chunked, run_layers, wave_stats

    make_engine(_cfg(tmp_path, "train.steps=2")).run()
    model = cpc_seq.load(tmp_path / "run" / "last.pt").model
    wave = torch.as_tensor(load_data_dir(DEV).load_audio(load_data_dir(DEV).utts[0])).float()
    whole = run_layers(model, [wave], ["c", "codes"])[0]
    blocks = list(run_chunked(model, lambda a, b: wave[a:b], len(wave), wave_stats(wave),
                              ["codes"], chunk_frames=50))
    spans = torch.cat([b["codes"] for b in blocks])
    assert spans.shape == whole["codes"].shape and spans.shape[1] == K
    torch.testing.assert_close(spans, whole["codes"], atol=1e-4, rtol=0)
