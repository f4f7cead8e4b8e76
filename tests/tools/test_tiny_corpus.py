"""Consistency checks for the embedded corpus in ``data/tiny`` and the espeak-ng wrapper."""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf

TINY = Path(__file__).resolve().parents[2] / "data" / "tiny"
SPLITS = ("train", "dev", "test")
FILES = ("wav.scp", "utt2spk", "spk2utt", "text", "phone_frames.txt")
HOP = 160

pytestmark = pytest.mark.skipif(not TINY.is_dir(), reason="data/tiny not present")


def _table(path: Path) -> list[tuple[str, str]]:
    """``(key, rest)`` per line; asserts the Kaldi file conventions on the way."""
    raw = path.read_bytes()
    assert raw.endswith(b"\n"), f"{path}: no trailing newline"
    rows = []
    for i, line in enumerate(raw.decode("utf-8").split("\n")[:-1], 1):
        key, sep, rest = line.partition(" ")
        assert key and sep and rest.strip(), f"{path}:{i}: malformed line {line!r}"
        rows.append((key, rest))
    keys = [k.encode() for k, _ in rows]
    assert keys == sorted(keys), f"{path}: not sorted in C byte order"
    assert len(set(keys)) == len(keys), f"{path}: duplicate keys"
    return rows


def _dict(split: str, name: str) -> dict[str, str]:
    return dict(_table(TINY / split / name))


@pytest.mark.parametrize("split", SPLITS)
def test_data_dir_files_sorted_unique_consistent(split: str) -> None:
    utt_sets = {name: set(_dict(split, name)) for name in FILES if name != "spk2utt"}
    utts = utt_sets["wav.scp"]
    assert utts
    for name, keys in utt_sets.items():
        assert keys == utts, f"{split}/{name}: utterance set differs from wav.scp"

    utt2spk = _dict(split, "utt2spk")
    spk2utt = {k: v.split() for k, v in _table(TINY / split / "spk2utt")}
    assert {u for us in spk2utt.values() for u in us} == utts
    for spk, us in spk2utt.items():
        assert [u.encode() for u in us] == sorted(u.encode() for u in us)
        for u in us:
            assert utt2spk[u] == spk
            assert u.startswith(spk + "-"), f"{u}: id not prefixed by its speaker"
    for utt, path in _dict(split, "wav.scp").items():
        assert not Path(path).is_absolute()
        assert (TINY / split / path).is_file(), f"{split}/wav.scp: {utt}: {path} missing"


@pytest.mark.parametrize("split", SPLITS)
def test_label_frames_match_audio_length(split: str) -> None:
    wavs = _dict(split, "wav.scp")
    labels = _dict(split, "phone_frames.txt")
    for utt, path in wavs.items():
        info = sf.info(str(TINY / split / path))
        assert info.samplerate == 16000 and info.channels == 1
        assert info.subtype == "PCM_16"
        n_labels = len(labels[utt].split())
        assert abs(n_labels - info.frames // HOP) <= 1, (utt, n_labels, info.frames)


def test_labels_in_phone_table() -> None:
    rows = _table_unsorted(TINY / "phones.txt")
    assert rows[0] == ("SIL", "0")
    symbols = [s for s, _ in rows]
    assert [int(i) for _, i in rows] == list(range(len(rows)))
    assert len(set(symbols)) == len(symbols)
    table = set(symbols)
    seen: set[str] = set()
    for split in SPLITS:
        for utt, labs in _dict(split, "phone_frames.txt").items():
            bad = set(labs.split()) - table
            assert not bad, f"{split}/{utt}: labels not in phones.txt: {sorted(bad)}"
            seen.update(labs.split())
    assert seen == table, f"phones.txt has unused symbols: {sorted(table - seen)}"
    assert 40 <= len(table) <= 70


def _table_unsorted(path: Path) -> list[tuple[str, str]]:
    raw = path.read_text(encoding="utf-8")
    assert raw.endswith("\n")
    return [tuple(line.split()) for line in raw.splitlines()]  # type: ignore[misc]


def test_test_set_has_unseen_speaker() -> None:
    train = set(_dict("train", "utt2spk").values())
    dev = set(_dict("dev", "utt2spk").values())
    test = set(_dict("test", "utt2spk").values())
    assert test - train - dev, "test has no speaker unseen in train/dev"
    assert test & train, "test should also contain seen speakers"


def test_sentences_disjoint_across_splits() -> None:
    texts = {s: {t.strip().lower() for t in _dict(s, "text").values()} for s in SPLITS}
    assert not texts["train"] & texts["test"]
    assert not texts["train"] & texts["dev"]
    assert not texts["dev"] & texts["test"]


def test_espeak_phoneme_events_are_sane() -> None:
    pytest.importorskip("espeakng_loader")
    from cpc_seq.tools.espeak import SAMPLE_RATE, synthesize

    wav, sr, events = synthesize("Let there be light: and there was light.", "en-us+f3", 170)
    assert sr == SAMPLE_RATE == 22050
    assert wav.dtype.name == "float32" and wav.ndim == 1
    dur = len(wav) / sr
    assert 1.0 < dur < 5.0
    assert 0 < abs(wav).max() <= 1.0
    starts = [t for t, _ in events]
    assert len(events) >= 10
    assert all(b >= a for a, b in zip(starts, starts[1:])), starts
    assert starts[0] >= 0 and starts[-1] <= dur + 1e-3
    symbols = [s for _, s in events]
    assert all(isinstance(s, str) for s in symbols)
    # "light" -> l aI t, in that order, somewhere in the events (stress marks aside)
    plain = [s.strip("',") for s in symbols]
    assert "l" in plain and "aI" in plain and "t" in plain


def test_espeak_rejects_unknown_voice() -> None:
    pytest.importorskip("espeakng_loader")
    from cpc_seq.errors import DataError
    from cpc_seq.tools.espeak import synthesize

    with pytest.raises(DataError):
        synthesize("Hello there.", "en-us+nosuchvariant", 170)
