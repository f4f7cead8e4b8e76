"""cpc_seq.extract: the library call, long recordings in spans (same features as the
whole utterance, memory that does not grow with the duration), and finite output
(huge finite samples normalise without overflow; an overflowing model is an error
naming the utterance, with nothing written)."""

from __future__ import annotations

import re
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import soundfile as sf
import torch

import cpc_seq
from cpc_seq.audio.data.kaldi import DataDir
from cpc_seq.audio.data.wav import read_audio
from cpc_seq.audio.extract import run_layers
from cpc_seq.audio.model.cpc import ModelConfig, build_model
from cpc_seq.cli import main
from cpc_seq.errors import CpcSeqError
from cpc_seq.io.checkpoint import save_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")  # torch on one thread

ROOT = Path(__file__).resolve().parents[2]
AUDIO = ROOT / "data" / "tiny" / "audio"

PAPER_32 = [[k, s, 32] for k, s in ((10, 5), (8, 4), (4, 2), (4, 2), (4, 2))]
#: kernels that are not a multiple of the stride and a stride-1 layer (other conv paths)
ODD = [[10, 5, 8], [8, 4, 12], [5, 2, 8], [3, 1, 6]]




def _config(layers: list[list[int]] = PAPER_32, context: str = "gru") -> dict:
    return {"encoder": "custom", "encoder_layers": layers, "dim_c": 16, "context": context,
            "n_steps": 2}


def _model(layers: list[list[int]] = PAPER_32, context: str = "gru") -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig(**_config(layers, context))).eval()


def _speech(seconds: float) -> np.ndarray:
    """Real speech from the embedded corpus, repeated to ``seconds`` at 16 kHz."""
    parts = [read_audio(p) for p in sorted(AUDIO.glob("*.flac"))[:3]]
    x = np.concatenate(parts)
    return np.tile(x, int(seconds * 16000) // len(x) + 1)[: int(seconds * 16000)]


def _checkpoint(path: Path, model: torch.nn.Module, scale: float = 1.0) -> Path:
    """``model`` (built from :func:`_config`'s defaults) with its weights times ``scale``."""
    state = {k: v * scale if v.is_floating_point() else v
             for k, v in model.state_dict().items()}
    save_checkpoint({"kind": "audio_cpc", "config": {"model": _config()}, "model": state}, path)
    return path


def _data_dir(d: Path, waves: dict[str, np.ndarray], subtype: str = "PCM_16") -> Path:
    d.mkdir(parents=True, exist_ok=True)
    lines = []
    for utt, w in sorted(waves.items()):
        sf.write(d / f"{utt}.wav", w, 16000, subtype=subtype)
        lines.append(f"{utt} {d / f'{utt}.wav'}\n")
    (d / "wav.scp").write_text("".join(lines))
    return d


# --------------------------------------------------------------------------- chunking


@pytest.mark.parametrize("layers,context", [(PAPER_32, "gru"), (ODD, "lstm")])
def test_chunked_features_equal_the_whole_utterance(layers: list, context: str) -> None:
    from cpc_seq.audio.extract import encoder_reach

    model = _model(layers, context)
    reach = encoder_reach(model)
    assert reach.left >= 0 and reach.right >= 0 and reach.hop == model.downsample_rate
    g = torch.Generator().manual_seed(3)
    wave = torch.randn(3 * 16000 + 77, generator=g) * 3000 + 1  # int16 scale, DC offset
    names = model.layer_names
    whole = run_layers(model, [wave], names)[0]
    for chunk_seconds in (0.07, 0.5, 1.3):  # spans of 7, 50, 130 frames
        got = cpc_seq.extract([wave], model, layer=names, chunk_seconds=chunk_seconds)[0]
        for name in names:
            assert got[name].shape == tuple(whole[name].shape), (chunk_seconds, name)
            scale = float(whole[name].abs().max())
            np.testing.assert_allclose(got[name], whole[name].numpy(), rtol=0,
                                       atol=1e-5 * scale, err_msg=f"{chunk_seconds} {name}")


def test_long_file_is_streamed_in_spans_to_the_same_features(tmp_path: Path,
                                                             monkeypatch) -> None:
    """A data dir with a long recording (read in spans, never decoded whole), a stereo
    one, a segment of the long one and a short one: ark/scp and npy output equal the
    unchunked run; utt2num_frames agrees."""
    model = _model()
    ckpt = _checkpoint(tmp_path / "m.pt", model)
    long = _speech(4.0)
    stereo = np.stack([_speech(3.0), _speech(3.0)[::-1].copy()], axis=1)
    d = _data_dir(tmp_path / "data", {"a_long": long, "b_short": long[:8000]})
    sf.write(d / "c_stereo.wav", stereo, 16000, subtype="PCM_16")
    rec = (d / "wav.scp").read_text() + f"c_stereo {d / 'c_stereo.wav'}\n"
    (d / "wav.scp").write_text(rec)
    seg = tmp_path / "seg"
    seg.mkdir()
    (seg / "wav.scp").write_text(f"rec {d / 'a_long.wav'}\n")
    (seg / "segments").write_text("s1 rec 0.53 3.91\ns2 rec 1.0 -1\n")
    decoded: list[str] = []
    real_load = DataDir.load_audio

    def spy(self, utt, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
        decoded.append(utt)
        return real_load(self, utt, *a, **k)

    for src in (d, seg):
        ref = tmp_path / f"ref_{src.name}"
        assert main(["audio", "extract", "--ckpt", str(ckpt), "--no-progress", "--chunk-seconds", "100",
                     f"scp:{src}/wav.scp", f"ark,scp:{ref}.ark,{ref}.scp"]) == 0
        whole = dict(kaldiio.load_scp(f"{ref}.scp"))
        decoded.clear()
        monkeypatch.setattr(DataDir, "load_audio", spy)
        out = tmp_path / f"out_{src.name}"
        assert main(["audio", "extract", "--ckpt", str(ckpt), "--no-progress", "--chunk-seconds", "0.4",
                     "--write-num-frames", f"ark,t:{out}/utt2num_frames",
                     f"scp:{src}/wav.scp", f"ark,scp:{out}/c.ark,{out}/c.scp"]) == 0
        assert main(["audio", "extract", "--ckpt", str(ckpt), "--no-progress", "--chunk-seconds", "0.4",
                     f"scp:{src}/wav.scp", f"npy:{out}/npy"]) == 0
        monkeypatch.setattr(DataDir, "load_audio", real_load)
        assert set(decoded) <= {"b_short"}  # the long ones were never decoded whole
        chunked = dict(kaldiio.load_scp(f"{out}/c.scp"))
        nf = dict(line.split() for line in (out / "utt2num_frames").read_text().splitlines())
        assert sorted(chunked) == sorted(whole)
        for utt, ref_feats in whole.items():
            scale = float(np.abs(ref_feats).max())
            np.testing.assert_allclose(chunked[utt], ref_feats, rtol=0, atol=1e-5 * scale)
            np.testing.assert_array_equal(np.load(out / "npy" / f"{utt}.npy"), chunked[utt])
            assert int(nf[utt]) == len(ref_feats)


def test_memory_does_not_grow_with_the_recording(tmp_path: Path, monkeypatch) -> None:
    """The samples read at once and the largest encoder input are the same for a 2 s
    and an 8 s recording (spans of 0.25 s plus the encoder's reach; statistics in
    blocks); nothing of the recording is decoded whole."""
    from cpc_seq.audio import extract as extract_mod
    from cpc_seq.audio import extract_pipeline
    from cpc_seq.audio.extract import encoder_reach

    model = _model()
    ckpt = _checkpoint(tmp_path / "m.pt", model)
    seen: dict[str, int] = {}
    real_norm = extract_mod.normalize_span

    def spy(x, stats):  # noqa: ANN001, ANN202
        seen["encoder_in"] = max(seen.get("encoder_in", 0), len(x))
        return real_norm(x, stats)

    monkeypatch.setattr(extract_mod, "normalize_span", spy)
    monkeypatch.setattr(extract_pipeline, "STAT_BLOCK", 4000)
    real_reader = extract_pipeline._FileSpan.reader

    def reader(self, notes):  # noqa: ANN001, ANN202
        read = real_reader(self, notes)

        def counted(a: int, b: int) -> torch.Tensor:
            seen["read"] = max(seen.get("read", 0), b - a)
            return read(a, b)

        return counted

    monkeypatch.setattr(extract_pipeline._FileSpan, "reader", reader)
    peaks = []
    for seconds in (2.0, 8.0):
        seen.clear()
        d = _data_dir(tmp_path / f"d{seconds}", {"x": _speech(seconds)})
        out = tmp_path / f"o{seconds}"
        assert main(["audio", "extract", "--ckpt", str(ckpt), "--no-progress", "--chunk-seconds", "0.25",
                     f"scp:{d}/wav.scp", f"ark,scp:{out}.ark,{out}.scp"]) == 0
        assert kaldiio.load_mat(f"{out}.ark:2").shape[0] == int(seconds * 100)
        peaks.append(dict(seen))
    reach = encoder_reach(model)
    assert peaks[0] == peaks[1]
    assert peaks[1]["encoder_in"] <= 4000 + 2 * reach.hop + reach.left + reach.right
    assert peaks[1]["read"] <= 4000 + 2 * reach.hop + reach.left + reach.right


def test_transformer_context_refuses_long_utterances_for_c() -> None:
    model = _model(context="transformer")
    wave = torch.randn(16000)
    with pytest.raises(CpcSeqError, match=r"waveform 0: 1\.0 s is longer than chunk_seconds"
                       r"=0\.5: layer c of a Transformer context"):
        cpc_seq.extract([wave], model, layer="c", chunk_seconds=0.5)
    z = cpc_seq.extract([wave], model, layer="z", chunk_seconds=0.5)[0]  # z is chunked
    whole = run_layers(model, [wave], ["z"])[0]["z"].numpy()
    np.testing.assert_allclose(z, whole, rtol=0, atol=1e-5 * np.abs(whole).max())
    assert cpc_seq.extract([wave], model, layer="c")[0].shape == (100, 16)  # under 60 s


def test_extract_library_call_matches_the_command(tmp_path: Path) -> None:
    model = _model()
    ckpt = _checkpoint(tmp_path / "m.pt", model)
    waves = {"u1": _speech(1.3), "u2": _speech(0.7)}
    d = _data_dir(tmp_path / "d", waves)
    summary = cpc_seq.extract(f"scp:{d}/wav.scp", str(ckpt), layer="z",
                              output=f"npy:{tmp_path / 'npy'}")
    assert summary.frames == {"u1": 130, "u2": 70} and summary.audio_seconds == pytest.approx(2.0)
    arrays = cpc_seq.extract([read_audio(d / "u1.wav"), read_audio(d / "u2.wav")], ckpt,
                             layer="z")
    for utt, arr in zip(("u1", "u2"), arrays):
        np.testing.assert_array_equal(np.load(tmp_path / "npy" / f"{utt}.npy"), arr)
    with pytest.raises(CpcSeqError, match="a data dir needs an output"):
        cpc_seq.extract(str(d), ckpt)
    with pytest.raises(CpcSeqError, match="--chunk-seconds must be positive"):
        cpc_seq.extract([waves["u1"]], model, chunk_seconds=0)


# --------------------------------------------------------------------------- finite output


def test_huge_finite_samples_normalise_without_overflow(tmp_path: Path) -> None:
    """A valid float WAV whose peaks are near 1.35e38: its features are finite and equal
    to those of the same speech at ordinary scale (normalisation is scale-free)."""
    model = _model()
    ckpt = _checkpoint(tmp_path / "m.pt", model)
    speech = _speech(1.5).astype(np.float32)
    huge = (speech / np.abs(speech).max() * np.float32(1.35e38)).astype(np.float32)
    assert np.isfinite(huge).all() and np.abs(huge).max() > 1.3e38
    d = _data_dir(tmp_path / "d", {"huge": huge, "plain": speech}, subtype="FLOAT")
    out = tmp_path / "f"
    for i, chunk in enumerate([[], ["--chunk-seconds", "0.5"]]):  # whole, and in spans
        assert main(["audio", "extract", "--ckpt", str(ckpt), "--no-progress", *chunk,
                     f"scp:{d}/wav.scp", f"ark,scp:{out}{i}.ark,{out}{i}.scp"]) == 0
        feats = dict(kaldiio.load_scp(f"{out}{i}.scp"))
        assert np.isfinite(feats["huge"]).all()
        np.testing.assert_allclose(feats["huge"], feats["plain"], rtol=0, atol=1e-4)


@pytest.mark.parametrize("wspec", ["ark,scp", "npy"])
def test_overflowing_checkpoint_is_an_error_with_nothing_written(tmp_path: Path, capsys,
                                                                 wspec: str) -> None:
    """Finite weights near 1e30 (what training with lr=1e30 keeps) overflow to NaN/Inf:
    exit 2 with one line naming the utterance; no scp, no entry, no npy file."""
    ckpt = _checkpoint(tmp_path / "m.pt", _model(), scale=1e30)
    d = _data_dir(tmp_path / "d", {"u1": _speech(1.0), "u2": _speech(0.5)})
    out = tmp_path / "f"
    target = f"ark,scp:{out}.ark,{out}.scp" if wspec == "ark,scp" else f"npy:{out}"
    for chunk in ([], ["--chunk-seconds", "0.3"]):  # whole, and in spans
        rc = main(["audio", "extract", "--ckpt", str(ckpt), "--no-progress", *chunk,
                   f"scp:{d}/wav.scp", target])
        err = capsys.readouterr().err
        assert rc == 2, err
        assert "error: utterance u1: " in err and "NaN/Inf" in err and "nothing written" in err
        assert re.search(r"largest \|weight\| is \d(\.\d+)?e\+(29|30)", err), err
        if wspec == "npy":
            assert not list(out.glob("*.npy")) and not list(out.glob(".*tmp"))
        else:
            assert not Path(f"{out}.scp").exists()
            assert Path(f"{out}.ark").stat().st_size == 0
    with pytest.raises(CpcSeqError, match="waveform 0: .* NaN/Inf"):
        cpc_seq.extract([_speech(0.5)], ckpt)


def test_long_recording_at_another_rate_is_decoded_then_computed_in_spans(
        tmp_path: Path) -> None:
    """An 8 kHz recording longer than a span: resampled whole (as the reader does), then
    computed in spans; the features equal the unchunked run."""
    ckpt = _checkpoint(tmp_path / "m.pt", _model())
    d = tmp_path / "d"
    d.mkdir()
    sf.write(d / "r.wav", _speech(3.0)[::2], 8000, subtype="PCM_16")
    (d / "wav.scp").write_text(f"r {d / 'r.wav'}\n")
    feats = []
    for chunk in ("60", "0.4"):
        out = tmp_path / f"o{chunk}"
        assert main(["audio", "extract", "--ckpt", str(ckpt), "--no-progress", "--chunk-seconds", chunk,
                     f"scp:{d}/wav.scp", f"npy:{out}"]) == 0
        feats.append(np.load(out / "r.npy"))
    assert feats[0].shape == (300, 16)
    np.testing.assert_allclose(feats[1], feats[0], rtol=0, atol=1e-5 * np.abs(feats[0]).max())


def test_a_stream_that_fails_midway_leaves_nothing_and_resumes(tmp_path: Path, capsys,
                                                               monkeypatch) -> None:
    from cpc_seq.audio import extract_pipeline

    ckpt = _checkpoint(tmp_path / "m.pt", _model())
    d = _data_dir(tmp_path / "d", {"a": _speech(1.0), "b_long": _speech(4.0)})
    args = ["extract", "--ckpt", str(ckpt), "--no-progress", "--chunk-seconds", "0.5",
            f"scp:{d}/wav.scp"]
    ref = tmp_path / "ref"
    assert main([*args, f"ark,scp:{ref}.ark,{ref}.scp"]) == 0
    real_reader = extract_pipeline._FileSpan.reader

    def failing(self, notes):  # noqa: ANN001, ANN202
        read, calls = real_reader(self, notes), [0]

        def once_too_often(a: int, b: int) -> torch.Tensor:
            calls[0] += 1
            if calls[0] == 5:  # the statistics pass, then 3 spans, then this one
                raise extract_pipeline.DataError("utterance 'b_long': disk went away")
            return read(a, b)

        return once_too_often

    monkeypatch.setattr(extract_pipeline._FileSpan, "reader", failing)
    out = tmp_path / "out"
    assert main([*args, f"ark,scp:{out}.ark,{out}.scp"]) == 2
    assert "disk went away" in capsys.readouterr().err
    assert not Path(f"{out}.scp").exists()
    # 'a' (streamed too: 1 s is over 0.5) is complete; b_long's half entry was cut off
    assert Path(f"{out}.scp.partial").read_text().split()[0] == "a"
    monkeypatch.setattr(extract_pipeline._FileSpan, "reader", real_reader)
    assert main([*args, "--skip-existing", f"ark,scp:{out}.ark,{out}.scp"]) == 0
    got, want = dict(kaldiio.load_scp(f"{out}.scp")), dict(kaldiio.load_scp(f"{ref}.scp"))
    assert sorted(got) == sorted(want)
    for utt in want:
        np.testing.assert_array_equal(got[utt], want[utt])


def test_chunked_features_of_an_unnormalised_model() -> None:
    """``input_norm: none`` (imported CPC_audio models): spans take the samples as read."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(**_config(), input_norm="none")).eval()
    wave = torch.from_numpy(_speech(2.0))
    whole = run_layers(model, [wave], ["c"])[0]["c"].numpy()
    got = cpc_seq.extract([wave], model, chunk_seconds=0.3)[0]
    np.testing.assert_allclose(got, whole, rtol=0, atol=1e-5 * np.abs(whole).max())
    normalised = _model()
    assert not np.allclose(cpc_seq.extract([wave], normalised)[0], whole, atol=1e-3)
