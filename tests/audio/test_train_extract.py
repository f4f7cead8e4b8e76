"""Training, checkpoints, resume, extraction and the command line, on the embedded corpus."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import torch

import cpc_seq
from cpc_seq.audio.train import load_config, make_engine
from cpc_seq.cli import main
from cpc_seq.errors import CheckpointError, ConfigError
from cpc_seq.io.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]
DEV = ROOT / "data" / "tiny" / "dev"

TINY = [
    f"data.train={DEV}", "data.dev=null", "data.window=3200", "data.batch_size=4",
    "model.encoder=tiny", "model.encoder_channels=16", "model.dim_c=16", "model.n_steps=3",
    "train.steps=4", "train.log_every=2", "train.save_every=2", "train.progress=false",
    "train.threads=1", "optim.warmup_steps=2", "train.precision=fp32",
]


def _cfg(tmp_path: Path, *extra: str):
    return load_config(None, [*TINY, f"train.out_dir={tmp_path / 'run'}", *extra])


def test_train_writes_checkpoint_with_config_and_logs(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    metrics = make_engine(cfg).run()
    out = tmp_path / "run"
    assert {"last.pt", "config.yaml", "log.jsonl"} <= {p.name for p in out.iterdir()}
    assert (out / "tb").is_dir()
    st = load_checkpoint(out / "last.pt")
    assert st["step"] == 4 and st["config"]["model"]["encoder"] == "tiny"
    assert "speed/audio_sec_per_sec" in metrics and metrics["speed/audio_sec_per_sec"] > 0
    lines = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [2, 4]
    assert "step_mi/k03" in lines[0]


def test_resume_continues_exactly(tmp_path: Path) -> None:
    full = make_engine(_cfg(tmp_path / "a", "train.steps=6"))
    full.run()
    part = make_engine(_cfg(tmp_path / "b", "train.steps=3"))
    part.run()
    resumed = make_engine(_cfg(tmp_path / "b", "train.steps=6"), resume=True)
    assert resumed.step == 3
    resumed.run()
    for (name, p1), p2 in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(p1, p2), name


def test_best_checkpoint_tracks_dev_loss(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, f"data.dev={DEV}", "train.eval_every=2", "train.eval_windows=8")
    make_engine(cfg).run()
    st = load_checkpoint(tmp_path / "run" / "best.pt")
    assert np.isfinite(st["best_dev"])


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown config key train.stepz"):
        _cfg(tmp_path, "train.stepz=3")
    with pytest.raises(ConfigError, match="train.steps: expected an integer"):
        _cfg(tmp_path, "train.steps=abc")
    with pytest.raises(ConfigError, match="data.window"):
        _cfg(tmp_path, "data.window=100")


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["audio", "train", *TINY, "train.bogus=1"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: unknown config key train.bogus")
    assert "\n" not in err
    rc = main(["audio", "train", *TINY, f"train.out_dir={tmp_path}", "data.window=80000",
               "data.short_utterances=error"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "shorter than the training window" in err and "utterance" in err


def test_missing_audio_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "data"
    shutil.copytree(DEV, d)
    wav = (d / "wav.scp").read_text().splitlines()
    utt = wav[0].split()[0]
    wav[0] = f"{utt} /nonexistent/{utt}.flac"
    (d / "wav.scp").write_text("\n".join(wav) + "\n")
    rc = main(["audio", "train", *TINY, f"data.train={d}", f"train.out_dir={tmp_path / 'r'}"])
    err = capsys.readouterr().err
    assert rc == 2 and utt in err and "nonexistent" in err


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("trained")
    make_engine(_cfg(tmp)).run()
    return tmp / "run" / "last.pt"


def test_extract_ark_scp_matches_api_and_labels(trained: Path, tmp_path: Path) -> None:
    out = tmp_path / "feats"
    rc = main(["audio", "extract", "--ckpt", str(trained), "--layer", "c", "--no-progress",
               "--batch-seconds", "8",
               "--write-num-frames", f"ark,t:{out}/utt2num_frames",
               f"scp:{DEV}/wav.scp", f"ark,scp:{out}/c.ark,{out}/c.scp"])
    assert rc == 0
    feats = dict(kaldiio.load_scp(str(out / "c.scp")))
    from cpc_seq.audio.data.kaldi import load_data_dir, read_frame_labels, read_phone_table

    dd = load_data_dir(DEV)
    assert sorted(feats) == dd.utts
    up = cpc_seq.load(trained)
    utts = dd.utts[:3]
    waves = [dd.load_audio(u) for u in utts]
    api = up.extract_features(waves)
    assert api["downsample_rate"] == 160 and len(api["hidden_states"]) == 2
    for i, u in enumerate(utts):
        n = int(api["lengths"][i])
        np.testing.assert_allclose(feats[u], api["hidden_states"][1][i, :n].numpy(), atol=1e-5)
        single = up.extract_features([waves[i]])["hidden_states"][1][0]
        np.testing.assert_allclose(single.numpy(), feats[u], atol=1e-5)
    labels = read_frame_labels(DEV / "phone_frames.txt", read_phone_table(DEV.parent / "phones.txt"))
    nf = dict(line.split() for line in (out / "utt2num_frames").read_text().splitlines())
    for u in dd.utts:
        assert feats[u].shape[0] == len(labels[u]) == int(nf[u])


def test_extract_device_option(trained: Path, tmp_path: Path, capsys) -> None:
    base = ["extract", "--ckpt", str(trained), "--no-progress", f"scp:{DEV}/wav.scp"]
    rc = main([*base[:-1], "--device", "cpu", "--batch-seconds", "0", base[-1],
               f"npy:{tmp_path / 'npy'}"])
    err = capsys.readouterr().err
    assert rc == 0 and "x real time" in err and len(list((tmp_path / "npy").glob("*.npy"))) > 0
    assert main([*base[:-1], "--device", "tpu", base[-1], f"npy:{tmp_path / 'x'}"]) == 2
    assert "--device: expected auto, cpu, cuda or cuda:N, got 'tpu'" in capsys.readouterr().err
    assert main([*base[:-1], "--batch-seconds", "-1", base[-1], f"npy:{tmp_path / 'y'}"]) == 2
    assert "--batch-seconds must be positive" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main([*base[:-1], "--device", "cuda", base[-1], f"npy:{tmp_path / 'z'}"]) == 2
        assert "CUDA is not available" in capsys.readouterr().err
        assert not (tmp_path / "z").exists()  # nothing half-written


def test_extract_resumes_after_partial_run(trained: Path, tmp_path: Path) -> None:
    out = tmp_path / "f"
    args = ["extract", "--ckpt", str(trained), "--layer", "z", "--no-progress",
            f"scp:{DEV}/wav.scp", f"ark,scp:{out}/z.ark,{out}/z.scp"]
    assert main(args) == 0
    ref = {k: v.copy() for k, v in kaldiio.load_scp(str(out / "z.scp")).items()}
    # Simulate a crash: keep the partial record of 5 entries plus half an entry of junk.
    entries = [line.split() for line in (out / "z.scp").read_text().splitlines()]
    entries.sort(key=lambda e: int(e[1].rsplit(":", 1)[1]))  # ark order
    lines = [f"{utt} {val} 0" for utt, val in entries[:5]]
    (out / "z.scp").unlink()
    ark_end = 0
    with open(out / "z.ark", "rb") as f:
        data = f.read()
    for i, line in enumerate(lines):  # recompute entry ends from the reference arrays
        utt, val, _ = line.split()
        off = int(val.rsplit(":", 1)[1])
        ark_end = off + 15 + ref[utt].nbytes  # header: "\0B" + "FM " + 2x(1+4 bytes)
        lines[i] = f"{utt} {val} {ark_end}"
    with open(out / "z.ark", "wb") as f:
        f.write(data[: ark_end + 100])  # truncated tail of the next entry
    (out / "z.scp.partial").write_text("\n".join(lines) + "\n")
    assert main([*args[:1], "--skip-existing", *args[1:]]) == 0
    got = kaldiio.load_scp(str(out / "z.scp"))
    assert sorted(got) == sorted(ref)
    for k in ref:
        np.testing.assert_array_equal(got[k], ref[k])
    assert not (out / "z.scp.partial").exists()


def test_extract_npy_and_random_init(trained: Path, tmp_path: Path) -> None:
    out = tmp_path / "npy"
    assert main(["audio", "extract", "--ckpt", str(trained), "--random-init", "--layer", "z",
                 "--no-progress", f"scp:{DEV}/wav.scp", f"npy:{out}"]) == 0
    files = sorted(out.glob("*.npy"))
    assert len(files) == len(list((DEV / "wav.scp").read_text().splitlines()))
    rand_z = np.load(files[0])
    assert rand_z.ndim == 2 and rand_z.shape[1] == 16
    from cpc_seq.audio.data.kaldi import load_data_dir

    wave = load_data_dir(DEV).load_audio(files[0].stem)
    trained_z = cpc_seq.load(trained).extract_features([wave])["hidden_states"][0][0].numpy()
    assert trained_z.shape == rand_z.shape
    assert not np.allclose(trained_z, rand_z, atol=1e-3)  # --random-init really is not the checkpoint


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # the hand-made pickle below
def test_checkpoint_with_code_is_refused(tmp_path: Path) -> None:
    import pickle

    class Evil:
        def __reduce__(self):  # noqa: ANN204
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"format": "cpc_seq", "config": {}, "model": Evil()}, f)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(path)
    torch.save({"format": "cpc_seq", "config": {}, "model": Evil()}, path)
    with pytest.raises(CheckpointError, match="refused"):
        cpc_seq.load(path)


def test_probe_and_table_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    feats = tmp_path / "mfcc"
    assert main(["audio", "extract", "--mfcc", "--no-progress", f"scp:{DEV}/wav.scp",
                 f"ark,scp:{feats}.ark,{feats}.scp"]) == 0
    out = tmp_path / "probe"
    rc = main(["audio", "probe", "phone", "--no-progress", "--epochs", "5", "--batch-size", "128",
               "--train-feats", f"scp:{feats}.scp", "--test-feats", f"scp:{feats}.scp",
               "--labels", str(DEV / "phone_frames.txt"),
               "--phones", str(DEV.parent / "phones.txt"), "--out", str(out), "--name", "MFCC"])
    assert rc == 0
    res = json.loads((out / "result.json").read_text())
    assert res["feature_dim"] == 39 and 0.2 < res["accuracy"] <= 1.0
    assert (out / "confusion.png").stat().st_size > 0 and (out / "confusion.csv").exists()
    capsys.readouterr()
    assert main(["table", str(out / "result.json")]) == 0
    assert "| MFCC |" in capsys.readouterr().out


def test_resume_may_switch_kernels_but_not_the_model(tmp_path: Path) -> None:
    make_engine(_cfg(tmp_path, "train.steps=2")).run()
    again = make_engine(_cfg(tmp_path, "train.steps=3", "model.kernels=reference"), resume=True)
    assert again.step == 2
    again.run()
    with pytest.raises(ConfigError, match=r"model.dim_c is 8 here but"):
        make_engine(_cfg(tmp_path, "train.steps=4", "model.dim_c=8"), resume=True)
