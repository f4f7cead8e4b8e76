"""Reliability: crash and resume with SIGKILL, non-finite steps, hostile parsers input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers.runs import logged_losses
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cpc_seq.errors import CpcSeqError
from cpc_seq.io.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]
DEV = ROOT / "data" / "tiny" / "dev"

TINY = [
    f"data.train={DEV}", "data.window=3200", "data.batch_size=4", "model.encoder=tiny",
    "model.encoder_channels=16", "model.dim_c=16", "model.n_steps=3", "train.progress=false",
    "train.threads=1", "optim.warmup_steps=2", "train.log_every=1", "loss.negatives=cross_batch",
    "train.precision=fp32",
    "loss.n_negatives=8",
]




def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    steps = 24
    ref = tmp_path / "ref"
    subprocess.run([sys.executable, "-m", "cpc_seq", "audio", "train", *TINY, f"train.steps={steps}",
                    "train.save_every=5", f"train.out_dir={ref}"], env=env, check=True,
                   capture_output=True)
    run = tmp_path / "run"
    args = [sys.executable, "-m", "cpc_seq", "audio", "train", *TINY, f"train.steps={steps}",
            "train.save_every=5", f"train.out_dir={run}"]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    # kill at an arbitrary point after the second checkpoint (step 10), before the end
    while time.time() < deadline:
        log = run / "log.jsonl"
        if log.exists() and max(logged_losses(log), default=0) >= 12:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = max(logged_losses(run / "log.jsonl"))
    assert killed_at < steps, "run finished before it could be killed"
    assert load_checkpoint(run / "last.pt")["step"] in (10, 15, 20)
    subprocess.run([*args, "--resume"], env=env, check=True, capture_output=True)
    got, want = logged_losses(run / "log.jsonl"), logged_losses(ref / "log.jsonl")
    assert sorted(got) == list(range(1, steps + 1))
    for step in range(1, steps + 1):
        assert got[step] == want[step], f"step {step}: {got[step]} != {want[step]}"


def test_non_finite_steps_are_skipped_then_stop(tmp_path: Path, monkeypatch, capsys) -> None:
    import cpc_seq.audio.train as train_mod
    import cpc_seq.tasks.kstep as kstep_task

    build = kstep_task.build_loss
    calls = {"n": 0}

    def flaky_loss(*a, **k):  # noqa: ANN002, ANN003, ANN202
        real = build(*a, **k)

        def flaky(*a, **k):  # noqa: ANN002, ANN003, ANN202
            out = real(*a, **k)
            if not torch.is_grad_enabled():  # the checkpoint's probe batch, not a step
                return out
            calls["n"] += 1
            if calls["n"] in (3, 4) or calls["n"] >= 7:
                out.loss = out.loss * float("nan")
            return out

        return flaky

    monkeypatch.setattr(kstep_task, "build_loss", flaky_loss)
    cfg = train_mod.load_config(None, [*TINY, "train.steps=20", "train.save_every=2",
                                       "train.max_bad_steps=3", f"train.out_dir={tmp_path}"])
    trainer = train_mod.make_engine(cfg)
    with pytest.raises(CpcSeqError, match="non-finite steps in a row"):
        trainer.run()
    err = capsys.readouterr().err
    assert err.count("non-finite loss or gradient; step skipped") == 5
    st_ = load_checkpoint(tmp_path / "last.pt")
    assert st_["step"] == 4  # steps 1-2, two skipped, steps 3-4, then three bad in a row
    assert all(torch.isfinite(v).all() for v in st_["model"].values())


def test_nan_audio_names_the_utterance(tmp_path: Path) -> None:
    import numpy as np
    import soundfile as sf

    from cpc_seq.audio.data.kaldi import load_data_dir

    d = tmp_path / "d"
    d.mkdir()
    wav = np.zeros(3200, dtype=np.float32)
    wav[100] = np.nan
    sf.write(d / "a.wav", wav, 16000, subtype="FLOAT")
    (d / "wav.scp").write_text(f"spk-a {d / 'a.wav'}\n")
    (d / "utt2spk").write_text("spk-a spk\n")
    with pytest.raises(CpcSeqError, match="spk-a"):
        load_data_dir(d).load_audio("spk-a")


# ---------------------------------------------------------------- property-based

CASES = 150
_text = st.text(alphabet=st.sampled_from(list("ab12 -_.\t\n:|#\u00e9")), max_size=120)
_lines = st.lists(st.text(alphabet=st.sampled_from(list("abc12 -.|")), max_size=20), max_size=8)


def _check_message(e: CpcSeqError, name: str) -> None:
    msg = str(e)
    assert name in msg, msg
    assert "\n" not in msg.strip()


@settings(max_examples=CASES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(wav=_text, utt2spk=_text, text=_text)
def test_data_dir_parser_only_raises_own_errors(tmp_path: Path, wav: str, utt2spk: str,
                                                text: str) -> None:
    from cpc_seq.audio.data.kaldi import load_data_dir

    d = tmp_path / "dd"
    d.mkdir(exist_ok=True)
    for name, content in (("wav.scp", wav), ("utt2spk", utt2spk), ("text", text)):
        (d / name).write_text(content)
    try:
        dd = load_data_dir(d)
        assert len(dd.utts) == len(set(dd.utts))
    except CpcSeqError as e:
        _check_message(e, str(d))


@settings(max_examples=CASES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(labels=_lines, phones=_lines)
def test_label_parser_only_raises_own_errors(tmp_path: Path, labels: list[str],
                                             phones: list[str]) -> None:
    from cpc_seq.audio.data.kaldi import read_frame_labels, read_phone_table

    lp, pp = tmp_path / "labels.txt", tmp_path / "phones.txt"
    lp.write_text("\n".join(labels))
    pp.write_text("\n".join(phones))
    try:
        table = read_phone_table(pp)
    except CpcSeqError as e:
        _check_message(e, "phones.txt")
        table = None
    try:
        read_frame_labels(lp, table)
    except CpcSeqError as e:
        _check_message(e, "labels.txt")


@settings(max_examples=CASES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(max_size=200))
def test_feature_scp_reader_only_raises_own_errors(tmp_path: Path, content: bytes) -> None:
    from cpc_seq.io.features import read_features

    p = tmp_path / "feats.scp"
    p.write_bytes(content)
    try:
        read_features(f"scp:{p}")
    except CpcSeqError as e:
        _check_message(e, "feats.scp")


_scalar = st.one_of(st.integers(-5, 10**6), st.floats(allow_nan=True), st.text(max_size=8),
                    st.booleans(), st.none(), st.lists(st.integers(), max_size=3))
_keys = st.sampled_from(["model.dim_c", "model.context", "model.encoder", "data.window",
                         "data.batch_size", "loss.negatives", "optim.lr", "train.steps",
                         "train.precision", "model.bogus", "nosection", "train.device",
                         "model.encoder_layers", "optim.warmup_steps"])


@settings(max_examples=CASES * 2, deadline=None)
@given(items=st.lists(st.tuples(_keys, _scalar), max_size=4))
def test_config_parser_only_raises_own_errors(items: list[tuple[str, object]]) -> None:
    from cpc_seq.audio.train import load_config
    from cpc_seq.errors import ConfigError

    overrides = [f"{k}={json.dumps(v)}" for k, v in items]
    try:
        load_config(None, overrides)
    except ConfigError as e:
        msg = str(e)
        assert "\n" not in msg
        assert any(k.split(".")[-1] in msg for k, _ in items) or "override" in msg, msg

