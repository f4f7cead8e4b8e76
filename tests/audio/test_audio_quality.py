"""Audio CPC quality options: packing / padding, speaker-aware batches, Transformer
predictors, the cpc2 preset, ACPC's aligned loss, waveform augmentation, exact resume."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from cpc_seq.audio.data.batches import WindowPlan, make_segments
from cpc_seq.audio.data.kaldi import write_data_dir
from cpc_seq.audio.data.windows import normalize_windows
from cpc_seq.audio.model.augment import AugmentConfig, Augmenter
from cpc_seq.audio.model.cpc import ModelConfig, build_model, cpc2, preset_config
from cpc_seq.audio.train import load_audio_index, load_config, make_engine
from cpc_seq.engine.windows import PlanBatches, WindowSampler
from cpc_seq.errors import DataError
from cpc_seq.losses import kstep_infonce
from cpc_seq.losses.acpc import acpc_loss, align_costs
from cpc_seq.nn.predictors import build_predictor

ROOT = Path(__file__).resolve().parents[2]
SR = 16000


@pytest.fixture(scope="module")
def short_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 speakers, 12 utterances of 0.05-0.4 s (most shorter than a 3200-sample window)."""
    root = tmp_path_factory.mktemp("short")
    rng = np.random.default_rng(0)
    wav, spk = {}, {}
    for s in ("sa", "sb", "sc"):
        for i in range(4):
            n = int(rng.integers(800, 6400))
            t = np.arange(n) / SR
            x = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 800) * t) + 0.05 * rng.standard_normal(n)
            path = root / f"{s}-{i}.wav"
            sf.write(path, x.astype(np.float32), SR, subtype="PCM_16")
            wav[f"{s}-{i}"], spk[f"{s}-{i}"] = str(path), s
    return write_data_dir(root / "data", wav, spk)


TINY = [
    "data.dev=null", "data.window=3200", "data.batch_size=4",
    "model.encoder=tiny", "model.encoder_channels=16", "model.dim_c=16", "model.n_steps=3",
    "train.log_every=2", "train.save_every=2", "train.progress=false",
    "train.threads=1", "optim.warmup_steps=2", "train.precision=fp32",
]


class _Line:
    """Utterances laid end to end, as the training reader sees them (no audio)."""

    def __init__(self, utts: list[str], lengths: list[int], speakers: list[str]) -> None:
        self.utts, self.speakers = utts, speakers
        self.lengths = torch.tensor(lengths, dtype=torch.long)
        self.starts = torch.zeros(len(lengths), dtype=torch.long)
        self.starts[1:] = torch.cumsum(self.lengths, 0)[:-1]


def _store(lengths_by_spk: dict[str, list[int]]) -> _Line:
    utts, lengths, spks = [], [], []
    for s, lens in lengths_by_spk.items():
        for i, n in enumerate(lens):
            utts.append(f"{s}-{i}")
            lengths.append(n)
            spks.append(s)
    return _Line(utts, lengths, spks)


def _speaker_at(store: _Line, pos: torch.Tensor) -> list[str]:
    utt = torch.searchsorted(store.starts, pos, right=True) - 1
    return [store.speakers[int(u)] for u in utt]


def test_packing_uses_every_utterance_and_never_crosses_speakers() -> None:
    store = _store({"a": [500, 300, 2000, 100], "b": [700, 250], "c": [90]})
    seg = make_segments(store.starts, store.lengths, store.speakers, pack=True)
    assert seg.length.tolist() == [2900, 950, 90]  # every sample of every utterance
    assert int(seg.length.sum()) == int(store.lengths.sum())
    plan = WindowPlan(seg, window=400, batch_size=2, seed=3)
    assert plan.windows_per_epoch == 7 + 2 + 1  # 2900 // 400, 950 // 400, one padded
    for epoch in range(5):
        start, length = plan.epoch_plan(epoch)
        for s0, n in zip(start.reshape(-1).tolist(), length.reshape(-1).tolist()):
            first, last = _speaker_at(store, torch.tensor([s0, s0 + n - 1]))
            assert first == last  # a window never runs into another speaker
            assert n == 400 or (s0, n) == (int(seg.start[2]), 90)  # only "c" is short
    # the short speaker "c" (90 samples) trains, as one padded window
    starts = torch.cat([plan.epoch_plan(e)[0].reshape(-1) for e in range(10)])
    assert int(seg.start[2]) in starts.tolist()
    # windows span utterance boundaries inside speaker "a" (500 + 300 + ...)
    crossing = [s for s in starts.tolist() if s < 2900 and
                len(set(torch.searchsorted(store.starts, torch.tensor([s, s + 399]),
                                           right=True).tolist())) > 1]
    assert crossing


def test_audio_index_modes_log_seconds(short_dir: Path, capsys: pytest.CaptureFixture) -> None:
    total = sum(sf.info(str(p)).frames for p in short_dir.parent.glob("*.wav"))
    packed = load_audio_index(str(short_dir), 3200, "pack", False, SR, False, "train")
    assert int(packed.num_samples.sum()) == total and len(packed.utts) == 12
    err = capsys.readouterr().err
    assert f"{total / SR:.1f} s of audio in (data.short_utterances=pack); nothing dropped" in err
    skipped = load_audio_index(str(short_dir), 3200, "skip", False, SR, False, "train")
    err = capsys.readouterr().err
    dropped = total - int(skipped.num_samples.sum())
    assert dropped > 0 and f"{dropped / SR:.1f} s of {total / SR:.1f} s dropped" in err
    with pytest.raises(DataError, match="shorter than the training window"):
        load_audio_index(str(short_dir), 3200, "error", False, SR, False, "train")


def test_uniform_skip_plan_matches_window_sampler() -> None:
    store = _store({"a": [5000, 1300], "b": [4100, 900, 2000]})
    seg = make_segments(store.starts, store.lengths, store.speakers, pack=False)
    keep = store.lengths >= 1000
    old = WindowSampler(store.lengths[keep], 1000, 3, seed=5)
    sub = make_segments(store.starts[keep], store.lengths[keep],
                        [s for s, k in zip(store.speakers, keep.tolist()) if k], pack=False)
    new = WindowPlan(sub, 1000, 3, seed=5)
    assert len(seg.length) == 5
    for epoch in range(3):
        utt, off = old.epoch_plan(epoch)
        start, length = new.epoch_plan(epoch)
        assert torch.equal(store.starts[keep][utt] + off, start)
        assert bool((length == 1000).all())


def test_padded_short_utterance_is_masked() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(encoder="tiny", encoder_channels=16, dim_c=16, n_steps=3))
    model.eval()
    wave = torch.randn(1, 1500)
    padded = torch.cat([wave, torch.zeros(1, 1700)], dim=1)
    lengths = torch.tensor([1500])
    with torch.no_grad():
        z1, c1, f1 = model(normalize_windows(wave))
        z2, c2, f2 = model(normalize_windows(padded, lengths=lengths), lengths)
        assert int(f2) == int(f1) == 1500 // 160 and z2.shape[1] == 3200 // 160
        for kind in ("infonce", "acpc"):
            if kind == "infonce":
                a = kstep_infonce(model.predict(c1), z1, f1).loss
                b = kstep_infonce(model.predict(c2), z2, f2).loss
            else:
                a = acpc_loss(model.predict(c1), z1, f1, horizon=4).loss
                b = acpc_loss(model.predict(c2), z2, f2, horizon=4).loss
            assert torch.isfinite(a) and torch.allclose(a, b, atol=1e-5), kind
    # the padding itself normalises to zeros and leaves the real part's statistics alone
    x = normalize_windows(padded, lengths=lengths)
    assert bool((x[0, 1500:] == 0).all())
    assert torch.allclose(x[0, :1500], normalize_windows(wave)[0], atol=1e-5)


def test_same_speaker_batches_hold_one_speaker_and_balanced_batches_mix() -> None:
    store = _store({"a": [9000, 3000], "b": [2500], "c": [700, 800, 900], "d": [4000]})
    for pack in (True, False):
        seg = make_segments(store.starts, store.lengths, store.speakers, pack=pack)
        plan = WindowPlan(seg, 1000, 4, seed=1, sampling="same_speaker")
        start, _ = plan.epoch_plan(0)
        assert start.shape[0] == plan.batches_per_epoch
        for row in start:
            assert len(set(_speaker_at(store, row))) == 1
        seen = {s for row in start for s in _speaker_at(store, row)}
        assert seen == {"a", "b", "c", "d"}
    seg = make_segments(store.starts, store.lengths, store.speakers, pack=True)
    plan = WindowPlan(seg, 1000, 4, seed=1, sampling="speaker_balanced")
    for e in range(3):
        for row in plan.epoch_plan(e)[0]:
            assert sorted(_speaker_at(store, row)) == ["a", "b", "c", "d"]
    uniform = WindowPlan(seg, 1000, 4, seed=1)
    assert uniform.batches_per_epoch == plan.batches_per_epoch


def test_plan_batches_resume_exactly_with_new_samplers() -> None:
    store = _store({"a": [9000, 3000], "b": [2500], "c": [700, 800]})
    seg = make_segments(store.starts, store.lengths, store.speakers, pack=True)
    for mode in ("same_speaker", "speaker_balanced"):
        plan = WindowPlan(seg, 1000, 3, seed=2, sampling=mode)
        a = PlanBatches(plan)
        ref = [a.next() for _ in range(3 * plan.batches_per_epoch + 2)]
        b = PlanBatches(plan)
        for _ in range(5):
            b.next()
        c = PlanBatches(plan)
        c.load_state_dict(b.state_dict())
        for i in range(5, len(ref)):
            got = c.next()
            assert torch.equal(got[0], ref[i][0]) and torch.equal(got[1], ref[i][1])


def test_transformer_predictors_are_causal() -> None:
    torch.manual_seed(0)
    for kind in ("transformer", "transformer_shared"):
        pred = build_predictor(kind, 16, 8, 3, heads=2, ff=32, dropout=0.1).eval()
        c = torch.randn(2, 12, 16)
        c2 = c.clone()
        c2[:, 7:] = torch.randn(2, 5, 16) * 10
        with torch.no_grad():
            p1, p2 = pred(c), pred(c2)
        assert p1.shape == (2, 12, 3, 8)
        assert torch.allclose(p1[:, :7], p2[:, :7], atol=1e-5), kind
        assert not torch.allclose(p1[:, 7:], p2[:, 7:]), kind


def test_align_costs_hand_made() -> None:
    # 2 predictions, 3 frames: alignments (1,1,2) and (1,2,2)
    cost = torch.tensor([[1.0, 5.0, 0.5], [9.0, 2.0, 4.0]])
    total, path = align_costs(cost)
    # (1,1,2): 1 + 5 + 4 = 10; (1,2,2): 1 + 2 + 4 = 7
    assert float(total) == 7.0 and path.tolist() == [0, 1, 1]
    rng = torch.Generator().manual_seed(0)
    cost = torch.rand(4, 3, 6, generator=rng)
    total, path = align_costs(cost)
    for i in range(4):
        best = math.inf
        for inc in itertools.product((0, 1), repeat=5):
            a = np.concatenate([[0], np.cumsum(inc)])
            if a[-1] == 2:
                best = min(best, float(sum(cost[i, a[m], m] for m in range(6))))
        assert abs(float(total[i]) - best) < 1e-6
        assert abs(float(cost[i, path[i], torch.arange(6)].sum()) - best) < 1e-6


def test_acpc_loss_hand_made() -> None:
    # one sequence, 4 frames, one-hot z; 2 predictions per frame aligned to 3 frames ahead.
    z = torch.eye(4).unsqueeze(0) * 3.0  # (1, 4, 4)
    pred = torch.zeros(1, 4, 2, 4)
    pred[0, 0, 0] = z[0, 1]  # at t = 0 prediction 1 says "frame 1" ...
    pred[0, 0, 1] = z[0, 3]  # ... and prediction 2 says "frame 3"
    out = acpc_loss(pred, z, horizon=3)
    # only t = 0 has 3 frames ahead; cost(k, m) = logsumexp(p_k . z) - p_k . z_{t+m}
    s = pred[0, 0] @ z[0].t()  # (2, 4)
    cost = torch.logsumexp(s, dim=1, keepdim=True) - s[:, 1:4]
    best = min(cost[0, 0] + cost[0, 1] + cost[1, 2], cost[0, 0] + cost[1, 1] + cost[1, 2])
    assert torch.allclose(out.loss, best / 3)
    assert out.num_candidates == 4 and out.step_acc.tolist()[0] == 1.0


def test_augmenter_keeps_lengths_and_is_seeded() -> None:
    cfg = AugmentConfig(speed_prob=1.0, reverb_prob=1.0, bandreject_prob=1.0, noise_prob=1.0,
                        speed_factors=[1.1])
    x = torch.sin(torch.arange(4000) * 0.05).repeat(3, 1)
    x[2, 3000:] = 0
    lengths = torch.tensor([4000, 4000, 3000])
    y1, l1 = Augmenter(cfg, SR, torch.Generator().manual_seed(4))(x, lengths)
    y2, l2 = Augmenter(cfg, SR, torch.Generator().manual_seed(4))(x, lengths)
    assert torch.equal(y1, y2) and torch.equal(l1, l2)
    assert l1.tolist() == [math.ceil(4000 / 1.1), math.ceil(4000 / 1.1), math.ceil(3000 / 1.1)]
    assert bool((y1[2, int(l1[2]):] == 0).all()) and bool(torch.isfinite(y1).all())
    assert not torch.allclose(y1[0, :100], x[0, :100])


def _weights_equal(e1, e2) -> None:
    for (name, p1), p2 in zip(e1.model.state_dict().items(), e2.model.state_dict().values()):
        assert torch.equal(p1, p2), name


def test_resume_exact_with_augmentation_and_samplers(short_dir: Path, tmp_path: Path) -> None:
    extra = [f"data.train={short_dir}", "data.short_utterances=pad",
             "data.batch_sampling=same_speaker", "augment.noise_prob=0.5",
             "augment.speed_prob=0.5", "augment.reverb_prob=0.5", "augment.bandreject_prob=0.5",
             "loss.negatives=cross_batch", "loss.n_negatives=8"]

    def cfg(out: Path, steps: int):
        return load_config(None, [*TINY, *extra, f"train.steps={steps}", f"train.out_dir={out}"])

    full = make_engine(cfg(tmp_path / "a", 4))
    full.run()
    part = make_engine(cfg(tmp_path / "b", 2))
    part.run()
    resumed = make_engine(cfg(tmp_path / "b", 4), resume=True)
    assert resumed.step == 2
    resumed.run()
    _weights_equal(full, resumed)
    assert torch.equal(full.task.aug_gen.get_state(), resumed.task.aug_gen.get_state())


def test_cpc2_preset_builds_and_trains_two_steps(short_dir: Path, tmp_path: Path) -> None:
    m = preset_config("cpc2")
    assert (m.context, m.context_layers, m.predictor, m.encoder_norm) == (
        "lstm", 2, "transformer", "channel")
    full = cpc2()
    assert len(full.heads.layers) == 12 and isinstance(full.context.rnn, torch.nn.LSTM)
    conf = ROOT / "recipes" / "librispeech" / "conf" / "cpc2.yaml"
    # the recipe's config at a CPU-test width: 32 channels, predictor 64 wide
    cfg = load_config(conf, [f"data.train={short_dir}", "data.window=2560", "data.batch_size=2",
                             "model.encoder_channels=32", "model.dim_c=32",
                             "model.predictor_ff=64",
                             "train.steps=2", "train.progress=false", "train.threads=1",
                             "train.log_every=1", "train.save_every=2", "optim.warmup_steps=1",
                             f"train.out_dir={tmp_path / 'cpc2'}"])
    for key in ("context", "context_layers", "predictor", "predictor_dropout", "n_steps"):
        assert getattr(cfg.model, key) == getattr(m, key), key
    engine = make_engine(cfg)
    metrics = engine.run()
    assert engine.step == 2 and math.isfinite(metrics["train/loss"])
    assert (tmp_path / "cpc2" / "last.pt").exists()


def test_acpc_trains_through_the_task(short_dir: Path, tmp_path: Path) -> None:
    cfg = load_config(None, [*TINY, f"data.train={short_dir}", "loss.kind=acpc",
                             "loss.acpc_horizon=5", "train.steps=2",
                             f"train.out_dir={tmp_path / 'acpc'}"])
    metrics = make_engine(cfg).run()
    assert math.isfinite(metrics["train/loss"]) and "step_acc/k05" in metrics
