"""CTC phone-recogniser probe (cpc_seq.probes.ctc) on small synthetic data."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from cpc_seq.audio.cli.ctc import register
from cpc_seq.errors import ConfigError, DataError
from cpc_seq.probes.ctc import (
    CTCOptions,
    collapse_targets,
    ctc_probe,
    edit_distance,
    greedy_decode,
)


def test_edit_distance_by_hand():
    assert edit_distance([], []) == 0
    assert edit_distance([1, 2, 3], []) == 3
    assert edit_distance([], [4, 4]) == 2
    assert edit_distance([1, 2, 3], [1, 2, 3]) == 0
    assert edit_distance([1, 2, 3], [1, 3]) == 1          # deletion
    assert edit_distance([1, 2, 3], [1, 2, 4, 3]) == 1    # insertion
    assert edit_distance([1, 2, 3], [1, 5, 3]) == 1       # substitution
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance([3, 1, 2], [1, 2, 3]) == 2


def test_collapse_targets_merges_runs_before_dropping_silence():
    # a a SIL a b b -> a SIL a b -> a a b (the silence separates two a's)
    assert collapse_targets([1, 1, 0, 1, 2, 2], ignore=[0]) == [1, 1, 2]
    assert collapse_targets([1, 1, 2, 2, 1]) == [1, 2, 1]
    assert collapse_targets([0, 0], ignore=[0]) == []


def test_greedy_decode():
    # frames: blank a a blank a b b (blank = 0) -> a a b
    path = [0, 1, 1, 0, 1, 2, 2]
    logp = torch.full((7, 3), -10.0)
    logp[torch.arange(7), torch.tensor(path)] = 0.0
    assert greedy_decode(logp) == [1, 1, 2]
    assert greedy_decode(logp, length=3) == [1]


def _synthetic(n_utts=48, seed=0, informative=True):
    """Utterances of 3-5 phones from {a, b, c} separated by SIL; each phone lasts 3-5
    frames; features are a noisy one-hot of the phone (or pure noise)."""
    rng = np.random.default_rng(seed)
    phones = {"SIL": 0, "a": 1, "b": 2, "c": 3}
    feats, labels = {}, {}
    for u in range(n_utts):
        seq = [0]
        for _ in range(rng.integers(3, 6)):
            seq += [int(rng.integers(1, 4))] * int(rng.integers(3, 6))
            if rng.random() < 0.5:
                seq += [0] * 2
        seq += [0]
        lab = np.asarray(seq, dtype=np.int64)
        x = rng.normal(scale=0.3, size=(len(lab), 4)).astype(np.float32)
        if informative:
            x[np.arange(len(lab)), lab] += 1.0
        utt = f"s{u % 3}-{u:03d}"
        feats[utt], labels[utt] = torch.from_numpy(x), lab
    return feats, labels, phones


FAST = dict(hidden=16, layers=1, epochs=40, lr=2e-2, batch_size=4, dropout=0.0, threads=1)


def test_probe_learns_informative_features_and_not_noise(tmp_path):
    feats, labels, phones = _synthetic()
    utts = sorted(feats)
    train, test = utts[:36], utts[36:]
    good = ctc_probe(feats, feats, labels, phones, tmp_path / "good", "one-hot",
                     CTCOptions(**FAST), train, test, ignore=["SIL"])
    assert good["per"] < 0.1 and good["n_test"] == 12 and good["n_classes"] == 3
    assert good["losses"][-1] < good["losses"][0]
    saved = json.loads((tmp_path / "good" / "result.json").read_text())
    assert saved["per"] == good["per"] and saved["probe"] == "CTC BiLSTM 1x16"
    noise_f, _, _ = _synthetic(informative=False)
    bad = ctc_probe(noise_f, noise_f, labels, phones, tmp_path / "bad", "noise",
                    CTCOptions(**FAST), train, test, ignore=["SIL"])
    assert bad["per"] > 0.4
    # the linear variant runs too, and keeping SIL adds it to the targets
    lin = ctc_probe(feats, feats, labels, phones, tmp_path / "lin", "lin",
                    CTCOptions(model="linear", epochs=20, lr=1e-2, threads=1), train, test)
    assert lin["probe"] == "CTC linear" and lin["n_classes"] == 4
    assert lin["n_ref_phones"] > good["n_ref_phones"]


def test_probe_errors(tmp_path):
    feats, labels, phones = _synthetic(n_utts=6)
    utts = sorted(feats)
    opts = CTCOptions(**{**FAST, "epochs": 1})
    with pytest.raises(DataError, match="--ignore 'SPN'"):
        ctc_probe(feats, feats, labels, phones, tmp_path, "x", opts, utts[:3], utts[3:],
                  ignore=["SPN"])
    short = dict(labels)
    short[utts[0]] = labels[utts[0]][:-5]
    with pytest.raises(DataError, match=rf"utterance '{utts[0]}' has \d+ label frames"):
        ctc_probe(feats, feats, short, phones, tmp_path, "x", opts, utts[:3], utts[3:])
    silent = {u: np.zeros_like(v) for u, v in labels.items()}
    with pytest.raises(DataError, match="0 train and 0 test utterances"):
        ctc_probe(feats, feats, silent, phones, tmp_path, "x", opts, utts[:3], utts[3:],
                  ignore=["SIL"])
    with pytest.raises(ConfigError, match="model"):
        ctc_probe(feats, feats, labels, phones, tmp_path, "x", CTCOptions(model="gru"),
                  utts[:3], utts[3:])


def _parser():
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    return parser


def test_ctc_probe_and_table_commands(tmp_path, capsys):
    feats, labels, phones = _synthetic(n_utts=24)
    fdir = tmp_path / "feats"
    fdir.mkdir()
    for u, x in feats.items():
        np.save(fdir / f"{u}.npy", x.numpy())
    inv = {v: k for k, v in phones.items()}
    (tmp_path / "labels.txt").write_text(
        "".join(f"{u} {' '.join(inv[int(i)] for i in labels[u])}\n" for u in sorted(labels)))
    (tmp_path / "phones.txt").write_text("".join(f"{s} {i}\n" for s, i in phones.items()))
    (tmp_path / "utt2spk").write_text("".join(f"{u} {u.split('-')[0]}\n" for u in sorted(labels)))
    parser = _parser()
    argv = ["ctc-probe", "--feats", f"npy:{fdir}", "--labels", str(tmp_path / "labels.txt"),
            "--phones", str(tmp_path / "phones.txt"), "--utt2spk", str(tmp_path / "utt2spk"),
            "--ignore", "SIL", "--hidden", "16", "--layers", "1", "--epochs", "3",
            "--threads", "1", "--no-progress", "--out", str(tmp_path / "r1"), "--name", "toy"]
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("toy: PER ") and "test utterances" in out
    res = json.loads((tmp_path / "r1" / "result.json").read_text())
    # default split: every 5th utterance of each speaker is test (8 per speaker -> 1 or 2)
    assert res["n_test"] + res["n_train"] == 24 and 3 <= res["n_test"] <= 6
    from cpc_seq.cli import main

    assert main(["table", str(tmp_path / "r1" / "result.json")]) == 0
    table = capsys.readouterr().out
    assert "| toy | CTC BiLSTM 1x16 | 4 |" in table and "test PER" in table
    help_text = " ".join(parser._subparsers._group_actions[0].choices["ctc-probe"]
                         .format_help().split())
    for default in ("(default: 256)", "(default: bilstm)", "(default: 20)", "(default: 0.001)"):
        assert default in help_text
    (tmp_path / "other.json").write_text('{"accuracy": 0.5}')
    assert main(["table", str(tmp_path / "other.json")]) == 0  # an accuracy result: a probe row
    (tmp_path / "none.json").write_text('{"n": 3}')
    assert main(["table", str(tmp_path / "none.json")]) == 2
    assert "not a probe result" in capsys.readouterr().err
