"""Tests for cpc_seq.audio.data.kaldi: data dirs, validation, labels, splits, writing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from cpc_seq.audio.data.kaldi import (
    DataDir,
    check_label_length,
    fit_labels,
    load_data_dir,
    phone_table_from_labels,
    read_frame_labels,
    read_phone_table,
    read_split,
    read_table,
    write_data_dir,
    write_phone_table,
)
from cpc_seq.audio.data.wav import AudioNotes
from cpc_seq.errors import DataError

FSDD = Path("/work/shared/data/fsdd")


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _audio(path: Path, seconds: float = 0.2, sr: int = 16000, channels: int = 1) -> Path:
    rng = np.random.default_rng(0)
    shape = (int(sr * seconds), channels) if channels > 1 else (int(sr * seconds),)
    sf.write(path, (0.1 * rng.standard_normal(shape)).astype(np.float32), sr)
    return path


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A small valid data dir: relative and absolute paths, FLAC and WAV."""
    d = tmp_path / "data" / "train"
    (d / "audio").mkdir(parents=True)
    _audio(d / "audio" / "a1.flac")
    _audio(d / "audio" / "a2.wav", seconds=0.1)
    b1 = _audio(tmp_path / "b1.wav", seconds=0.3)
    _write(d / "wav.scp", f"spkA-1 audio/a1.flac\nspkA-2 audio/a2.wav\nspkB-1 {b1}\n")
    _write(d / "utt2spk", "spkA-1 spkA\nspkA-2 spkA\nspkB-1 spkB\n")
    _write(d / "spk2utt", "spkA spkA-1 spkA-2\nspkB spkB-1\n")
    _write(d / "text", "spkA-1 one two\nspkA-2 three\nspkB-1 four\n")
    return d


# ----------------------------------------------------------------- happy paths


def test_load_data_dir_happy_path(data_dir: Path):
    dd = load_data_dir(data_dir)
    assert isinstance(dd, DataDir)
    assert dd.utts == ["spkA-1", "spkA-2", "spkB-1"] and len(dd) == 3
    assert Path(dd.wav["spkA-1"]).is_absolute()
    assert Path(dd.wav["spkA-1"]) == (data_dir / "audio" / "a1.flac").resolve()
    assert dd.utt2spk == {"spkA-1": "spkA", "spkA-2": "spkA", "spkB-1": "spkB"}
    assert dd.spk2utt == {"spkA": ["spkA-1", "spkA-2"], "spkB": ["spkB-1"]}
    assert dd.text["spkA-1"] == "one two"
    assert dd.segments is None
    lengths = [len(dd.load_audio(u)) for u in dd.utts]
    assert lengths == [3200, 1600, 4800]


def test_spk2utt_derived_and_no_trailing_newline(data_dir: Path):
    (data_dir / "spk2utt").unlink()
    _write(data_dir / "text", "spkA-1 one two\nspkA-2 three\nspkB-1 four")  # no final \n
    dd = load_data_dir(data_dir)
    assert dd.spk2utt == {"spkA": ["spkA-1", "spkA-2"], "spkB": ["spkB-1"]}
    assert dd.text["spkB-1"] == "four"


def test_crlf_and_tabs_tolerated(data_dir: Path):
    _write(data_dir / "utt2spk", "spkA-1\tspkA\r\nspkA-2 spkA\r\nspkB-1  spkB\r\n")
    dd = load_data_dir(data_dir)
    assert dd.utt2spk["spkA-1"] == "spkA" and dd.utt2spk["spkB-1"] == "spkB"


def test_segments(tmp_path: Path):
    d = tmp_path / "seg"
    d.mkdir()
    sr = 8000
    x = np.linspace(-0.5, 0.5, sr, dtype=np.float32)
    sf.write(d / "rec1.wav", x, sr, subtype="FLOAT")
    _write(d / "wav.scp", "rec1 rec1.wav\n")
    _write(d / "segments", "s1-a rec1 0.0 0.25\ns1-b rec1 0.5 -1\n")
    _write(d / "utt2spk", "s1-a s1\ns1-b s1\n")
    dd = load_data_dir(d)
    assert dd.utts == ["s1-a", "s1-b"]
    assert dd.segments["s1-b"] == ("rec1", 0.5, -1.0)
    np.testing.assert_array_equal(dd.load_audio("s1-a", target_sr=sr), x[:2000])
    np.testing.assert_array_equal(dd.load_audio("s1-b", target_sr=sr), x[4000:])
    notes = AudioNotes()
    assert len(dd.load_audio("s1-a", notes=notes)) == 4000
    assert notes.summary()[0].startswith("resampled from 8000 Hz to 16000 Hz: 1 utterance")


def test_segments_errors(tmp_path: Path):
    d = tmp_path / "seg"
    d.mkdir()
    _audio(d / "rec1.wav")
    _write(d / "wav.scp", "rec1 rec1.wav\n")
    _write(d / "segments", "s1-a rec1 0.0 0.1\ns1-b rec2 0.1 0.2\n")
    with pytest.raises(DataError, match=r"segments:2: recording 'rec2' is not in .*wav\.scp"):
        load_data_dir(d)
    _write(d / "segments", "s1-a rec1 0.0 0.1\ns1-b rec1 0.2 0.1\n")
    with pytest.raises(DataError, match=r"segments:2: end time 0.1 is not after"):
        load_data_dir(d)
    _write(d / "segments", "s1-a rec1 0.0 x\n")
    with pytest.raises(DataError, match=r"segments:1: start/end times must be numbers"):
        load_data_dir(d)
    _write(d / "segments", "s1-a rec1 0.0 0.1\n")
    _write(d / "utt2spk", "rec1 rec1\ns1-a s1\n")
    with pytest.raises(DataError, match=r"utt2spk:1: utterance 'rec1' is not in .*segments"):
        load_data_dir(d)


# ----------------------------------------------------------------- validation errors


def test_missing_wav_scp_names_dir(tmp_path: Path):
    with pytest.raises(DataError, match=r"empty.*no wav\.scp"):
        (tmp_path / "empty").mkdir()
        load_data_dir(tmp_path / "empty")
    with pytest.raises(DataError, match="data directory not found"):
        load_data_dir(tmp_path / "absent")


def test_unsorted_file(data_dir: Path):
    _write(data_dir / "text", "spkA-1 one\nspkB-1 four\nspkA-2 three\n")
    with pytest.raises(DataError, match=r"text:3: not sorted: key 'spkA-2' comes after 'spkB-1'"):
        load_data_dir(data_dir)
    load_data_dir(data_dir, check_sorted=False)  # opt-out works


def test_c_locale_order(tmp_path: Path):
    # In LC_ALL=C order uppercase comes before lowercase and '-' before digits.
    p = _write(tmp_path / "t", "B x\na x\na-1 x\na1 x\n")
    assert [k for _, k, _ in read_table(p)] == ["B", "a", "a-1", "a1"]
    p = _write(tmp_path / "t2", "a x\nB x\n")
    with pytest.raises(DataError, match=r"t2:2: not sorted"):
        read_table(p)


def test_duplicate_key(data_dir: Path):
    _write(
        data_dir / "wav.scp",
        "spkA-1 audio/a1.flac\nspkA-1 audio/a2.wav\nspkB-1 audio/a1.flac\n",
    )
    with pytest.raises(DataError, match=r"wav\.scp:2: duplicate key 'spkA-1' \(first on line 1\)"):
        load_data_dir(data_dir)


def test_utt_missing_from_one_file(data_dir: Path):
    _write(data_dir / "text", "spkA-1 one\nspkB-1 four\n")
    with pytest.raises(DataError, match=r"wav\.scp:2: utterance 'spkA-2' has no line in .*text"):
        load_data_dir(data_dir)
    _write(data_dir / "text", "spkA-1 one\nspkA-2 x\nspkA-3 y\nspkB-1 four\n")
    with pytest.raises(DataError, match=r"text:3: utterance 'spkA-3' is not in .*wav\.scp"):
        load_data_dir(data_dir)


def test_spk2utt_inconsistent(data_dir: Path):
    _write(data_dir / "spk2utt", "spkA spkA-1\nspkB spkA-2 spkB-1\n")
    with pytest.raises(
        DataError, match=r"spk2utt:2: utterance 'spkA-2' listed for speaker 'spkB' but .*utt2spk:2"
    ):
        load_data_dir(data_dir)
    _write(data_dir / "spk2utt", "spkA spkA-1\nspkB spkB-1\n")
    with pytest.raises(DataError, match=r"utt2spk:2: utterance 'spkA-2' is not listed in"):
        load_data_dir(data_dir)


def test_speaker_order_must_follow_utterance_order(data_dir: Path):
    (data_dir / "spk2utt").unlink()
    _write(data_dir / "utt2spk", "spkA-1 zed\nspkA-2 zed\nspkB-1 amy\n")
    with pytest.raises(DataError, match=r"utt2spk:3: .*start with their speaker id"):
        load_data_dir(data_dir)
    assert load_data_dir(data_dir, check_sorted=False).spk2utt["amy"] == ["spkB-1"]


def test_malformed_lines(tmp_path: Path):
    p = _write(tmp_path / "wav.scp", "a x.wav\n\nb y.wav\n")
    with pytest.raises(DataError, match=r"wav\.scp:2: empty line"):
        read_table(p)
    p = _write(tmp_path / "wav.scp", "a x.wav\n b y.wav\n")
    with pytest.raises(DataError, match=r"wav\.scp:2: line starts with whitespace"):
        read_table(p)
    p = _write(tmp_path / "wav.scp", "a x.wav\nb\n")
    with pytest.raises(DataError, match=r"wav\.scp:2: key 'b' has no value"):
        read_table(p)
    p = tmp_path / "bad_utf8"
    p.write_bytes(b"a x\nb \xff\n")
    with pytest.raises(DataError, match=r"bad_utf8:2: not valid UTF-8"):
        read_table(p)
    p = _write(tmp_path / "utt2spk", "a s1 s2\n")
    d = tmp_path / "d"
    d.mkdir()
    _write(d / "wav.scp", "a x.wav\n")
    _write(d / "utt2spk", "a s1 s2\n")
    with pytest.raises(DataError, match=r"utt2spk:1: expected 'a <speaker>'"):
        load_data_dir(d)


def test_empty_transcript_allowed(data_dir: Path):
    _write(data_dir / "text", "spkA-1\nspkA-2 three\nspkB-1 four\n")
    assert load_data_dir(data_dir).text["spkA-1"] == ""


# ----------------------------------------------------------------- pipes and audio errors


def test_piped_entry_refused(data_dir: Path):
    wav = data_dir / "audio" / "a2.wav"
    _write(
        data_dir / "wav.scp",
        f"spkA-1 audio/a1.flac\nspkA-2 cat {wav} |\nspkB-1 audio/a1.flac\n",
    )
    with pytest.raises(
        DataError,
        match=r"wav\.scp:2: piped entry refused \(runs a shell\); pass --allow-pipes to allow",
    ):
        load_data_dir(data_dir)


def test_piped_entry_allowed(data_dir: Path):
    wav = data_dir / "audio" / "a2.wav"
    _write(
        data_dir / "wav.scp",
        f"spkA-1 audio/a1.flac\nspkA-2 cat {wav} |\nspkB-1 audio/a1.flac\n",
    )
    dd = load_data_dir(data_dir, allow_pipes=True)
    assert dd.wav["spkA-2"] == f"cat {wav} |"
    np.testing.assert_array_equal(dd.load_audio("spkA-2"), sf.read(wav, dtype="float32")[0])


def test_missing_audio_names_utterance(data_dir: Path):
    (data_dir / "audio" / "a2.wav").unlink()
    dd = load_data_dir(data_dir)  # audio is not opened at load time
    with pytest.raises(DataError, match=r"wav\.scp:2: utterance 'spkA-2'.*a2\.wav"):
        dd.load_audio("spkA-2")
    with pytest.raises(DataError, match=r"no utterance 'nope'"):
        dd.load_audio("nope")


def test_nan_audio_in_data_dir(data_dir: Path):
    x = np.zeros(1600, np.float32)
    x[10] = np.nan
    sf.write(data_dir / "audio" / "a2.wav", x, 16000, subtype="FLOAT")
    with pytest.raises(DataError, match=r"utterance 'spkA-2'.*NaN"):
        load_data_dir(data_dir).load_audio("spkA-2")


def test_8k_stereo_through_data_dir(data_dir: Path):
    _audio(data_dir / "audio" / "a2.wav", seconds=0.1, sr=8000, channels=2)
    _audio(data_dir / "audio" / "a1.flac", seconds=0.2, sr=8000, channels=2)
    dd = load_data_dir(data_dir)
    notes = AudioNotes()
    a2 = dd.load_audio("spkA-2", notes=notes)
    a1 = dd.load_audio("spkA-1", notes=notes)
    dd.load_audio("spkB-1", notes=notes)
    assert a2.ndim == 1 and abs(len(a2) - 1600) <= 2 and abs(len(a1) - 3200) <= 2
    summary = notes.summary()
    assert len(summary) == 2
    assert any(s.startswith("resampled from 8000 Hz to 16000 Hz: 2 utterances") for s in summary)
    assert any(s.startswith("downmixed 2 channels to mono: 2 utterances") for s in summary)


# ----------------------------------------------------------------- writing


def test_write_then_load_roundtrip(tmp_path: Path):
    a = _audio(tmp_path / "a.wav")
    d = tmp_path / "out" / "dev"
    write_data_dir(
        d,
        wav={"s2-u1": str(a), "s1-u2": str(a), "s1-u1": str(a)},
        utt2spk={"s2-u1": "s2", "s1-u2": "s1", "s1-u1": "s1"},
        text={"s2-u1": "hello world", "s1-u2": "", "s1-u1": "x"},
    )
    assert (d / "wav.scp").read_text().endswith("\n")
    assert (d / "spk2utt").read_text() == "s1 s1-u1 s1-u2\ns2 s2-u1\n"
    assert (d / "utt2spk").read_text().splitlines()[0] == "s1-u1 s1"
    assert not list(d.glob(".*.tmp"))
    dd = load_data_dir(d)
    assert dd.utts == ["s1-u1", "s1-u2", "s2-u1"] and dd.text["s2-u1"] == "hello world"

    # With segments; the stale text is removed so the dir stays consistent.
    write_data_dir(
        d,
        wav={"rec": str(a)},
        utt2spk={"s1-a": "s1", "s1-b": "s1"},
        segments={"s1-b": ("rec", 0.1, -1), "s1-a": ("rec", 0.0, 0.1)},
    )
    assert not (d / "text").exists()
    assert (d / "segments").read_text() == "s1-a rec 0.0 0.1\ns1-b rec 0.1 -1.0\n"
    dd = load_data_dir(d)
    assert len(dd.load_audio("s1-a")) == 1600


def test_write_rejects_bad_input_before_writing(tmp_path: Path):
    d = tmp_path / "w"
    with pytest.raises(DataError, match="whitespace"):
        write_data_dir(d, wav={"a b": "x.wav"}, utt2spk={"a b": "s"})
    with pytest.raises(DataError, match=r"utt2spk: utterances differ"):
        write_data_dir(d, wav={"a": "x.wav", "b": "y.wav"}, utt2spk={"a": "s"})
    assert not d.exists()


# ----------------------------------------------------------------- labels and splits


def test_phone_labels_by_symbol_and_id(tmp_path: Path):
    phones = _write(tmp_path / "phones.txt", "<eps> 0\nSIL 1\nAA 2\nB 3\n")
    table = read_phone_table(phones)
    assert table == {"<eps>": 0, "SIL": 1, "AA": 2, "B": 3}
    sym = _write(tmp_path / "ali_sym.txt", "u1 SIL AA AA B\nu2 B B SIL\n")
    ids = _write(tmp_path / "ali_id.txt", "u1 1 2 2 3\nu2 3 3 1\n")
    by_sym = read_frame_labels(sym, table)
    by_id = read_frame_labels(ids)
    assert list(by_sym) == ["u1", "u2"]
    for u in by_sym:
        assert by_sym[u].dtype == np.int64
        np.testing.assert_array_equal(by_sym[u], by_id[u])
    np.testing.assert_array_equal(read_frame_labels(ids, table)["u1"], [1, 2, 2, 3])

    bad = _write(tmp_path / "ali_bad.txt", "u1 SIL AA\nu2 SIL ZH\n")
    with pytest.raises(DataError, match=r"ali_bad\.txt:2: unknown phone symbol 'ZH' in 'u2'"):
        read_frame_labels(bad, table)
    with pytest.raises(DataError, match=r"ali_sym\.txt:1: label 'SIL' .*not an integer"):
        read_frame_labels(sym)
    with pytest.raises(DataError, match=r"ali_id\.txt:1: unknown phone symbol '7'"):
        _write(tmp_path / "ali_id.txt", "u1 7\n")
        read_frame_labels(tmp_path / "ali_id.txt", table)


def test_phone_table_errors_and_roundtrip(tmp_path: Path):
    with pytest.raises(DataError, match=r"p1:2: id 1 already used on line 1"):
        read_phone_table(_write(tmp_path / "p1", "a 1\nb 1\n"))
    with pytest.raises(DataError, match=r"p2:1: id of 'a' is not an integer"):
        read_phone_table(_write(tmp_path / "p2", "a x\n"))
    with pytest.raises(DataError, match=r"p3:2: duplicate key 'a'"):
        read_phone_table(_write(tmp_path / "p3", "a 0\na 1\n"))
    labels = _write(tmp_path / "ali.txt", "u1 Z IY R\nu2 OW SIL\n")
    table = phone_table_from_labels(labels)
    assert table == {"IY": 0, "OW": 1, "R": 2, "SIL": 3, "Z": 4}
    out = write_phone_table(tmp_path / "lang" / "phones.txt", table)
    assert read_phone_table(out) == table


def test_read_split(tmp_path: Path):
    p = _write(tmp_path / "train_split.txt", "u1\nu3\n\nu2\n")
    assert read_split(p) == ["u1", "u3", "u2"]
    with pytest.raises(DataError, match=r"s2:2: duplicate utterance 'u1' \(first on line 1\)"):
        read_split(_write(tmp_path / "s2", "u1\nu1\n"))
    with pytest.raises(DataError, match=r"s3:1: expected one utterance id"):
        read_split(_write(tmp_path / "s3", "u1 3 4\n"))


def test_label_length_check_and_fit():
    check_label_length("u", 100, 102)
    check_label_length("u", 100, 98, tolerance=2)
    with pytest.raises(DataError, match=r"ali\.txt:5: utterance 'u' has 100 label frames .* 97"):
        check_label_length("u", 100, 97, path="ali.txt", line=5)
    with pytest.raises(DataError, match=r"^utterance 'u'"):
        check_label_length("u", 10, 20)
    labels = np.array([1, 2, 3], dtype=np.int64)
    np.testing.assert_array_equal(fit_labels(labels, 2), [1, 2])
    np.testing.assert_array_equal(fit_labels(labels, 5), [1, 2, 3, 3, 3])
    assert fit_labels(labels, 5).dtype == np.int64
    with pytest.raises(DataError):
        fit_labels(np.zeros(0, np.int64), 3)


# ----------------------------------------------------------------- real data


@pytest.mark.skipif(not (FSDD / "wav.scp").exists(), reason="FSDD data dir not present")
def test_fsdd_loads_and_validates():
    dd = load_data_dir(FSDD)
    assert len(dd) == 3000
    assert len(dd.spk2utt) == 6
    assert dd.text["george-0-00"] == "zero"
    table = phone_table_from_labels(FSDD / "phone_frames.txt")
    assert "SIL" in table and len(table) < 45
    labels = read_frame_labels(FSDD / "phone_frames.txt", table, check_sorted=True)
    assert len(labels) == 2983 and set(labels) <= set(dd.utts)
    notes = AudioNotes()
    for utt in dd.utts[:5]:
        if utt not in labels:
            continue
        wav = dd.load_audio(utt, 16000, notes=notes)
        n_frames = len(wav) // 160
        check_label_length(utt, len(labels[utt]), n_frames, path=FSDD / "phone_frames.txt")
        assert len(fit_labels(labels[utt], n_frames)) == n_frames
    assert notes.summary()[0].startswith("resampled from 8000 Hz to 16000 Hz: 5 utterances")
