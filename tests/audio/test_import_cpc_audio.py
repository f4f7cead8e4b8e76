"""Importing CPC_audio checkpoints: the fixtures' z and c, everything downstream, bad input.

Uses only ../shared/data/cpc_audio_ckpt (random-weight checkpoints in CPC_audio's format
with the z and c its own code computed) and the embedded tiny corpus; no network.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import cpc_seq
from cpc_seq.audio.model.cpc import build_model
from cpc_seq.audio.model.import_cpc_audio import import_cpc_audio
from cpc_seq.audio.model.load import audio_model_from_state
from cpc_seq.cli import main
from cpc_seq.errors import ConfigError, DataError
from cpc_seq.io.checkpoint import load_checkpoint
from cpc_seq.nn.relpos import RelPosCausalLayer

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT.parent / "shared" / "data" / "cpc_audio_ckpt"
DEV = ROOT / "data" / "tiny" / "dev"
A, B = FIX / "cpc_default_h32", FIX / "cpc2_2lstm_h64"
ATOL = RTOL = 1e-4  # the fixture README's suggested check


def _wave() -> torch.Tensor:
    return torch.from_numpy(np.load(FIX / "input" / "wave_1p6s_16k.npy"))


def _close(got: torch.Tensor | np.ndarray, ref: np.ndarray) -> None:
    got = np.asarray(got)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=ATOL, rtol=RTOL)


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("imported")
    paths = {"A": out / "a.pt", "B": out / "b.pt", "B1": out / "b1.pt"}
    assert main(["audio", "import-checkpoint", "--from", "cpc_audio", str(A / "checkpoint_0.pt"),
                 str(paths["A"])]) == 0
    import_cpc_audio(B / "checkpoint_0.pt", paths["B"])
    import_cpc_audio(B / "checkpoint_0.pt", paths["B1"], ar_level=1)
    return paths


@pytest.mark.parametrize("kernels", ["auto", "reference"])
@pytest.mark.parametrize("name, ref_c", [("A", "ref_c.npy"), ("B", "ref_c.npy"),
                                         ("B1", "ref_c_level1.npy")])
def test_z_and_c_match_cpc_audio(imported: dict[str, Path], name: str, ref_c: str,
                                 kernels: str) -> None:
    state = load_checkpoint(imported[name])
    if "kernels" in state["config"]["model"]:  # CPU speed kernels, or plain torch code
        state["config"]["model"]["kernels"] = kernels
    model = audio_model_from_state(state, imported[name])
    d = A if name == "A" else B
    with torch.no_grad():
        z, c, _ = model(model.normalize_input(_wave()[None]))
    _close(z[0], np.load(d / "ref_z.npy"))
    _close(c[0], np.load(d / ref_c))


def test_imported_checkpoint_is_plain(imported: dict[str, Path]) -> None:
    raw = torch.load(imported["B"], weights_only=True)
    cfg = raw["config"]["model"]
    assert cfg["encoder_norm"] == "channel_unbiased" and cfg["input_norm"] == "none"
    assert cfg["context"] == "lstm" and cfg["context_layers"] == 2 and cfg["dim_c"] == 64
    assert cfg["predictor"] == "relpos_transformer_shared" and cfg["predictor_window"] == 116
    assert cfg["predictor_dropout"] == 0.5
    assert raw["imported"]["heads"] == "imported"
    assert raw["config"]["loss"]["negatives"] == "cross_batch"
    assert load_checkpoint(imported["B1"])["imported"]["heads"] == "fresh"
    cfg_a = torch.load(imported["A"], weights_only=True)["config"]["model"]
    assert cfg_a["predictor"] == "relpos_transformer" and cfg_a["predictor_dropout"] == 0.0


def test_heads_are_the_checkpoints(imported: dict[str, Path]) -> None:
    crit = torch.load(B / "checkpoint_0.pt", weights_only=True)["cpcCriterion"]
    model = load_checkpoint(imported["B"])["model"]
    torch.testing.assert_close(model["heads.layer.rel"],
                               crit["wPrediction.predictor.0.multihead.Att.Krelpos"])
    torch.testing.assert_close(model["heads.layer.ff2.weight"],
                               crit["wPrediction.predictor.0.ffnetwork.lin2.weight"])
    m = audio_model_from_state(load_checkpoint(imported["A"]), imported["A"])
    with torch.no_grad():
        pred = m.predict(torch.randn(2, 30, 32))
    assert pred.shape == (2, 30, 12, 32) and torch.isfinite(pred).all()


def test_relative_positions_as_cpc_audio_describes() -> None:
    """Within the window, query i scores key j <= i with q_i . r[:, W-1-(i-j)] added
    (what CPC_audio's padded-and-reshaped table computes), scaled with the dot product."""
    torch.manual_seed(0)
    w, dim, heads = 6, 16, 2
    layer = RelPosCausalLayer(dim, heads, 32, w).eval()
    x = torch.randn(1, w, dim)
    dk = dim // heads
    q = layer.q(x).view(1, w, heads, dk).transpose(1, 2)[0]
    k = layer.k(x).view(1, w, heads, dk).transpose(1, 2)[0]
    v = layer.v(x).view(1, w, heads, dk).transpose(1, 2)[0]
    qp = q @ layer.rel  # (H, W, W)
    padded = torch.cat([torch.zeros(heads, w, 1), qp], dim=2).reshape(heads, w + 1, w)[:, 1:]
    mask = torch.triu(torch.full((w, w), float("-inf")), diagonal=1)
    att = torch.softmax((q @ k.transpose(1, 2) + padded) / math.sqrt(dk) + mask, dim=-1)
    ref = layer.o((att @ v).transpose(0, 1).reshape(1, w, dim))
    torch.testing.assert_close(layer.attention(x), ref, atol=1e-6, rtol=1e-5)


def test_downstream_load_upstream_and_extract(imported: dict[str, Path], tmp_path: Path
                                              ) -> None:
    up = cpc_seq.load(imported["B"])
    out = up.extract_features([_wave()])
    _close(out["hidden_states"][0][0], np.load(B / "ref_z.npy"))
    _close(out["hidden_states"][1][0], np.load(B / "ref_c.npy"))
    data = tmp_path / "data"
    data.mkdir()
    (data / "wav.scp").write_text(f"utt1 {FIX / 'input' / 'wave_1p6s_16k.wav'}\n")
    for layer, ref in (("c", "ref_c.npy"), ("z", "ref_z.npy")):
        assert main(["audio", "extract", "--ckpt", str(imported["B"]), "--layer", layer,
                     "--no-progress", f"scp:{data}/wav.scp", f"npy:{tmp_path / layer}"]) == 0
        _close(np.load(tmp_path / layer / "utt1.npy"), np.load(B / ref))
    assert main(["audio", "extract", "--ckpt", str(imported["A"]), "--layer", "conv3", "--no-progress",
                 f"scp:{data}/wav.scp",
                 f"ark,scp:{tmp_path}/c3.ark,{tmp_path}/c3.scp"]) == 0
    import kaldiio

    conv3 = kaldiio.load_scp(str(tmp_path / "c3.scp"))["utt1"]
    assert conv3.shape == (640, 32)


def _args(tmp_path: Path, src: Path, **changes: object) -> Path:
    d = tmp_path / "ck"
    d.mkdir(exist_ok=True)
    shutil.copy(src / "checkpoint_0.pt", d / "checkpoint_0.pt")
    args = json.loads((src / "checkpoint_args.json").read_text())
    args.update(changes)
    (d / "checkpoint_args.json").write_text(json.dumps(args))
    return d / "checkpoint_0.pt"


def _fails(argv: list[str], capsys: pytest.CaptureFixture[str], out: Path, *words: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    for w in words:
        assert w in err, err
    assert not out.exists() and not list(out.parent.glob(out.name + "*"))


def test_bad_input_is_one_line_and_writes_nothing(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out" / "x.pt"
    cmd = ["audio", "import-checkpoint", "--from", "cpc_audio"]
    trunc = tmp_path / "t" / "checkpoint_0.pt"
    trunc.parent.mkdir()
    trunc.write_bytes((A / "checkpoint_0.pt").read_bytes()[:100_000])
    shutil.copy(A / "checkpoint_args.json", trunc.parent)
    _fails([*cmd, str(trunc), str(out)], capsys, out, "truncated")
    _fails([*cmd, str(A / "checkpoint_args.json"), str(out)], capsys, out, "not a readable")
    lone = tmp_path / "lone" / "checkpoint_0.pt"
    lone.parent.mkdir()
    shutil.copy(A / "checkpoint_0.pt", lone)
    _fails([*cmd, str(lone), str(out)], capsys, out, "checkpoint_args.json", "--args")
    _fails([*cmd, str(_args(tmp_path, A, hiddenEncoder=48, hiddenGar=48)), str(out)], capsys, out,
           "gEncoder.conv0.weight", "(32, 1, 10)", "(48, 1, 10)")
    _fails([*cmd, str(_args(tmp_path, A, arMode="transformer")), str(out)], capsys, out,
           "arMode transformer")
    _fails([*cmd, str(_args(tmp_path, A, normMode="instanceNorm")), str(out)], capsys, out,
           "normMode instanceNorm")
    _fails([*cmd, str(_args(tmp_path, A, rnnMode="ffd")), str(out)], capsys, out,
           "rnnMode ffd", "--no-heads")
    _fails([*cmd, str(_args(tmp_path, A, nLevelsGRU=2)), str(out)], capsys, out,
           "gAR.baseNet", "lacks")
    _fails([*cmd, "--ar-level", "3", str(B / "checkpoint_0.pt"), str(out)], capsys, out,
           "--ar-level 3")
    cpc_seq_ckpt = tmp_path / "ours.pt"
    import_cpc_audio(A / "checkpoint_0.pt", cpc_seq_ckpt)
    _fails([*cmd, str(cpc_seq_ckpt), str(out)], capsys, out, "already a cpc_seq")


def test_no_heads_and_hub_container(tmp_path: Path) -> None:
    ck = _args(tmp_path, A, rnnMode="ffd")
    rec = import_cpc_audio(ck, tmp_path / "nh.pt", heads=False)
    assert rec["heads"] == "fresh"
    raw = torch.load(A / "checkpoint_0.pt", weights_only=True)
    args = json.loads((A / "checkpoint_args.json").read_text())
    hub = tmp_path / "hub.pt"
    torch.save({"config": args, "weights": raw["gEncoder"]}, hub)
    rec = import_cpc_audio(hub, tmp_path / "hub_out.pt")
    assert rec["heads"] == "fresh"  # the hub file has no prediction network
    up = cpc_seq.load(tmp_path / "hub_out.pt")
    _close(up.extract_features([_wave()])["hidden_states"][1][0], np.load(A / "ref_c.npy"))
    with pytest.raises(DataError):
        import_cpc_audio(tmp_path / "missing.pt", tmp_path / "o.pt")
    with pytest.raises(ConfigError):
        import_cpc_audio(_args(tmp_path, A, encoder_type="mfcc"), tmp_path / "o.pt")
    assert not (tmp_path / "o.pt").exists()


def _train_args(out: Path) -> list[str]:
    from cpc_seq.audio.train import DataConfig

    extra = ["data.num_workers=0"] if "num_workers" in {
        f.name for f in dataclasses.fields(DataConfig)} else []
    return [f"data.train={DEV}", "data.dev=null", "data.window=3200", "data.batch_size=2",
            "train.steps=2", "train.log_every=1", "train.save_every=2", "train.progress=false",
            "train.threads=1", "optim.warmup_steps=1", "train.precision=fp32",
            f"train.out_dir={out}", *extra]


def test_train_init_from_imported(imported: dict[str, Path], tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "ft"
    assert main(["audio", "train", "--init-from", str(imported["A"]), *_train_args(run)]) == 0
    err = capsys.readouterr().err
    assert "prediction heads from the checkpoint" in err
    start = load_checkpoint(imported["A"])["model"]
    tuned = load_checkpoint(run / "last.pt")
    assert tuned["config"]["model"]["input_norm"] == "none"
    for key in ("encoder.convs.0.weight", "heads.layers.3.rel"):
        diff = (tuned["model"][key] - start[key]).abs().max()
        assert 0 < diff < 0.05, key  # started there and moved
    run2 = tmp_path / "ft2"
    assert main(["audio", "train", "--init-from", str(imported["A"]), *_train_args(run2),
                 "model.predictor=linear"]) == 0
    assert "fresh prediction heads" in capsys.readouterr().err
    assert tuned["model"]["encoder.norms.0.weight"].shape == (32,)
    run3 = tmp_path / "ft3"
    assert main(["audio", "train", "--init-from", str(imported["A"]), *_train_args(run3),
                 "model.context=gru"]) == 2
    err = capsys.readouterr().err.strip()
    assert "model.context" in err and "\n" not in err and not run3.exists()


def test_fresh_model_still_normalises() -> None:
    from cpc_seq.audio.model.cpc import ModelConfig

    m = build_model(ModelConfig(encoder="tiny", encoder_channels=8, dim_c=8, n_steps=2))
    x = torch.randn(1, 800) * 5 + 3
    y = m.normalize_input(x)
    assert abs(float(y.mean())) < 1e-4 and abs(float(y.std()) - 1) < 1e-3
