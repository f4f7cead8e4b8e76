"""Item files from frame labels (cpc_seq.audio.data.items) and ABX on them."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from cpc_seq.audio.cli.labels import register_make_item as register
from cpc_seq.audio.data.items import (
    ITEM_HEADER,
    items_from_labels,
    label_runs,
    make_item_file,
)
from cpc_seq.errors import ConfigError, DataError
from cpc_seq.probes.abx import abx_error, item_frames, read_item_file


def test_label_runs():
    assert label_runs(["a", "a", "b", "a"]) == [(0, 2, "a"), (2, 3, "b"), (3, 4, "a")]
    assert label_runs(["x"]) == [(0, 1, "x")]
    assert label_runs([]) == []


def test_items_contexts_silence_and_edges():
    labels = {"u2": "SIL SIL a a b SIL c".split(), "u1": "k k k".split()}
    rows = items_from_labels(labels, {"u1": "s1", "u2": "s2"})
    got = [(r.file, r.onset, r.offset, r.phone, r.prev_phone, r.next_phone, r.speaker)
           for r in rows]
    assert got == [
        ("u1", 0.0, 0.03, "k", "#", "#", "s1"),        # the whole utterance: both edges
        ("u2", 0.02, 0.04, "a", "SIL", "b", "s2"),     # silence is a context ...
        ("u2", 0.04, 0.05, "b", "a", "SIL", "s2"),
        ("u2", 0.06, 0.07, "c", "SIL", "#", "s2"),     # ... but never an item
    ]
    no_ctx = items_from_labels(labels, {"u1": "s1", "u2": "s2"}, context=False, boundary="-")
    assert {(r.prev_phone, r.next_phone) for r in no_ctx} == {("-", "-")}
    long_only = items_from_labels(labels, {"u1": "s1", "u2": "s2"}, min_frames=2, silence=())
    assert [(r.file, r.phone) for r in long_only] == [("u1", "k"), ("u2", "SIL"), ("u2", "a")]
    # another frame rate: onsets are frame boundaries t / rate
    fifty = items_from_labels({"u1": ["a", "b"]}, {"u1": "s"}, frame_rate=50)
    assert [(r.onset, r.offset) for r in fifty] == [(0.0, 0.02), (0.02, 0.04)]


def test_items_errors():
    with pytest.raises(DataError, match="'u9' has no speaker"):
        items_from_labels({"u9": ["a"]}, {"u1": "s"}, source="lab.txt")
    with pytest.raises(ConfigError, match="frame_rate"):
        items_from_labels({"u1": ["a"]}, {"u1": "s"}, frame_rate=0)
    with pytest.raises(ConfigError, match="min_frames"):
        items_from_labels({"u1": ["a"]}, {"u1": "s"}, min_frames=0)
    with pytest.raises(ConfigError, match="boundary"):
        items_from_labels({"u1": ["a"]}, {"u1": "s"}, boundary="a b")


def _corpus(tmp_path):
    (tmp_path / "phone_frames.txt").write_text(
        "s1-0 SIL a a a b b SIL\n"
        "s1-1 SIL a a b b b SIL\n"
        "s2-0 SIL a a b b SIL\n"
        "s2-1 SIL a a a b b SIL\n"
    )
    (tmp_path / "utt2spk").write_text("s1-0 s1\ns1-1 s1\ns2-0 s2\ns2-1 s2\n")
    return tmp_path / "phone_frames.txt", tmp_path / "utt2spk"


def test_item_file_round_trip_selects_the_labelled_frames(tmp_path):
    labels, utt2spk = _corpus(tmp_path)
    out = tmp_path / "test.item"
    counts = make_item_file(labels, utt2spk, out)
    assert counts == {"items": 8, "utterances": 4, "speakers": 2, "phones": 2,
                      "split_without_labels": 0}
    text = out.read_text().splitlines()
    assert text[0] == ITEM_HEADER
    assert text[1] == "s1-0 0.01 0.04 a SIL b s1"
    rows = read_item_file(out)
    assert len(rows) == 8
    # features whose value is the frame index: each item gets exactly its labelled frames
    lab = {u: r.split() for u, r in (line.split(" ", 1) for line in labels.read_text().splitlines())}
    feats = {u: torch.arange(float(len(v))).reshape(-1, 1) for u, v in lab.items()}
    for row, seg in zip(rows, item_frames(feats, rows)):
        frames = [int(v) for v in seg[:, 0].tolist()]
        assert frames and all(lab[row.file][t] == row.phone for t in frames)
        start, end = frames[0], frames[-1] + 1
        assert lab[row.file][start - 1] != row.phone and lab[row.file][end] != row.phone


def test_abx_on_made_items_separates_labelled_phones(tmp_path):
    labels, utt2spk = _corpus(tmp_path)
    out = tmp_path / "test.item"
    rng = np.random.default_rng(0)
    code = {"SIL": 0.0, "a": 1.0, "b": -1.0}
    feats = {}
    for line in labels.read_text().splitlines():
        utt, *lab = line.split()
        feats[utt] = np.stack([[code[p], 0.1 * rng.normal()] for p in lab]).astype(np.float32)
    # with contexts, 'a' (SIL_b) and 'b' (a_SIL) never share one: no triplet
    make_item_file(labels, utt2spk, out)
    with pytest.raises(DataError, match="no triplets"):
        abx_error(feats, read_item_file(out), mode="within")
    make_item_file(labels, utt2spk, out, context=False)
    rows = read_item_file(out)
    for mode in ("within", "across"):
        res = abx_error(feats, rows, mode=mode, max_items_per_context=None)
        assert res["error"] == 0.0 and res["n_triplets"] > 0
    # features without phone information: every triplet ties
    flat = {u: np.ones_like(f) for u, f in feats.items()}
    assert abx_error(flat, rows, mode="within")["error"] == 0.5


def test_split_and_errors(tmp_path):
    labels, utt2spk = _corpus(tmp_path)
    (tmp_path / "split.txt").write_text("s2-0\ns9-9\n")
    counts = make_item_file(labels, utt2spk, tmp_path / "x.item", split=tmp_path / "split.txt")
    assert counts["utterances"] == 1 and counts["split_without_labels"] == 1
    (tmp_path / "sil.txt").write_text("s1-0 SIL SIL\n")
    with pytest.raises(DataError, match="no phone token"):
        make_item_file(tmp_path / "sil.txt", utt2spk, tmp_path / "y.item")
    (tmp_path / "bad_u2s").write_text("s1-0 s1 extra\n")
    with pytest.raises(DataError, match=r"bad_u2s:1: expected"):
        make_item_file(labels, tmp_path / "bad_u2s", tmp_path / "z.item")
    with pytest.raises(DataError, match="no such file"):
        make_item_file(tmp_path / "nope.txt", utt2spk, tmp_path / "z.item")


def test_integer_labels_through_the_phone_table(tmp_path):
    _, utt2spk = _corpus(tmp_path)
    (tmp_path / "ids.txt").write_text("s1-0 2 0 0 1 1 2\n")
    phones = {"SIL": 2, "a": 0, "b": 1}
    make_item_file(tmp_path / "ids.txt", utt2spk, tmp_path / "i.item", phones=phones)
    assert [(r.phone, r.prev_phone, r.next_phone) for r in read_item_file(tmp_path / "i.item")] \
        == [("a", "SIL", "b"), ("b", "a", "SIL")]
    (tmp_path / "bad.txt").write_text("s1-0 0 7\n")
    with pytest.raises(DataError, match=r"bad\.txt:1: label '7' is neither"):
        make_item_file(tmp_path / "bad.txt", utt2spk, tmp_path / "j.item", phones=phones)


def test_make_item_command(tmp_path, capsys):
    labels, utt2spk = _corpus(tmp_path)
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    out = tmp_path / "cmd.item"
    args = parser.parse_args(["make-item", str(labels), str(utt2spk), str(out), "--no-context"])
    assert args.func(args) == 0
    assert "8 items (2 phones) from 4 utterances, 2 speakers" in capsys.readouterr().out
    assert {(r.prev_phone, r.next_phone) for r in read_item_file(out)} == {("#", "#")}
    help_text = " ".join(parser._subparsers._group_actions[0].choices["make-item"]
                         .format_help().split())
    assert "(default: SIL)" in help_text and "(default: 100.0)" in help_text
