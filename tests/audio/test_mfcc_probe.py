"""MFCC baseline features (frame alignment with the CPC encoder) and linear probes."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
import torchaudio.compliance.kaldi as kaldi

from cpc_seq.audio.model.mfcc import mfcc_deltas, num_frames
from cpc_seq.errors import ConfigError, DataError
from cpc_seq.probes.linear import (
    FrameDataset,
    Probe,
    evaluate_probe,
    frames_to_dataset,
    pool_utterances,
    result_to_dict,
    save_confusion_csv,
    save_confusion_png,
    train_linear_probe,
)

# ----------------------------------------------------------------------------- MFCC


def _noise(n: int, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


@pytest.mark.parametrize(
    "n", [160, 161, 239, 300, 399, 400, 479, 480, 559, 560, 16000, 16079, 16080, 16159]
)
def test_mfcc_frame_count_matches_cpc_encoder(n):
    feats = mfcc_deltas(_noise(n))
    assert feats.shape == (n // 160, 39)
    assert feats.dtype == torch.float32
    assert torch.isfinite(feats).all()
    assert num_frames(n) == n // 160


def test_mfcc_accepts_tensor_and_channel_dim():
    w = _noise(4000)
    a = mfcc_deltas(w)
    b = mfcc_deltas(torch.from_numpy(w).unsqueeze(0))
    torch.testing.assert_close(a, b)


def test_mfcc_cmvn_normalises_each_dimension():
    feats = mfcc_deltas(_noise(32000, seed=1) * np.linspace(0.1, 1.0, 32000, dtype=np.float32))
    mean = feats.mean(0)
    std = feats.std(0, unbiased=False)
    assert torch.allclose(mean, torch.zeros(39), atol=1e-4)
    assert torch.allclose(std, torch.ones(39), atol=1e-3)


def test_mfcc_statics_are_kaldi_mfcc_without_cmvn():
    w = _noise(8000, seed=2)
    ours = mfcc_deltas(w, cmvn=False)[:, :13]
    ref = kaldi.mfcc(
        torch.from_numpy(w).unsqueeze(0) * 32768.0, dither=0.0, snip_edges=False, use_energy=False
    )[: 8000 // 160]
    torch.testing.assert_close(ours, ref)
    # int16 input is on Kaldi's scale already
    torch.testing.assert_close(
        mfcc_deltas((w * 32768).round().astype(np.int16), cmvn=False)[:, :13],
        ours,
        atol=0.05,
        rtol=0.0,
    )


@pytest.mark.parametrize(
    "pos",
    [0, 79, 80, 159, 160, 5000, 5119, 5120, 5199, 5200, 5279, 7999, 8000, 9599, 9759],
)
def test_mfcc_impulse_lands_in_the_frame_whose_span_contains_it(pos):
    # Frame t's window is centred on samples [160t, 160t + 160), so an isolated click is
    # weighted most (largest C0) in exactly that frame.  Kaldi's snip_edges=True framing
    # would put it up to one frame later.
    n = 9800  # not a multiple of 160: 61 frames, 40 samples left over
    w = np.zeros(n, dtype=np.float32)
    w[pos] = 0.5
    c0 = mfcc_deltas(w, cmvn=False)[:, 0]
    assert c0.shape[0] == n // 160
    assert int(c0.argmax()) == pos // 160


def test_mfcc_impulse_alignment_on_short_input():
    for n, pos in [(399, 170), (399, 100), (320, 200)]:
        w = np.zeros(n, dtype=np.float32)
        w[pos] = 0.5
        c0 = mfcc_deltas(w, cmvn=False)[:, 0]
        assert int(c0.argmax()) == pos // 160


def test_mfcc_other_sample_rate_uses_10ms_frames():
    assert mfcc_deltas(_noise(8000 + 50), sample_rate=8000).shape == (100, 39)
    with pytest.raises(ConfigError):
        mfcc_deltas(_noise(1000), sample_rate=16050)


def test_mfcc_bad_input():
    with pytest.raises(DataError, match="159 samples"):
        mfcc_deltas(_noise(159))
    with pytest.raises(DataError, match="mono"):
        mfcc_deltas(np.zeros((2, 4000), dtype=np.float32))
    bad = _noise(4000)
    bad[7] = np.nan
    with pytest.raises(DataError, match="NaN"):
        mfcc_deltas(bad)


def test_mfcc_one_frame_with_cmvn_is_finite():
    feats = mfcc_deltas(_noise(200))
    assert feats.shape == (1, 39)
    assert torch.isfinite(feats).all()


# ---------------------------------------------------------------------------- probes


def _blobs(n_per_class: int, num_classes: int, dim: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    centres = 6.0 * torch.randn(num_classes, dim, generator=g)
    y = torch.arange(num_classes).repeat_interleave(n_per_class)
    x = centres[y] + torch.randn(len(y), dim, generator=g) + 100.0  # offset: needs standardising
    return x, y


def test_probe_learns_separable_problem():
    xa, ya = _blobs(400, 5, 16, seed=0)
    perm = torch.randperm(len(ya), generator=torch.Generator().manual_seed(0))
    x, y = xa[perm[:1500]], ya[perm[:1500]]
    xt, yt = xa[perm[1500:]], ya[perm[1500:]]
    probe = train_linear_probe(x, y, num_classes=5, epochs=20, lr=1e-2, batch_size=128)
    assert isinstance(probe, Probe) and probe.hidden == 0
    train_res = evaluate_probe(probe, x, y, 5)
    assert train_res.accuracy >= 0.99
    assert evaluate_probe(probe, xt, yt, 5).accuracy >= 0.98
    pred = probe.predict(x)
    assert pred.dtype == torch.long and pred.shape == (len(x),)


def test_probe_random_labels_stay_at_chance_on_heldout():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3000, 32, generator=g)
    y = torch.randint(0, 4, (3000,), generator=g)
    probe = train_linear_probe(
        x[:2000], y[:2000], num_classes=4, epochs=20, lr=1e-2, batch_size=256
    )
    acc = evaluate_probe(probe, x[2000:], y[2000:], 4).accuracy
    assert 0.15 < acc < 0.35


def test_mlp_fits_xor_where_linear_cannot():
    g = torch.Generator().manual_seed(2)
    x = torch.rand(2000, 2, generator=g) * 2 - 1
    y = ((x[:, 0] > 0) ^ (x[:, 1] > 0)).long()
    kw = dict(num_classes=2, epochs=60, lr=1e-2, batch_size=256)
    lin = train_linear_probe(x, y, **kw)
    mlp = train_linear_probe(x, y, hidden=32, **kw)
    assert evaluate_probe(lin, x, y, 2).accuracy < 0.75
    assert evaluate_probe(mlp, x, y, 2).accuracy > 0.95


def test_training_is_seeded_and_leaves_global_rng_alone():
    x, y = _blobs(50, 3, 4, seed=3)
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = train_linear_probe(x, y, num_classes=3, epochs=2, batch_size=32, seed=7)
    after = torch.rand(3)
    b = train_linear_probe(x, y, num_classes=3, epochs=2, batch_size=32, seed=7)
    torch.testing.assert_close(before, after)
    for (ka, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        torch.testing.assert_close(va, vb, msg=ka)


def test_probe_input_validation():
    x = torch.randn(10, 3)
    with pytest.raises(DataError, match="outside"):
        train_linear_probe(x, torch.full((10,), 3), num_classes=3)
    with pytest.raises(DataError, match="shape"):
        train_linear_probe(x, torch.zeros(9, dtype=torch.long), num_classes=3)
    with pytest.raises(ConfigError):
        train_linear_probe(x, torch.zeros(10, dtype=torch.long), num_classes=3, epochs=0)
    bad = x.clone()
    bad[0, 0] = float("inf")
    with pytest.raises(DataError, match="infinite"):
        train_linear_probe(bad, torch.zeros(10, dtype=torch.long), num_classes=3)


def _argmax_probe(num_classes: int) -> Probe:
    """A probe predicting argmax of its input, for exact confusion tests."""
    probe = Probe(num_classes, num_classes)
    with torch.no_grad():
        probe.net.weight.copy_(torch.eye(num_classes))
        probe.net.bias.zero_()
    return probe.eval()


def _known_result():
    # 4 classes; class 3 never occurs in y.
    y = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
    pred = torch.tensor([0, 0, 1, 1, 3, 2, 2, 0, 2])
    x = torch.nn.functional.one_hot(pred, 4).float()
    return evaluate_probe(_argmax_probe(4), x, y, 4), y


def test_confusion_and_per_class_accuracy():
    res, y = _known_result()
    assert res.n == 9
    assert res.confusion.shape == (4, 4)
    np.testing.assert_array_equal(res.confusion.sum(1), np.bincount(y.numpy(), minlength=4))
    assert res.confusion[0, 1] == 1 and res.confusion[1, 3] == 1 and res.confusion[2, 0] == 1
    assert res.accuracy == pytest.approx(6 / 9)
    assert res.per_class_accuracy == pytest.approx({0: 2 / 3, 1: 1 / 2, 2: 3 / 4})
    assert 3 not in res.per_class_accuracy


def test_result_files(tmp_path):
    res, _ = _known_result()
    labels = ["aa", "b,c", "iy", "sil"]
    csv_path = tmp_path / "conf.csv"
    save_confusion_csv(res, csv_path, labels)
    rows = list(csv.reader(csv_path.open(newline="")))
    assert rows[0] == ["true\\pred", *labels]
    assert [r[0] for r in rows[1:]] == labels
    np.testing.assert_array_equal(np.array([r[1:] for r in rows[1:]], dtype=int), res.confusion)

    png_path = tmp_path / "conf.png"
    save_confusion_png(res, png_path, labels)
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conf.csv", "conf.png"]  # no temp files

    d = result_to_dict(res, labels)
    back = json.loads(json.dumps(d))
    assert back["n"] == 9 and back["accuracy"] == pytest.approx(6 / 9)
    assert back["per_class_accuracy"] == pytest.approx({"aa": 2 / 3, "b,c": 0.5, "iy": 0.75})
    assert back["confusion"] == res.confusion.tolist()

    with pytest.raises(DataError, match="label names"):
        save_confusion_csv(res, tmp_path / "x.csv", labels[:3])
    assert not (tmp_path / "x.csv").exists()


# ------------------------------------------------------------------- dataset helpers


def test_frames_to_dataset_trims_within_tolerance_and_skips_unlabelled():
    feats = {
        "a": torch.arange(10 * 2, dtype=torch.float32).reshape(10, 2),
        "b": torch.ones(5, 2),
        "c": torch.zeros(7, 2),
    }
    labels = {"a": np.arange(12) % 3, "b": np.array([1, 1, 1, 1])}  # a: +2 labels, b: -1
    ds = frames_to_dataset(feats, labels, ["a", "b", "c"], tolerance=2)
    assert isinstance(ds, FrameDataset)
    x, y = ds
    assert x.shape == (14, 2) and y.shape == (14,) and y.dtype == torch.long
    torch.testing.assert_close(x[:10], feats["a"])
    assert y[:10].tolist() == (np.arange(10) % 3).tolist()
    assert ds.skipped == ["c"] and ds.n_skipped == 1
    assert ds.trimmed_frames == 3
    assert ds.utts == ["a", "b"]


def test_frames_to_dataset_mismatch_beyond_tolerance():
    feats = {"utt7": torch.zeros(10, 2)}
    labels = {"utt7": np.zeros(13, dtype=np.int64)}
    with pytest.raises(DataError, match=r"utt7.*10 feature frames but 13 label frames"):
        frames_to_dataset(feats, labels, ["utt7"], tolerance=2)
    x, y = frames_to_dataset(feats, labels, ["utt7"], tolerance=3)
    assert len(x) == len(y) == 10
    with pytest.raises(DataError, match="no features"):
        frames_to_dataset(feats, labels, ["missing"])
    with pytest.raises(DataError, match="no labels"):
        frames_to_dataset(feats, {}, ["utt7"])


def test_pool_utterances():
    feats = {"a": torch.tensor([[1.0, 2.0], [3.0, 6.0]]), "b": torch.tensor([[5.0, -1.0]])}
    torch.testing.assert_close(
        pool_utterances(feats, ["b", "a"]), torch.tensor([[5.0, -1.0], [2.0, 4.0]])
    )
    torch.testing.assert_close(pool_utterances(feats, ["a"], how="max"), torch.tensor([[3.0, 6.0]]))
    assert pool_utterances(feats, ["a", "b"], how="meanstd").shape == (2, 4)
    with pytest.raises(ConfigError):
        pool_utterances(feats, ["a"], how="median")
    with pytest.raises(DataError, match="'zz'"):
        pool_utterances(feats, ["zz"])
