"""split-data (Kaldi's utils/split_data.sh) and combine-scp for parallel extraction."""

from __future__ import annotations

from pathlib import Path

import kaldiio
import numpy as np
import pytest
import soundfile as sf

from cpc_seq.audio.data.kaldi import load_data_dir, read_table
from cpc_seq.audio.data.split import balanced_cuts, combine_tables, split_data_dir
from cpc_seq.cli import main
from cpc_seq.errors import CpcSeqError, DataError


def _data_dir(root: Path, speakers: dict[str, int], segments: bool = False,
              utt2spk: bool = True) -> Path:
    """A data dir under root/data with relative audio paths (../audio/...)."""
    audio = root / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    d = root / "data"
    d.mkdir()
    wav, u2s, text, seg, labels = [], [], [], [], []
    for spk, n in sorted(speakers.items()):
        for i in range(n):
            utt = f"{spk}-{i:03d}"
            u2s.append(f"{utt} {spk}")
            text.append(f"{utt} words of {utt}")
            labels.append(f"{utt} a a b")
            if segments:
                rec = f"{spk}-rec"
                seg.append(f"{utt} {rec} {i * 0.1:.2f} {i * 0.1 + 0.05:.2f}")
            else:
                sf.write(audio / f"{utt}.wav", np.zeros(800, np.float32), 16000)
                wav.append(f"{utt} ../audio/{utt}.wav")
        if segments:
            sf.write(audio / f"{spk}.wav", np.zeros(16000 * n, np.float32), 16000)
            wav.append(f"{spk}-rec ../audio/{spk}.wav")
    (d / "wav.scp").write_text("".join(f"{x}\n" for x in sorted(wav)))
    (d / "text").write_text("".join(f"{x}\n" for x in text))
    (d / "phone_frames.txt").write_text("".join(f"{x}\n" for x in labels))
    if utt2spk:
        (d / "utt2spk").write_text("".join(f"{x}\n" for x in u2s))
        (d / "spk2gender").write_text("".join(f"{s} f\n" for s in sorted(speakers)))
    if segments:
        (d / "segments").write_text("".join(f"{x}\n" for x in seg))
    return d


def test_balanced_cuts() -> None:
    assert balanced_cuts([1] * 10, 2) == [0, 5, 10]
    assert balanced_cuts([5, 1, 1, 1, 1, 1], 2) == [0, 1, 6]
    assert balanced_cuts([1, 1, 1], 3) == [0, 1, 2, 3]
    b = balanced_cuts([100, 1, 1], 3)  # every run gets at least one unit
    assert b == [0, 1, 2, 3]
    with pytest.raises(ValueError):
        balanced_cuts([1, 1], 3)


def test_split_by_speaker_gives_valid_sorted_parts(tmp_path: Path) -> None:
    d = _data_dir(tmp_path, {"spkA": 4, "spkB": 3, "spkC": 5, "spkD": 4})
    parts = split_data_dir(d, 3)
    assert parts == [d / "split3" / str(j) for j in (1, 2, 3)]
    seen_utts: list[str] = []
    seen_spks: list[set[str]] = []
    for part in parts:
        dd = load_data_dir(part)  # valid, sorted, consistent (raises otherwise)
        assert dd.utt2spk is not None and dd.text is not None
        for name in ("wav.scp", "utt2spk", "spk2utt", "text", "phone_frames.txt", "spk2gender"):
            raw = (part / name).read_text()
            assert raw.endswith("\n") and "\n\n" not in raw, name
            keys = [k for _, k, _ in read_table(part / name, require_value=name != "text")]
            assert keys == sorted(keys), name
        # relative audio paths still reach the same files
        for utt in dd.utts:
            assert Path(dd.wav[utt]).resolve() == (tmp_path / "audio" / f"{utt}.wav").resolve()
            assert len(dd.load_audio(utt)) == 800
        seen_utts += dd.utts
        seen_spks.append(set(dd.utt2spk.values()))
        assert (part / "spk2gender").read_text().split()[0] in seen_spks[-1]
    full = load_data_dir(d)
    assert sorted(seen_utts) == full.utts  # every utterance in exactly one part
    assert all(not (a & b) for i, a in enumerate(seen_spks) for b in seen_spks[i + 1:])
    sizes = [len(load_data_dir(p)) for p in parts]
    assert max(sizes) - min(sizes) <= 5


def test_split_refuses_more_parts_than_speakers(tmp_path: Path) -> None:
    d = _data_dir(tmp_path, {"spkA": 4, "spkB": 3})
    with pytest.raises(DataError, match=r"cannot split into 3 parts: it has only 2 speakers"):
        split_data_dir(d, 3)
    parts = split_data_dir(d, 3, per_utt=True)  # by utterance instead
    assert parts[0].parent.name == "split3utt"
    assert sum(len(load_data_dir(p)) for p in parts) == 7
    with pytest.raises(CpcSeqError, match="integer >= 1"):
        split_data_dir(d, 0)
    with pytest.raises(DataError, match="only 7 utterances"):
        split_data_dir(d, 8, per_utt=True)


def test_split_by_utterance_without_utt2spk(tmp_path: Path) -> None:
    d = _data_dir(tmp_path, {"spkA": 3, "spkB": 2}, utt2spk=False)
    parts = split_data_dir(d, 5)
    for p in parts:
        assert len(load_data_dir(p)) == 1
        assert not (p / "utt2spk").exists() and not (p / "spk2utt").exists()


def test_split_with_segments_keeps_the_recordings_used(tmp_path: Path) -> None:
    d = _data_dir(tmp_path, {"spkA": 3, "spkB": 2, "spkC": 2}, segments=True)
    parts = split_data_dir(d, 3)
    for p in parts:
        dd = load_data_dir(p)
        assert dd.segments is not None
        assert set(dd.wav) == {rec for rec, _, _ in dd.segments.values()}
        assert dd.load_audio(dd.utts[0]).shape == (800,)


def test_split_data_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = _data_dir(tmp_path, {"spkA": 2, "spkB": 2})
    assert main(["audio", "split-data", str(d), "2"]) == 0
    assert (d / "split2" / "2" / "wav.scp").is_file()
    assert main(["audio", "split-data", str(d), "9"]) == 2
    assert "only 2 speakers" in capsys.readouterr().err


def test_combine_scp(tmp_path: Path) -> None:
    a, b = tmp_path / "feats.1.scp", tmp_path / "feats.2.scp"
    kaldiio.save_ark(str(tmp_path / "f1.ark"), {"u3": np.ones((2, 3), np.float32),
                                                "u1": np.zeros((4, 3), np.float32)}, scp=str(a))
    kaldiio.save_ark(str(tmp_path / "f2.ark"), {"u2": np.full((1, 3), 2, np.float32)},
                     scp=str(b))
    out = tmp_path / "feats.scp"
    assert main(["audio", "combine-scp", str(out), str(a), str(b)]) == 0
    lines = out.read_text().splitlines()
    assert [x.split()[0] for x in lines] == ["u1", "u2", "u3"]
    assert out.read_text().endswith("\n")
    from cpc_seq.io.features import read_features

    feats = read_features(f"scp:{out}")
    assert float(feats["u2"][0, 0]) == 2.0 and feats["u1"].shape == (4, 3)
    with pytest.raises(DataError, match=r"feats\.2\.scp:1: key 'u2' is also on .*feats\.2\.scp:1"):
        combine_tables(out, [b, b])
