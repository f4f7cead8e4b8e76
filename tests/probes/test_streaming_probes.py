"""Probes that read features from disk one utterance at a time (bounded memory)."""

from __future__ import annotations

import json
import weakref
from collections.abc import Iterator, Mapping
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import torch

from cpc_seq.cli import main
from cpc_seq.errors import DataError
from cpc_seq.io.feature_index import open_features
from cpc_seq.io.features import read_features
from cpc_seq.probes import linear, stream
from cpc_seq.probes.ctc import CTCOptions, ctc_probe
from cpc_seq.probes.linear import evaluate_probe, frames_to_dataset, train_linear_probe
from cpc_seq.probes.options import ProbeOptions
from cpc_seq.probes.stream import scan_frames, shuffled_batches
from cpc_seq.probes.tasks import phone_probe

DIM, CLASSES = 6, 3


def _synthetic(n_utts: int = 30, seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Features whose first CLASSES dims say the frame's class (plus noise); labels in
    runs. Column DIM-1 holds the utterance number, so batches can be traced."""
    rng = np.random.default_rng(seed)
    feats, labels = {}, {}
    for i in range(n_utts):
        t = int(rng.integers(20, 60))
        lab = np.repeat(rng.integers(0, CLASSES, size=t // 5 + 1), 5)[:t]
        x = rng.normal(0, 0.7, size=(t, DIM)).astype(np.float32)
        x[np.arange(t), lab] += 1.5
        x[:, DIM - 1] = i
        feats[f"u{i:03d}"] = x
        labels[f"u{i:03d}"] = lab.astype(np.int64)
    return feats, labels


class CountingFeatures(Mapping[str, torch.Tensor]):
    """A lazy feature mapping that tracks how many rows it has handed out and are
    still alive (not yet garbage collected)."""

    def __init__(self, feats: Mapping[str, np.ndarray]) -> None:
        self.feats = feats
        self.alive = 0
        self.peak = 0
        self.reads = 0

    def __len__(self) -> int:
        return len(self.feats)

    def __iter__(self) -> Iterator[str]:
        return iter(self.feats)

    def __getitem__(self, utt: str) -> torch.Tensor:
        t = torch.from_numpy(self.feats[utt].copy())
        self.reads += 1
        self.alive += t.shape[0]
        self.peak = max(self.peak, self.alive)
        weakref.finalize(t, self._free, t.shape[0])
        return t

    def _free(self, rows: int) -> None:
        self.alive -= rows


def _write_ark(tmp_path: Path, feats: Mapping[str, np.ndarray], name: str) -> Path:
    scp = tmp_path / f"{name}.scp"
    kaldiio.save_ark(str(tmp_path / f"{name}.ark"), dict(feats), scp=str(scp))
    return scp


# ------------------------------------------------------------------ feature index


def test_feature_index_reads_lazily_and_matches_read_features(tmp_path: Path) -> None:
    feats, _ = _synthetic(5)
    scp = _write_ark(tmp_path, feats, "f")
    index = open_features(f"scp:{scp}")
    full = read_features(f"scp:{scp}")
    assert list(index) == list(full) == sorted(feats)
    for utt in feats:
        assert torch.equal(index[utt], full[utt])
        assert index.num_frames(utt) == feats[utt].shape[0]  # from the header
    npy = tmp_path / "npy"
    npy.mkdir()
    for utt, x in feats.items():
        np.save(npy / f"{utt}.npy", x)
    nidx = open_features(f"npy:{npy}")
    assert nidx.num_frames("u003") == feats["u003"].shape[0]
    assert torch.equal(nidx["u003"], full["u003"])


def test_feature_index_errors_name_the_scp_line_when_read(tmp_path: Path) -> None:
    feats, _ = _synthetic(2)
    scp = _write_ark(tmp_path, feats, "f")
    lines = scp.read_text().splitlines()
    scp.write_text(lines[0] + "\n" + "u001 " + str(tmp_path / "gone.ark") + ":12\n")
    index = open_features(f"scp:{scp}")  # opening reads no matrix
    assert index["u000"].shape[1] == DIM
    with pytest.raises(DataError, match=r"f\.scp:2: cannot load"):
        index["u001"]
    scp.write_text(lines[0] + "\n" + lines[0] + "\n")
    with pytest.raises(DataError, match=r"f\.scp:2: duplicate utterance 'u000' \(first on line 1\)"):
        open_features(f"scp:{scp}")


# ---------------------------------------------------------------- phone probe


def test_shuffled_batches_visit_every_frame_once_through_a_bounded_buffer() -> None:
    feats, labels = _synthetic(30)
    frames = scan_frames({u: torch.from_numpy(x) for u, x in feats.items()}, labels,
                         sorted(feats))
    gen = torch.Generator().manual_seed(0)
    buffer, batch = 64, 16
    epochs = []
    for _ in range(2):
        batches = list(shuffled_batches(frames, batch, buffer, gen))
        assert all(len(y) == batch for _, y in batches[:-1])
        x = torch.cat([b[0] for b in batches])
        # every frame exactly once: (utterance, feature row) pairs are all distinct
        assert len(x) == frames.n_frames
        assert len({tuple(r.tolist()) for r in x}) == frames.n_frames
        # not a global shuffle: the first batches come from the utterances that filled
        # the buffer first, at most buffer / shortest utterance + 1 of them
        first = torch.cat([b[0][:, DIM - 1] for b in batches[:buffer // batch // 4]])
        assert len(set(first.tolist())) <= buffer // 20 + 1
        epochs.append([int(b[0][0, DIM - 1]) for b in batches])
    assert epochs[0] != epochs[1]  # a fresh utterance order each epoch


def test_streamed_phone_probe_holds_at_most_the_buffer(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The memory bound, checked by behaviour: the frames read from the feature mapping
    and still alive never exceed the buffer plus one utterance, and no in-memory
    stacking of the whole set happens."""
    feats, labels = _synthetic(40)
    total = sum(len(v) for v in labels.values())
    longest = max(len(v) for v in labels.values())
    train = CountingFeatures({u: feats[u] for u in sorted(feats)[:30]})
    test = CountingFeatures({u: feats[u] for u in sorted(feats)[30:]})

    def refuse(*a: object, **k: object) -> None:
        raise AssertionError("the whole set was stacked in memory")

    monkeypatch.setattr(linear, "frames_to_dataset", refuse)
    monkeypatch.setattr(stream, "train_linear_probe", refuse)
    buffer = 100
    assert total > 10 * buffer
    opts = ProbeOptions(epochs=3, batch_size=25, lr=1e-2)
    d = phone_probe(train, test, labels, labels, {"a": 0, "b": 1, "c": 2}, tmp_path, "s", opts,
                    buffer_frames=buffer)
    assert d["streamed"] is True
    assert train.peak <= buffer + longest, (train.peak, buffer, longest)
    assert test.peak <= linear._EVAL_BATCH + longest
    assert train.reads >= 3 * len(train)  # read again each epoch, not kept
    assert d["accuracy"] > 0.8


def test_phone_probe_that_fits_the_buffer_is_the_in_memory_probe(tmp_path: Path) -> None:
    feats, labels = _synthetic(30)
    tf = {u: torch.from_numpy(x) for u, x in feats.items()}
    utts = sorted(feats)
    opts = ProbeOptions(epochs=3, batch_size=32, lr=1e-2, seed=3)
    d = phone_probe(tf, tf, labels, labels, {"a": 0, "b": 1, "c": 2}, tmp_path, "m", opts,
                    utts[:20], utts[20:])
    assert d["streamed"] is False
    tr = frames_to_dataset(tf, labels, utts[:20])
    te = frames_to_dataset(tf, labels, utts[20:])
    probe = train_linear_probe(tr.x, tr.y, num_classes=3, epochs=3, batch_size=32, lr=1e-2,
                               seed=3)
    ref = evaluate_probe(probe, te.x, te.y, 3)
    assert d["accuracy"] == ref.accuracy
    assert d["confusion"] == ref.confusion.tolist()


def test_streamed_and_in_memory_accuracy_agree(tmp_path: Path) -> None:
    feats, labels = _synthetic(40, seed=1)
    tf = {u: torch.from_numpy(x) for u, x in feats.items()}
    utts = sorted(feats)
    opts = ProbeOptions(epochs=4, batch_size=32, lr=1e-2)
    phones = {"a": 0, "b": 1, "c": 2}
    held = phone_probe(tf, tf, labels, labels, phones, tmp_path / "a", "m", opts,
                       utts[:30], utts[30:])
    streamed = phone_probe(tf, tf, labels, labels, phones, tmp_path / "b", "s", opts,
                           utts[:30], utts[30:], buffer_frames=64)
    assert streamed["streamed"] and not held["streamed"]
    assert abs(streamed["accuracy"] - held["accuracy"]) < 0.03
    assert streamed["train_frames"] == held["train_frames"]
    assert streamed["n"] == held["n"]


def test_streamed_probe_reports_bad_frames_naming_the_utterance(tmp_path: Path) -> None:
    feats, labels = _synthetic(6)
    feats["u002"] = feats["u002"].copy()
    feats["u002"][3, 1] = np.nan
    scp = _write_ark(tmp_path, feats, "f")
    index = open_features(f"scp:{scp}")
    with pytest.raises(DataError, match=r"f\.scp:3: features of utterance 'u002' contain NaN"):
        phone_probe(index, index, labels, labels, {"a": 0, "b": 1, "c": 2}, tmp_path, "x",
                    ProbeOptions(epochs=1), sorted(feats)[:4], sorted(feats)[4:], buffer_frames=10)
    short = dict(labels)
    short["u005"] = labels["u005"][:-4]
    with pytest.raises(DataError, match=r"utterance 'u005': \d+ feature frames but \d+ label"):
        phone_probe(index, index, short, short, {"a": 0, "b": 1, "c": 2}, tmp_path, "x",
                    ProbeOptions(epochs=1), sorted(feats)[:4], sorted(feats)[4:])


def test_probe_commands_stream_from_ark(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    feats, labels = _synthetic(30)
    utts = sorted(feats)
    tr = _write_ark(tmp_path, {u: feats[u] for u in utts[:24]}, "train")
    te = _write_ark(tmp_path, {u: feats[u] for u in utts[24:]}, "test")
    lab = tmp_path / "labels.txt"
    lab.write_text("".join(f"{u} {' '.join('abc'[i] for i in labels[u])}\n" for u in utts))
    common = ["--train-feats", f"scp:{tr}", "--test-feats", f"scp:{te}", "--epochs", "3",
              "--no-progress", "--lr", "0.01", "--batch-size", "16"]
    assert main(["audio", "probe", "phone", *common, "--labels", str(lab), "--buffer-frames", "80",
                 "--out", str(tmp_path / "p")]) == 0
    result = json.loads((tmp_path / "p" / "result.json").read_text())
    assert result["streamed"] is True and result["accuracy"] > 0.7
    u2s = tmp_path / "utt2spk"
    u2s.write_text("".join(f"{u} s{int(u[1:]) % 3}\n" for u in utts))
    assert main(["audio", "probe", "speaker", *common, "--utt2spk", str(u2s),
                 "--out", str(tmp_path / "s")]) == 0
    assert "speaker accuracy" in capsys.readouterr().out


# ----------------------------------------------------------------------- CTC


def test_ctc_probe_streams_one_batch_at_a_time(tmp_path: Path) -> None:
    feats, labels = _synthetic(24)
    utts = sorted(feats)
    phones = {"a": 0, "b": 1, "c": 2}
    opts = CTCOptions(model="linear", epochs=3, lr=1e-2, batch_size=4, seed=0)
    train = CountingFeatures(feats)
    streamed = ctc_probe(train, train, labels, phones, tmp_path / "s", "s", opts,
                         utts[:18], utts[18:], buffer_frames=50)
    assert streamed["streamed"] is True
    longest = max(len(v) for v in labels.values())
    assert train.peak <= 2 * opts.batch_size * longest  # a batch (and the last one's rest)
    tf = {u: torch.from_numpy(x) for u, x in feats.items()}
    held = ctc_probe(tf, tf, labels, phones, tmp_path / "h", "h", opts, utts[:18], utts[18:])
    assert held["streamed"] is False
    assert abs(streamed["per"] - held["per"]) < 0.05
    assert streamed["n_train"] == held["n_train"] and streamed["feature_dim"] == DIM
