"""Reliability of input handling (issue 13): probe splits, API input checks, BOMs,
truncated audio, validate-data reading what extract reads, labels without audio."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers.runs import TINY_AUDIO

from cpc_seq.cli import main
from cpc_seq.errors import DataError

pytestmark = pytest.mark.usefixtures("one_thread")  # torch on one thread

ROOT = Path(__file__).resolve().parents[2]
DEV = ROOT / "data" / "tiny" / "dev"

TINY = TINY_AUDIO




@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ckpt") / "run"
    assert main(["audio", "train", *TINY, "train.steps=2", f"train.out_dir={out}"]) == 0
    return out / "last.pt"


# ------------------------------------------------------------ 1: the default probe split


def _npy_feats(d: Path, utts: list[str], frames: int = 12, dim: int = 4) -> None:
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for u in utts:
        np.save(d / f"{u}.npy", rng.standard_normal((frames, dim)).astype(np.float32))


def _labels(path: Path, utts: list[str], frames: int = 12) -> None:
    path.write_text("".join(f"{u} {' '.join('ab'[(i // 3) % 2] for i in range(frames))}\n"
                            for u in utts))


def test_probe_default_split_never_tests_on_training_data(tmp_path: Path, capsys) -> None:
    """Three utterances of one speaker: no test utterance remains, which is an error
    (6766a5a tested on the three training utterances and reported it as test accuracy)."""
    utts = ["s1-a", "s1-b", "s1-c"]
    _npy_feats(tmp_path / "f", utts)
    _labels(tmp_path / "lab", utts)
    (tmp_path / "u2s").write_text("".join(f"{u} s1\n" for u in utts))
    rc = main(["audio", "probe", "phone", "--no-progress", "--epochs", "1", "--feats",
               f"npy:{tmp_path / 'f'}", "--labels", str(tmp_path / "lab"), "--utt2spk",
               str(tmp_path / "u2s"), "--out", str(tmp_path / "p")])
    err = capsys.readouterr().err
    assert rc == 2 and "no test utterances" in err and "--train-split" in err
    assert not (tmp_path / "p" / "result.json").exists()


def test_probe_default_split_small_speakers_train_only(tmp_path: Path, capsys) -> None:
    big = [f"s1-{i}" for i in range(5)]
    small = ["s2-0", "s2-1", "s2-2"]
    _npy_feats(tmp_path / "f", big + small)
    _labels(tmp_path / "lab", big + small + ["s9-stray"])
    (tmp_path / "u2s").write_text("".join(f"{u} {u[:2]}\n" for u in big + small))
    rc = main(["audio", "probe", "phone", "--no-progress", "--epochs", "1", "--feats",
               f"npy:{tmp_path / 'f'}", "--labels", str(tmp_path / "lab"), "--utt2spk",
               str(tmp_path / "u2s"), "--out", str(tmp_path / "p")])
    err = capsys.readouterr().err
    assert rc == 0, err
    res = json.loads((tmp_path / "p" / "result.json").read_text())
    assert res["test_utterances"] == 1 and res["train_utterances"] == 7
    assert "1 speakers have fewer than 5 utterances" in err
    # labels whose utterance has no features get a message (issue item 10)
    assert "1 labelled utterances have no features (first s9-stray)" in err


def test_split_files_sharing_an_utterance_are_refused() -> None:
    from cpc_seq.probes.tasks import choose_split

    with pytest.raises(DataError, match="share 1 utterances"):
        choose_split(["a", "b", "c"], ["a", "b"], ["b", "c"])


def test_phone_probe_with_an_empty_test_list_is_an_error(tmp_path: Path) -> None:
    from cpc_seq.probes.options import ProbeOptions
    from cpc_seq.probes.tasks import phone_probe

    f = {"a": torch.zeros(4, 2), "b": torch.ones(4, 2)}
    lab = {"a": np.zeros(4, dtype=np.int64), "b": np.ones(4, dtype=np.int64)}
    with pytest.raises(DataError, match="0 test"):
        phone_probe(f, f, lab, lab, {"x": 0, "y": 1}, tmp_path, "n", ProbeOptions(epochs=1),
                    ["a", "b"], [])


# ------------------------------------------------------------ 6: API input checks


def test_api_extract_features_checks_its_input(ckpt: Path) -> None:
    import cpc_seq

    up = cpc_seq.load(ckpt)
    good = np.random.default_rng(0).standard_normal(3200).astype(np.float32) * 0.1
    assert up.extract_features([good])["hidden_states"][1].shape[1] == 20
    nan = good.copy()
    nan[7] = np.nan
    with pytest.raises(DataError, match="waveform 1: 1 NaN/Inf"):
        up.extract_features([good, nan])
    inf = good.copy()
    inf[3] = np.inf
    with pytest.raises(DataError, match="waveform 0: 1 NaN/Inf"):
        up.extract_features([torch.from_numpy(inf)])
    with pytest.raises(DataError, match=r"waveform 0: shape \(2, 3200\), expected 1-D"):
        up.extract_features([np.stack([good, good])])
    with pytest.raises(DataError, match="waveform 0: 0 samples is shorter than one frame"):
        up.extract_features([np.zeros(0, dtype=np.float32)])
    with pytest.raises(DataError, match="waveform 1: 100 samples is shorter than one frame"):
        up.extract_features([good, good[:100]])
    with pytest.raises(DataError, match="no waveforms"):
        up.extract_features([])
    with pytest.raises(DataError, match="not an array of samples"):
        up.extract_features([["a", "b"]])


def test_text_api_checks_its_input() -> None:
    from cpc_seq.text.extract import TextUpstream
    from cpc_seq.text.models import TextModelConfig, build_text_model
    from cpc_seq.text.tokenizers import ByteTokenizer

    cfg = TextModelConfig(level="token", vocab_size=257, embed_dim=8,
                          encoder_layers=[[2, 2, 16]], dim_c=16, n_steps=2)
    up = TextUpstream(build_text_model(cfg), ByteTokenizer())
    assert up.extract_features(["abcd"])["hidden_states"][0].shape[1] == 2
    with pytest.raises(DataError, match="text item 1: expected a string, got int"):
        up.extract_features(["abc", 3])  # type: ignore[list-item]
    with pytest.raises(DataError, match="not one string"):
        up.extract_features("abc")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="text item 0 is empty"):
        up.extract_features([""])


# ------------------------------------------------------------ 9: BOM, truncated audio


def _data_dir(d: Path, n: int = 2, flac: bool = False) -> list[str]:
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    utts = [f"spk-{i}" for i in range(n)]
    ext = "flac" if flac else "wav"
    for u in utts:
        sf.write(d / f"{u}.{ext}", (rng.standard_normal(8000) * 0.1).astype(np.float32), 16000)
    (d / "wav.scp").write_text("".join(f"{u} {u}.{ext}\n" for u in utts))
    (d / "utt2spk").write_text("".join(f"{u} spk\n" for u in utts))
    return utts


def test_bom_in_kaldi_tables_is_not_part_of_the_first_key(tmp_path: Path) -> None:
    from cpc_seq.audio.data.kaldi import load_data_dir, read_frame_labels

    d = tmp_path / "d"
    utts = _data_dir(d)
    for name in ("wav.scp", "utt2spk"):
        p = d / name
        p.write_bytes(b"\xef\xbb\xbf" + p.read_bytes())
    dd = load_data_dir(d)
    assert dd.utts == utts and dd.utt2spk == {u: "spk" for u in utts}
    assert len(dd.load_audio(utts[0])) == 8000
    lab = tmp_path / "lab"
    lab.write_bytes(b"\xef\xbb\xbfspk-0 1 2 3\n")
    assert list(read_frame_labels(lab)) == ["spk-0"]
    # feature scp: the BOM is dropped too
    import kaldiio

    from cpc_seq.io.features import read_features

    kaldiio.save_ark(str(tmp_path / "f.ark"), {"spk-0": np.zeros((2, 3), np.float32)},
                     scp=str(tmp_path / "f.scp"))
    scp = tmp_path / "f.scp"
    scp.write_bytes(b"\xef\xbb\xbf" + scp.read_bytes())
    assert list(read_features(f"scp:{scp}")) == ["spk-0"]


def test_label_line_with_only_a_carriage_return_is_an_error(tmp_path: Path) -> None:
    """Found by benchmarks/fuzz.py: ``utt \\r `` gave an empty label sequence."""
    from cpc_seq.audio.data.kaldi import read_frame_labels

    lab = tmp_path / "lab"
    lab.write_text("a 1 2\nb \r \n")
    with pytest.raises(DataError, match="lab:2: key 'b' has no value"):
        read_frame_labels(lab)


def test_wav_cut_in_half_is_an_error_naming_the_file(tmp_path: Path, capsys) -> None:
    from cpc_seq.audio.data.kaldi import load_data_dir

    d = tmp_path / "d"
    utts = _data_dir(d)
    path = d / f"{utts[1]}.wav"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"spk-1\.wav is truncated: its header declares 8000 "
                       r"frames but the file holds 39\d\d"):
        load_data_dir(d).load_audio(utts[1])
    rc = main(["audio", "extract", "--mfcc", "--no-progress", str(d), f"npy:{tmp_path / 'o'}"])
    err = capsys.readouterr().err
    assert rc == 2 and "spk-1.wav is truncated" in err
    # a streamed WAV whose header leaves the size unset is read as it is
    streamed = bytearray(raw)
    pos = streamed.index(b"data")
    streamed[pos + 4 : pos + 8] = b"\xff\xff\xff\xff"
    path.write_bytes(bytes(streamed))
    assert len(load_data_dir(d).load_audio(utts[1])) == 8000


def test_validate_data_reads_what_extract_reads(tmp_path: Path, capsys) -> None:
    d = tmp_path / "nan"
    utts = _data_dir(d)
    bad = np.zeros(8000, dtype=np.float32)
    bad[10] = np.nan
    sf.write(d / f"{utts[0]}.wav", bad, 16000, subtype="FLOAT")
    assert main(["audio", "validate", str(d)]) == 2
    err = capsys.readouterr().err
    assert "spk-0" in err and "NaN/Inf" in err and err.count("\n") == 1
    # --headers-only keeps the old quick check
    assert main(["audio", "validate", "--headers-only", str(d)]) == 0
    capsys.readouterr()

    d = tmp_path / "flac"
    utts = _data_dir(d, flac=True)
    for u in utts:  # both truncated: the count is reported
        p = d / f"{u}.flac"
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    assert main(["audio", "validate", str(d)]) == 2
    err = capsys.readouterr().err
    assert "spk-0" in err and "2 of 2 utterances cannot be read" in err
    assert main(["audio", "extract", "--mfcc", "--no-progress", str(d), f"npy:{tmp_path / 'o'}"]) == 2


def test_validate_data_notes_labels_without_audio(tmp_path: Path, capsys) -> None:
    d = tmp_path / "d"
    utts = _data_dir(d)
    lab = tmp_path / "lab"
    lab.write_text("".join(f"{u} {' '.join(['1'] * 50)}\n" for u in [*utts, "zz-9"]))
    assert main(["audio", "validate", str(d), "--labels", str(lab)]) == 0
    cap = capsys.readouterr()
    assert "1 labelled utterances are not in" in cap.err and "zz-9" in cap.err
    assert "labels for 2" in cap.out


def test_speaker_probe_notes_utt2spk_without_features(tmp_path: Path, capsys) -> None:
    utts = [f"s{s}-{i}" for s in (1, 2) for i in range(5)]
    _npy_feats(tmp_path / "f", utts)
    (tmp_path / "u2s").write_text("".join(f"{u} {u[:2]}\n" for u in [*utts, "s3-0"]))
    rc = main(["audio", "probe", "speaker", "--no-progress", "--epochs", "1", "--feats",
               f"npy:{tmp_path / 'f'}", "--utt2spk", str(tmp_path / "u2s"),
               "--out", str(tmp_path / "p")])
    err = capsys.readouterr().err
    assert rc == 0 and "1 utterances have no features (first s3-0)" in err


def test_validate_data_passes_the_tiny_dev_set_in_full(capsys) -> None:
    assert main(["audio", "validate", str(DEV), "--labels", str(DEV / "phone_frames.txt"),
                 "--phones", str(DEV.parent / "phones.txt")]) == 0
    assert "agree with the audio" in capsys.readouterr().out


def test_feature_scp_pipes_never_run(tmp_path: Path) -> None:
    """Found by benchmarks/fuzz.py: kaldiio runs a ``cmd |`` scp value in a shell."""
    from cpc_seq.io.features import read_features

    marker = tmp_path / "ran"
    scp = tmp_path / "f.scp"
    scp.write_text(f"u1 touch {marker} |\n")
    with pytest.raises(DataError, match=r"f\.scp:1: piped entry .* refused"):
        read_features(f"scp:{scp}")
    scp.write_text(f"u2 touch {marker} |:3\n")  # kaldiio splits the offset off first
    with pytest.raises(DataError, match=r"f\.scp:1: piped entry .* refused"):
        read_features(f"scp:{scp}")
    assert not marker.exists()
