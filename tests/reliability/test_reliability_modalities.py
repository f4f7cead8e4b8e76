"""The README's Reliability guarantees for every modality through the shared engine
(issue 13): an out_dir holding a run is refused without --resume/--overwrite, non-finite
config numbers are errors, SIGKILL then --resume logs the same losses as an
uninterrupted run (text and DIM here; audio in test_reliability.py), checkpoints of the
wrong kind or not checkpoints at all are one-line errors, outputs honour the umask."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.fashion import fake_fashion_mnist
from helpers.runs import logged_losses

from cpc_seq.cli import main
from cpc_seq.errors import CpcSeqError

pytestmark = pytest.mark.usefixtures("one_thread")  # torch on one thread

ROOT = Path(__file__).resolve().parents[2]
DEV = ROOT / "data" / "tiny" / "dev"
KJV_DEV = ROOT / "data" / "text" / "kjv" / "dev"

AUDIO = ["train", f"data.train={DEV}", "data.window=3200", "data.batch_size=4",
         "model.encoder=tiny", "model.encoder_channels=16", "model.dim_c=16", "model.n_steps=3",
         "optim.warmup_steps=2", "loss.n_negatives=8", "train.precision=fp32"]
TEXT = ["text-train", f"data.train={KJV_DEV}", "data.batch_size=4", "model.embed_dim=8",
        "model.dim_c=16", "optim.warmup_steps=2", "model.level=token",
        "model.encoder_layers=[[2,2,16],[2,2,16]]", "model.n_steps=3", "data.window=32",
        "data.short_documents=skip"]
COMMON = ["train.progress=false", "train.threads=1", "train.log_every=1"]
MODALITIES = ["audio", "text", "dim", "amdim"]




@pytest.fixture(scope="module")
def fmnist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fake_fashion_mnist(tmp_path_factory.mktemp("fm"), n_train=32, n_test=32)


def _argv(modality: str, out: Path, fmnist: Path, *extra: str) -> list[str]:
    if modality == "audio":
        base = AUDIO
    elif modality == "text":
        base = TEXT
    else:
        base = ["image-train", f"kind={modality}", "data.dataset=fashion_mnist",
                f"data.root={fmnist}", "data.batch_size=8"]
        base += (["dim.ndf=4", "dim.local_channels=8", "dim.hidden=16", "dim.y_dim=8",
                  "dim.mi_dim=8", "dim.global_hidden=8", "dim.disc_hidden=8"]
                 if modality == "dim" else ["amdim.ndf=4", "amdim.n_rkhs=8"])
    return [*base, *COMMON, f"train.out_dir={out}", *extra]


def _steps(log: Path) -> list[int]:
    return [json.loads(x)["step"] for x in log.read_text().splitlines()]


def _err(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and err.count("error: ") == 1, err
    return err.splitlines()[-1]


@pytest.mark.parametrize("modality", MODALITIES)
def test_out_dir_with_a_run_is_refused_then_resume_or_overwrite(
        tmp_path: Path, fmnist: Path, capsys, modality: str) -> None:
    out = tmp_path / "run"
    assert main(_argv(modality, out, fmnist, "train.steps=2")) == 0
    before = (out / "last.pt").read_bytes(), (out / "log.jsonl").read_text()
    capsys.readouterr()
    assert main(_argv(modality, out, fmnist, "train.steps=3")) == 2
    err = _err(capsys)
    assert "holds an earlier run" in err and "--resume" in err and "--overwrite" in err
    assert ((out / "last.pt").read_bytes(), (out / "log.jsonl").read_text()) == before
    # --resume with no more steps to do is an error, not a silent exit 0
    assert main([*_argv(modality, out, fmnist, "train.steps=2"), "--resume"]) == 2
    assert "is at step 2" in _err(capsys)
    assert main([*_argv(modality, out, fmnist, "train.steps=1"), "--overwrite"]) == 0
    assert _steps(out / "log.jsonl") == [1]  # a fresh log, not appended to the old one
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 1


@pytest.mark.parametrize("modality", MODALITIES)
def test_non_finite_config_numbers_are_errors(tmp_path: Path, fmnist: Path, capsys,
                                              modality: str) -> None:
    for value in ("1e999", ".inf", "-.inf", ".nan"):
        out = tmp_path / value
        assert main(_argv(modality, out, fmnist, "train.steps=2", f"optim.lr={value}")) == 2
        err = _err(capsys)
        assert "optim.lr" in err and "finite" in err, err
        assert not (out / "last.pt").exists()




@pytest.mark.parametrize("modality", ["text", "dim"])
def test_sigkill_then_resume_logs_the_samelogged_losses(tmp_path: Path, fmnist: Path,
                                                  modality: str) -> None:
    steps = 30
    extra = (f"train.steps={steps}", "train.save_every=4")
    ref = tmp_path / "ref"
    assert main(_argv(modality, ref, fmnist, *extra)) == 0
    run = tmp_path / "run"
    args = [sys.executable, "-m", "cpc_seq", *_argv(modality, run, fmnist, *extra)]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        log = run / "log.jsonl"
        if log.exists() and max(logged_losses(log), default=0) >= 10:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert max(logged_losses(run / "log.jsonl")) < steps, "run finished before it could be killed"
    assert torch.load(run / "last.pt", weights_only=True)["step"] % 4 == 0
    subprocess.run([*args, "--resume"], env=env, check=True, capture_output=True)
    got, want = logged_losses(run / "log.jsonl"), logged_losses(ref / "log.jsonl")
    assert _steps(run / "log.jsonl") == list(range(1, steps + 1))  # each step once
    for step in range(1, steps + 1):
        assert got[step] == want[step], f"step {step}: {got[step]} != {want[step]}"


# ------------------------------------------------------------ checkpoints (items 2, 5, 7)


@pytest.fixture(scope="module")
def text_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("text") / "run"
    assert main(_argv("text", out, Path("unused"), "train.steps=1")) == 0
    return out / "last.pt"


def test_checkpoint_of_the_wrong_kind_is_an_error(text_ckpt: Path, tmp_path: Path,
                                                  capsys) -> None:
    capsys.readouterr()
    assert main(["audio", "extract", "--ckpt", str(text_ckpt), "--no-progress", str(DEV),
                 f"ark,scp:{tmp_path}/f.ark,{tmp_path}/f.scp"]) == 2
    err = _err(capsys)
    assert "text_token checkpoint" in err and "audio_cpc" in err
    assert not (tmp_path / "f.scp").exists()


def test_files_that_are_not_checkpoints(tmp_path: Path, capsys) -> None:
    import soundfile as sf

    from cpc_seq.io.checkpoint import save_checkpoint

    files = {"conf.yaml": b"model:\n  dim_c: 16\n", "README": b"# cpc_seq\n\nA toolkit.\n",
             "hello.txt": b"hello world\n", "empty.pt": b""}
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    sf.write(tmp_path / "a.flac", np.zeros(1600, np.float32), 16000)
    (tmp_path / "adir").mkdir()
    save_checkpoint({"kind": "audio_cpc", "config": {}, "model": {}}, tmp_path / "new.pt")
    st = torch.load(tmp_path / "new.pt", weights_only=True)
    st["version"] = 99
    torch.save(st, tmp_path / "new.pt")
    expect = {"conf.yaml": "not a cpc_seq checkpoint (a text file",
              "README": "not a cpc_seq checkpoint (a text file",
              "hello.txt": "not a cpc_seq checkpoint (a text file",
              "empty.pt": "empty file, not a checkpoint",
              "a.flac": "not a cpc_seq checkpoint (an audio file",
              "adir": "is a directory; give the checkpoint file",
              "new.pt": "written by a newer cpc_seq (checkpoint version 99"}
    for name, want in expect.items():
        assert main(["audio", "extract", "--ckpt", str(tmp_path / name), str(DEV),
                     f"npy:{tmp_path / 'o'}"]) == 2
        err = _err(capsys)
        assert f"{tmp_path / name}: {want}" in err, err
        assert "weights_only" not in err and "possibly" not in err


def test_run_ending_without_a_finite_checkpoint(tmp_path: Path, monkeypatch, capsys) -> None:
    import cpc_seq.tasks.kstep as kstep_task

    build = kstep_task.build_loss

    def nan_loss(*a, **k):  # noqa: ANN002, ANN003, ANN202
        real = build(*a, **k)

        def loss(*a, **k):  # noqa: ANN002, ANN003, ANN202
            out = real(*a, **k)
            out.loss = out.loss * float("nan")
            return out

        return loss

    monkeypatch.setattr(kstep_task, "build_loss", nan_loss)
    out = tmp_path / "run"
    assert main(_argv("audio", out, Path("unused"), "train.steps=5",
                      "train.max_bad_steps=2")) == 2
    err = _err(capsys)
    assert "no checkpoint was written" in err and "last.pt" not in err
    assert not (out / "last.pt").exists()


def test_non_finite_weights_are_never_saved(tmp_path: Path) -> None:
    from cpc_seq.audio.train import load_config, make_engine

    eng = make_engine(load_config(None, [*AUDIO[1:], *COMMON, f"train.out_dir={tmp_path}",
                                         "train.steps=1"]))
    with torch.no_grad():
        next(eng.model.parameters()).fill_(float("inf"))
    with pytest.raises(CpcSeqError, match="weights are not finite; .*last.pt was not written"):
        eng.save("last.pt")
    assert not (tmp_path / "last.pt").exists()


# ------------------------------------------------------------ item 10: the umask


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_outputs_honour_the_umask(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        out = tmp_path / "run"
        assert main(_argv("audio", out, Path("unused"), "train.steps=1")) == 0
        assert main(["audio", "extract", "--mfcc", "--no-progress", "--write-num-frames",
                     f"ark,t:{tmp_path}/u2nf", str(DEV),
                     f"ark,scp:{tmp_path}/f.ark,{tmp_path}/f.scp"]) == 0
    finally:
        os.umask(old)
    want = 0o666 & ~umask
    for p in (out / "last.pt", out / "config.yaml", tmp_path / "f.scp", tmp_path / "f.ark",
              tmp_path / "u2nf"):
        assert p.stat().st_mode & 0o777 == want, f"{p}: {oct(p.stat().st_mode & 0o777)}"
