"""Recipes: --help, data preparation, and every LibriSpeech stage on the shared sample."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"
RECIPES = ["tiny", "fsdd", "librispeech", "text", "dim_fashion_mnist", "amdim_fashion_mnist",
           "amdim_cifar10"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env["PATH"]
    env["PYTHONPATH"] = str(ROOT)
    return env


@pytest.mark.parametrize("recipe", RECIPES)
def test_help_and_unknown_option(recipe: str) -> None:
    run = ROOT / "recipes" / recipe / "run.sh"
    out = subprocess.run(["bash", str(run), "--help"], capture_output=True, text=True, env=_env())
    assert out.returncode == 0 and "--stage" in out.stdout and "stage 1" in out.stdout
    bad = subprocess.run(["bash", str(run), "--bogus", "1"], capture_output=True, text=True,
                         env=_env())
    assert bad.returncode == 2 and "unknown option --bogus" in bad.stderr


@pytest.mark.skipif(not (SHARED / "fsdd").is_dir(), reason="../shared/data/fsdd not present")
def test_fsdd_prepare(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "recipes/fsdd/local/prepare_data.py"), str(SHARED / "fsdd"),
         str(tmp_path)], capture_output=True, text=True, env=_env(), check=True)
    assert "2700 train / 300 test" in out.stdout
    from cpc_seq.audio.data.kaldi import load_data_dir, read_frame_labels, read_phone_table

    dd = load_data_dir(tmp_path / "train")
    assert len(dd.utts) == 2700 and len(set(dd.utt2spk.values())) == 6
    labels = read_frame_labels(tmp_path / "test/phone_frames.txt",
                               read_phone_table(tmp_path / "phones.txt"))
    assert all(int(u.rsplit("-", 1)[1]) < 5 for u in labels)


LS = SHARED / "librispeech-sample"


@pytest.mark.skipif(not LS.is_dir(), reason="../shared/data/librispeech-sample not present")
def test_librispeech_all_stages_on_sample(tmp_path: Path) -> None:
    env = _env()
    env["TRAIN_OVERRIDES"] = ("train.steps=2 model.encoder=tiny model.encoder_channels=32 "
                              "model.dim_c=32 model.n_steps=3 data.window=3200 "
                              "train.progress=false train.threads=1")
    env["CTC_OPTS"] = "--epochs 2 --hidden 16 --layers 1 --threads 1"
    exp = tmp_path / "exp"
    cmd = ["bash", str(ROOT / "recipes/librispeech/run.sh"), "--db", str(LS), "--align", str(LS),
           "--exp", str(exp)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    # data preparation: 9 utterances with audio, 2 of the 6 label lines have audio
    data = exp / "data"
    assert len((data / "all/wav.scp").read_text().splitlines()) == 9
    assert len((data / "labels.txt").read_text().splitlines()) == 2
    assert len((data / "phones.txt").read_text().splitlines()) == 41
    assert (data / "test_split.txt").read_text().split() == [
        "4051-11218-0044", "5678-43303-0032", "6476-57446-0019"]
    table = (exp / "table.md").read_text()
    assert "| CPC c | phone (linear) | 32 |" in table
    assert "speaker-window" in table
    # CTC phone recogniser: one labelled train and one labelled test utterance here
    ctc = (exp / "ctc.md").read_text()
    assert "| CPC c | CTC BiLSTM 1x16 | 32 |" in ctc and "| MFCC+d+dd (CMVN) |" in ctc
    assert "| random-init c |" in ctc and "phone error rate" in out.stderr
    for n in range(7):
        assert (exp / f".done.{n}").exists()
    # a rerun skips every finished stage
    again = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert again.returncode == 0 and again.stderr.count("already done") == 7


@pytest.mark.parametrize("recipe,kind", [("dim_fashion_mnist", "DIM"),
                                         ("amdim_fashion_mnist", "AMDIM")])
def test_image_recipe_all_stages_on_fake_data(tmp_path: Path, recipe: str, kind: str) -> None:
    from helpers.fashion import fake_fashion_mnist

    data = fake_fashion_mnist(tmp_path / "fm", n_train=40, n_test=20)
    env = _env()
    env["TRAIN_OVERRIDES"] = ("train.steps=2 data.batch_size=8 train.progress=false "
                              "dim.ndf=8 amdim.ndf=8 amdim.n_rkhs=32")
    env["PROBE_OPTS"] = "--epochs 1"
    exp = tmp_path / "exp"
    cmd = ["bash", str(ROOT / "recipes" / recipe / "run.sh"), "--data", str(data),
           "--exp", str(exp), "--threads", "1"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    table = (exp / "table.md").read_text()
    assert f"| {kind} " in table and "(random init)" in table and "| raw pixels |" in table
    lines = (exp / kind.lower() / "log.jsonl").read_text().splitlines()
    assert '"step": 2' in lines[-1]
    again = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert again.returncode == 0 and again.stderr.count("already done") == 3
