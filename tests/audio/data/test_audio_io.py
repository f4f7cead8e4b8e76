"""Tests for cpc_seq.audio.data.wav: reading, downmixing, resampling, segments, pipes."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from cpc_seq.audio.data.wav import AudioNotes, is_pipe, read_audio, read_segment
from cpc_seq.errors import DataError


def _tone(sr: int, seconds: float, channels: int = 1) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    x = 0.3 * np.sin(2 * np.pi * 220 * t).astype(np.float32)
    if channels == 1:
        return x
    return np.stack([x * (c + 1) / channels for c in range(channels)], axis=1)


def test_read_wav_and_flac_same_rate(tmp_path):
    x = _tone(16000, 0.25)
    for ext in ("wav", "flac"):
        p = tmp_path / f"a.{ext}"
        sf.write(p, x, 16000)
        notes = AudioNotes()
        y = read_audio(p, 16000, utt="a", notes=notes)
        assert y.dtype == np.float32 and y.ndim == 1 and y.shape == x.shape
        np.testing.assert_allclose(y, x, atol=1e-4)  # 16-bit quantisation
        assert notes.summary() == []


def test_resample_8k_to_16k(tmp_path):
    p = tmp_path / "a.wav"
    sf.write(p, _tone(8000, 0.5), 8000)
    notes = AudioNotes()
    y = read_audio(p, 16000, utt="a", notes=notes)
    assert y.dtype == np.float32
    assert abs(len(y) - 2 * 4000) <= 2
    assert np.isfinite(y).all()
    # The tone survives: about the same RMS.
    assert abs(np.sqrt(np.mean(y**2)) - 0.3 / np.sqrt(2)) < 0.02


def test_stereo_downmixed_by_mean(tmp_path):
    x = _tone(16000, 0.1, channels=2)
    p = tmp_path / "s.wav"
    sf.write(p, x, 16000, subtype="FLOAT")
    y = read_audio(p, 16000, utt="s")
    np.testing.assert_allclose(y, x.mean(axis=1), atol=1e-6)


def test_notes_reported_once_per_kind(tmp_path):
    notes = AudioNotes()
    for i in range(3):
        p = tmp_path / f"{i}.wav"
        sf.write(p, _tone(8000, 0.1, channels=2), 8000)
        read_audio(p, 16000, utt=f"u{i}", notes=notes)
    lines = notes.summary()
    assert len(lines) == 2
    assert lines[0].startswith("downmixed 2 channels to mono: 3 utterances")
    assert lines[1].startswith("resampled from 8000 Hz to 16000 Hz: 3 utterances")
    assert "'u0'" in lines[1]
    other = AudioNotes()
    other.add("resampled from 8000 Hz to 16000 Hz", "v")
    notes.merge(other)
    assert notes.count("resampled from 8000 Hz to 16000 Hz") == 4


def test_missing_file_names_utterance_and_path(tmp_path):
    p = tmp_path / "nope.wav"
    with pytest.raises(DataError, match=r"data/x/wav.scp:7: utterance 'spk-1'.*nope\.wav"):
        read_audio(p, utt="spk-1", origin="data/x/wav.scp:7")
    with pytest.raises(DataError, match=r"utterance 'spk-1'.*not found"):
        read_audio(p, utt="spk-1")


def test_unreadable_file(tmp_path):
    p = tmp_path / "junk.wav"
    p.write_bytes(b"this is not audio")
    with pytest.raises(DataError, match=r"utterance 'j'.*cannot read.*junk\.wav"):
        read_audio(p, utt="j")


def test_nan_audio_rejected(tmp_path):
    x = _tone(16000, 0.1)
    x[100] = np.nan
    x[200] = np.inf
    p = tmp_path / "nan.wav"
    sf.write(p, x, 16000, subtype="FLOAT")
    with pytest.raises(DataError, match=r"utterance 'bad'.*2 NaN/Inf"):
        read_audio(p, utt="bad")


def test_empty_audio_rejected(tmp_path):
    p = tmp_path / "empty.wav"
    sf.write(p, np.zeros(0, np.float32), 16000)
    with pytest.raises(DataError, match="no audio samples"):
        read_audio(p, utt="e")


def test_read_segment_reads_only_that_part(tmp_path):
    sr = 8000
    x = (np.arange(sr, dtype=np.float32) / sr - 0.5).astype(np.float32)  # ramp, 1 s
    p = tmp_path / "rec.wav"
    sf.write(p, x, sr, subtype="FLOAT")
    y = read_segment(p, 0.25, 0.5, sr)
    np.testing.assert_array_equal(y, x[2000:4000])
    # -1 = end of recording; a small overshoot is cut at the end.
    np.testing.assert_array_equal(read_segment(p, 0.75, -1, sr), x[6000:])
    np.testing.assert_array_equal(read_segment(p, 0.75, 1.2, sr), x[6000:])
    # resampled segment has twice the samples
    assert abs(len(read_segment(p, 0.25, 0.5, 16000)) - 4000) <= 2
    with pytest.raises(DataError, match=r"segments:3: utterance 'u'.*starts at 2"):
        read_segment(p, 2.0, 3.0, sr, utt="u", origin="segments:3")
    with pytest.raises(DataError, match=r"ends at 3"):
        read_segment(p, 0.5, 3.0, sr, utt="u")
    with pytest.raises(DataError, match="bad segment times"):
        read_segment(p, 0.5, 0.4, sr, utt="u")


def test_pipe_refused_by_default(tmp_path):
    p = tmp_path / "a.wav"
    sf.write(p, _tone(16000, 0.1), 16000)
    entry = f"cat {p} |"
    assert is_pipe(entry) and not is_pipe(str(p))
    with pytest.raises(
        DataError, match=r"wav.scp:4: piped entry refused \(runs a shell\); pass --allow-pipes"
    ):
        read_audio(entry, origin="wav.scp:4", utt="a")


def test_pipe_allowed(tmp_path):
    p = tmp_path / "a.wav"
    x = _tone(8000, 0.2)
    sf.write(p, x, 8000, subtype="FLOAT")
    entry = f"cat {p} |"
    notes = AudioNotes()
    y = read_audio(entry, 8000, utt="a", allow_pipes=True, notes=notes)
    np.testing.assert_array_equal(y, x)
    seg = read_segment(entry, 0.05, 0.1, 8000, utt="a", allow_pipes=True)
    np.testing.assert_array_equal(seg, x[400:800])
    y16 = read_audio(entry, 16000, utt="a", allow_pipes=True, notes=notes)
    assert abs(len(y16) - 2 * len(x)) <= 2
    assert len(notes.summary()) == 1


def test_failing_pipe(tmp_path):
    with pytest.raises(DataError, match=r"utterance 'a'.*failed with status"):
        read_audio(f"cat {tmp_path / 'missing.wav'} |", utt="a", allow_pipes=True)
    with pytest.raises(DataError, match=r"wrote no audio"):
        read_audio("true |", utt="a", allow_pipes=True)
