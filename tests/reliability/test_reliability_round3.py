"""Reliability round 3 (issue 28): non-finite ABX features, duplicated YAML keys, ids that
would become paths, quadratic sentence splitting, huge seeds and TextGrid spans,
validation that matches the readers, truncated MP3, image size mismatches, label-file
errors, checkpoint writes past the file-size limit, concurrent trainings, last-good
checkpoints that are finite on a probe batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cpc_seq.cli import main
from cpc_seq.errors import ConfigError, DataError

pytestmark = pytest.mark.usefixtures("one_thread")  # torch on one thread

ROOT = Path(__file__).resolve().parents[2]
DEV = ROOT / "data" / "tiny" / "dev"

HEADER = "#file onset offset #phone prev-phone next-phone speaker\n"




def _err(capsys: pytest.CaptureFixture[str]) -> str:
    """The one ``error: ...`` line (earlier progress notes allowed, no traceback)."""
    err = capsys.readouterr().err.strip()
    last = err.splitlines()[-1] if err else ""
    assert last.startswith("error: ") and err.count("error: ") == 1, err
    assert "Traceback" not in err, err
    return last


# ------------------------------------------------------------ 1: ABX on non-finite features


def _abx_case(d: Path, nan_file: str | None) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    d.mkdir(parents=True, exist_ok=True)
    lines = []
    for k, (spk, phone) in enumerate([("s1", "a"), ("s1", "a"), ("s1", "b"), ("s1", "b"),
                                      ("s2", "a"), ("s2", "b")]):
        arr = rng.standard_normal((5, 3)).astype(np.float32)
        if f"f{k}" == nan_file:
            arr[:] = np.nan
        np.save(d / f"f{k}.npy", arr)
        lines.append(f"f{k} 0.0 0.05 {phone} x y {spk}\n")
    item = d / "x.item"
    item.write_text(HEADER + "".join(lines))
    return d, item


def test_abx_refuses_non_finite_features_naming_the_file(tmp_path: Path, capsys) -> None:
    """All-NaN features scored 0.00 % error with exit 0."""
    d, item = _abx_case(tmp_path / "ok", None)
    assert main(["audio", "abx", "--feats", f"npy:{d}", "--item", str(item)]) == 0
    capsys.readouterr()
    d, item = _abx_case(tmp_path / "nan", "f3")
    assert main(["audio", "abx", "--feats", f"npy:{d}", "--item", str(item)]) == 2
    err = _err(capsys)
    assert "'f3'" in err and "not finite" in err and "x.item:5" in err, err


# ------------------------------------------------------------ 3: duplicated YAML keys


def test_yaml_duplicated_key_is_an_error_naming_both_lines(tmp_path: Path, capsys) -> None:
    """``steps: 2`` ... ``steps: 3000000``: the last value won silently."""
    from cpc_seq.config import apply_overrides, load_yaml

    conf = tmp_path / "c.yaml"
    conf.write_text("train:\n  steps: 2\n  log_every: 1\n  steps: 3000000\n")
    with pytest.raises(ConfigError, match=r"c\.yaml:4: duplicated key 'steps' \(first at line 2\)"):
        load_yaml(conf)
    assert main(["audio", "train", "--config", str(conf), f"train.out_dir={tmp_path / 'o'}"]) == 2
    assert "c.yaml:4" in _err(capsys)
    assert not (tmp_path / "o").exists()
    # a merge (<<: *base) may still override a key it brought in
    conf.write_text("base: &b\n  x: 1\nrun:\n  <<: *b\n  x: 2\n")
    assert load_yaml(conf)["run"] == {"x": 2}
    with pytest.raises(ConfigError, match="duplicated key 'x'"):
        apply_overrides({}, ["model.extra={x: 1, x: 2}"])


# ------------------------------------------------------------ 6: seeds out of range


def test_huge_seed_is_a_config_error(tmp_path: Path, capsys) -> None:
    """``train.seed=99999999999999999999999`` gave ``Overflow when unpacking long long``."""
    for cmd in (["train", f"data.train={DEV}"], ["text-train"], ["image-train"]):
        assert main([*cmd, "train.seed=99999999999999999999999",
                     f"train.out_dir={tmp_path / cmd[0]}"]) == 2, cmd
        assert "train.seed" in _err(capsys)
    assert main(["audio", "probe", "phone", "--feats", "npy:x", "--labels", "l", "--out", "o",
                 "--seed", "-1"]) == 2
    assert "--seed" in _err(capsys)


# ------------------------------------------------------------ 4: ids that would become paths

TEXT = ["text-train", f"data.train={ROOT / 'data' / 'text' / 'kjv' / 'dev'}",
        "data.batch_size=4", "model.embed_dim=8", "model.dim_c=16", "optim.warmup_steps=2",
        "model.level=token", "model.encoder_layers=[[2,2,16],[2,2,16]]", "model.n_steps=3",
        "data.window=32", "data.short_documents=skip", "train.progress=false",
        "train.threads=1", "train.log_every=1"]


@pytest.fixture(scope="module")
def text_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("text") / "run"
    assert main([*TEXT, "train.steps=1", f"train.out_dir={out}"]) == 0
    return out / "last.pt"


def _wav_dir(d: Path, ids: list[str]) -> Path:
    flac = (DEV / "wav.scp").read_text().split()[1]
    d.mkdir(parents=True, exist_ok=True)
    (d / "wav.scp").write_text("".join(f"{u} {(DEV / flac).resolve()}\n" for u in sorted(ids)))
    return d


@pytest.mark.parametrize("bad", ["../../x", "sub/dir", ".."])
def test_audio_ids_cannot_write_outside_the_npy_folder(tmp_path: Path, capsys, bad: str) -> None:
    """``../../x`` in wav.scp wrote ``x.npy`` two folders up; ``sub/dir`` a subfolder."""
    dd = _wav_dir(tmp_path / "a" / "b" / "data", ["ok-1", bad])
    out = tmp_path / "a" / "b" / "npy"
    rc = main(["audio", "extract", "--mfcc", "--no-progress", str(dd), f"npy:{out}"])
    assert rc == 2
    assert repr(bad) in _err(capsys)
    assert sorted(p.name for p in tmp_path.rglob("*.npy")) == []
    # the same ids are fine in an ark (only npy makes them file names)
    rc = main(["audio", "extract", "--mfcc", "--no-progress", str(dd),
               f"ark,scp:{tmp_path}/f.ark,{tmp_path}/f.scp"])
    assert rc == 0
    capsys.readouterr()


def test_text_ids_cannot_write_outside_the_npy_folder(tmp_path: Path, capsys,
                                                       text_ckpt: Path) -> None:
    items = tmp_path / "items.txt"
    items.write_text("good in the beginning\n../../evil and the earth\n")
    out = tmp_path / "o" / "p" / "npy"
    assert main(["text", "extract", "--ckpt", str(text_ckpt), "--layer", "z", f"text:{items}",
                 f"npy:{out}"]) == 2
    assert "'../../evil'" in _err(capsys)
    assert list(tmp_path.rglob("*.npy")) == []


def test_feature_writer_refuses_path_ids(tmp_path: Path) -> None:
    from cpc_seq.io.features import FeatureWriter, parse_wspecifier

    w = FeatureWriter(parse_wspecifier(f"npy:{tmp_path / 'n'}"), resume=False)
    with pytest.raises(DataError, match="'a/b'"):
        w.write_batch([("a/b", np.zeros((2, 2), np.float32))])
    w = FeatureWriter(parse_wspecifier(f"ark:{tmp_path / 'f.ark'}"), resume=False)
    with pytest.raises(DataError, match="whitespace"):
        w.write_batch([("a b", np.zeros((2, 2), np.float32))])
    w.close(complete=False)


# ------------------------------------------------------------ 5: linear sentence splitting


def test_sentence_splitting_is_linear_in_paragraph_length() -> None:
    """A one-line document took quadratic time: 50 kB of dots 40 s, of ``Mr. `` 8 s."""
    import time

    from cpc_seq.text.data import split_sentences

    assert split_sentences("Dr. Smith came. He left. J. R. R. Tolkien wrote. Yes.") == [
        "Dr. Smith came.", "He left.", "J. R. R. Tolkien wrote.", "Yes."]
    t0 = time.process_time()
    for unit in (".", "Mr. ", "a. b. ", "Yes. He went home! Did he? ", "x"):
        out = split_sentences(unit * (1_000_000 // len(unit)))
        assert len(out) in (1, 111_111), (unit, len(out))
    assert time.process_time() - t0 < 10.0  # ~0.5 s linear; the old code took hours


# ------------------------------------------------------------ 7: TextGrid spans


def _textgrid(path: Path, xmax: float, intervals: list[tuple[float, float, str]]) -> Path:
    lines = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "", "xmin = 0",
             f"xmax = {xmax}", "tiers? <exists>", "size = 1", "item []:", "    item [1]:",
             '        class = "IntervalTier"', '        name = "phones"', "        xmin = 0",
             f"        xmax = {xmax}", f"        intervals: size = {len(intervals)}"]
    for j, (s, e, lab) in enumerate(intervals, start=1):
        lines += [f"        intervals [{j}]:", f"            xmin = {s}",
                  f"            xmax = {e}", f'            text = "{lab}"']
    path.write_text("\n".join(lines) + "\n")
    return path


def test_textgrid_span_is_bounded(tmp_path: Path, capsys) -> None:
    """xmax = 1e8 s tried to allocate one label per 10 ms frame (~80 GB)."""
    pytest.importorskip("praatio")
    _textgrid(tmp_path / "big.TextGrid", 1e8, [(0, 0.05, "a"), (0.05, 1e8, "b")])
    out = tmp_path / "labels.txt"
    assert main(["audio", "labels-from-textgrid", str(tmp_path), "--out", str(out)]) == 2
    err = _err(capsys)
    assert "big.TextGrid" in err and "xmax 1e+08 s" in err and "--max-seconds" in err, err
    assert not out.exists()
    (tmp_path / "big.TextGrid").unlink()
    _textgrid(tmp_path / "ok.TextGrid", 0.05, [(0, 0.05, "a")])
    assert main(["audio", "labels-from-textgrid", str(tmp_path), "--out", str(out),
                 "--max-seconds", "0.04"]) == 2
    assert "ok.TextGrid" in _err(capsys)
    assert main(["audio", "labels-from-textgrid", str(tmp_path), "--out", str(out)]) == 0
    assert out.read_text() == "ok a a a a a\n"


# ------------------------------------------------------------ 8, 9: validate-data = extract


def test_validate_data_refuses_what_extract_refuses_shorter_than_a_frame(tmp_path: Path,
                                                                          capsys) -> None:
    """1- and 159-sample WAVs passed validate-data; extract rejects them."""
    import soundfile as sf

    for n in (1, 159):
        d = tmp_path / f"d{n}"
        d.mkdir()
        sf.write(d / "a.wav", np.full(n, 0.1, np.float32), 16000)
        (d / "wav.scp").write_text(f"u1 {d / 'a.wav'}\n")
        assert main(["audio", "extract", "--mfcc", "--no-progress", str(d), f"npy:{d / 'o'}"]) == 2
        capsys.readouterr()
        for extra in ([], ["--headers-only"]):
            assert main(["audio", "validate", str(d), *extra]) == 2, (n, extra)
            err = _err(capsys)
            assert "u1" in err and f"{n} samples" in err and "one frame" in err, err
    sf.write(tmp_path / "d1" / "a.wav", np.full(160, 0.1, np.float32), 16000)
    assert main(["audio", "validate", str(tmp_path / "d1")]) == 0


def test_truncated_mp3_is_an_error_in_validate_and_extract(tmp_path: Path, capsys) -> None:
    """A cut-short MP3 (Xing header: 32000 frames) decoded 39 % with only a warning."""
    import soundfile as sf

    if "MP3" not in sf.available_formats():
        pytest.skip("libsndfile without MP3")
    x = (0.3 * np.sin(np.arange(32000) * 0.05)).astype(np.float32)
    sf.write(tmp_path / "full.mp3", x, 16000, format="MP3")
    raw = (tmp_path / "full.mp3").read_bytes()
    d = tmp_path / "d"
    d.mkdir()
    (d / "a.mp3").write_bytes(raw[: len(raw) * 4 // 10])
    (d / "wav.scp").write_text(f"u1 {d / 'a.mp3'}\n")
    assert main(["audio", "validate", str(d)]) == 2
    err = _err(capsys)
    assert "a.mp3 is truncated" in err and "u1" in err, err
    assert main(["audio", "extract", "--mfcc", "--no-progress", str(d), f"npy:{d / 'o'}"]) == 2
    assert "a.mp3 is truncated" in _err(capsys)
    assert list((d / "o").glob("*.npy")) == []
    # a segment inside the decodable part is fine, one past it is not
    (d / "segments").write_text("u1 r 0 0.2\n")
    (d / "wav.scp").write_text(f"r {d / 'a.mp3'}\n")
    assert main(["audio", "validate", str(d)]) == 0
    (d / "segments").write_text("u1 r 0 1.5\n")
    assert main(["audio", "validate", str(d)]) == 2
    assert "truncated" in _err(capsys)
    (d / "segments").unlink()
    (d / "wav.scp").write_text(f"u1 {tmp_path / 'full.mp3'}\n")
    assert main(["audio", "validate", str(d)]) == 0


# ------------------------------------------------------------ 10, 11: image data sets


def _idx(path: Path, arr: np.ndarray) -> None:
    import gzip
    import struct

    raw = bytes([0, 0, 0x08, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(raw + arr.astype(np.uint8).tobytes())


def _fmnist(root: Path, train_hw: int = 28, test_hw: int = 28, bad_label: int | None = None
            ) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for prefix, hw in (("train", train_hw), ("t10k", test_hw)):
        labels = np.arange(16) % 10
        if bad_label is not None and prefix == "train":
            labels[3] = bad_label
        _idx(root / f"{prefix}-images-idx3-ubyte.gz", np.zeros((16, hw, hw)))
        _idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return root


IMAGE = ["image-train", "kind=dim", "data.dataset=fashion_mnist", "data.batch_size=8",
         "dim.ndf=4", "dim.local_channels=8", "dim.hidden=16", "dim.y_dim=8", "dim.mi_dim=8",
         "dim.global_hidden=8", "dim.disc_hidden=8", "train.progress=false",
         "train.threads=1", "train.log_every=1"]


@pytest.mark.parametrize(("train_hw", "test_hw", "named"),
                         [(32, 28, "train-images"), (28, 32, "t10k-images")])
def test_image_train_refuses_train_and_test_of_different_sizes(
        tmp_path: Path, capsys, train_hw: int, test_hw: int, named: str) -> None:
    """32x32 train and 28x28 test trained; image-probe failed late (1024 vs 784 dims)."""
    root = _fmnist(tmp_path / "fm", train_hw, test_hw)
    assert main([*IMAGE, f"data.root={root}", "train.steps=1",
                 f"train.out_dir={tmp_path / 'o'}"]) == 2
    err = _err(capsys)
    assert f"{named}-idx3-ubyte.gz" in err and "28, 28" in err, err
    assert not (tmp_path / "o" / "last.pt").exists()


def test_out_of_range_label_names_the_labels_file(tmp_path: Path, capsys) -> None:
    root = _fmnist(tmp_path / "fm", bad_label=12)
    assert main([*IMAGE, f"data.root={root}", "train.steps=1",
                 f"train.out_dir={tmp_path / 'o'}"]) == 2
    err = _err(capsys)
    assert "train-labels-idx1-ubyte.gz" in err and "label 12 of image 3" in err, err
    assert "train-images" not in err


# ------------------------------------------------------------ 12: writes past the size limit


class _FileSizeLimit:
    """``ulimit -f`` for the duration of a ``with`` block (Python ignores SIGXFSZ, so a
    write past the limit fails with EFBIG)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def __enter__(self) -> None:
        import resource

        self.old = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (self.limit, self.old[1]))

    def __exit__(self, *exc: object) -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, self.old)


def _no_temporaries(d: Path) -> None:
    assert [p.name for p in d.rglob("*.tmp")] == []


@pytest.mark.parametrize("modality", ["text", "image"])
def test_checkpoint_past_the_file_size_limit_says_file_too_large(
        tmp_path: Path, capsys, modality: str) -> None:
    """torch reported ``inline_container.cc ... unexpected pos``; the old last.pt survives."""
    out = tmp_path / "run"
    if modality == "text":
        argv = TEXT
    else:
        argv = [*IMAGE, f"data.root={_fmnist(tmp_path / 'fm')}"]
    assert main([*argv, "train.steps=1", f"train.out_dir={out}"]) == 0
    before = (out / "last.pt").read_bytes()
    capsys.readouterr()
    with _FileSizeLimit(len(before) // 2):
        rc = main([*argv, "train.steps=3", "train.save_every=1", f"train.out_dir={out}",
                   "--resume"])
    assert rc == 2
    err = _err(capsys)
    assert "last.pt: cannot write (File too large" in err and "inline_container" not in err, err
    assert (out / "last.pt").read_bytes() == before
    _no_temporaries(out)


def test_npy_write_past_the_file_size_limit_says_file_too_large(tmp_path: Path, capsys) -> None:
    """NumPy's short write read ``21372 requested and 10208 written``."""
    out = tmp_path / "npy"
    with _FileSizeLimit(40_000):
        rc = main(["audio", "extract", "--mfcc", "--no-progress", str(DEV), f"npy:{out}"])
    assert rc == 2
    err = _err(capsys)
    assert "cannot write (File too large" in err and "--skip-existing" in err, err
    _no_temporaries(out)
    for p in out.glob("*.npy"):
        np.load(p)


# ------------------------------------------------------------ 2b: "last good" is finite on a batch

AUDIO = ["train", f"data.train={DEV}", "data.window=3200", "data.batch_size=4",
         "model.encoder=tiny", "model.encoder_channels=16", "model.dim_c=16", "model.n_steps=3",
         "train.progress=false", "train.threads=1", "optim.warmup_steps=0", "train.log_every=1",
         "loss.n_negatives=8", "train.precision=fp32"]


def test_checkpoint_whose_outputs_overflow_is_not_saved(tmp_path: Path, capsys) -> None:
    """optim.lr=1e30 kept finite weights near 1e30 as 'the last good checkpoint'; every
    feature extracted from it was NaN."""
    out = tmp_path / "run"
    assert main([*AUDIO, "optim.lr=1e30", "train.steps=5", "train.save_every=1",
                 f"train.out_dir={out}"]) == 2
    err = _err(capsys)
    assert "outputs are not finite on a probe batch" in err and "last.pt was not written" in err
    assert not (out / "last.pt").exists()


def test_the_checkpoint_probe_changes_nothing_in_the_run(tmp_path: Path) -> None:
    """Saving every step (each save runs the probe batch) logs the same losses as saving
    only at the end: the probe leaves weights, statistics and random streams alone."""
    import json

    logs = []
    for every in (1, 100):
        out = tmp_path / f"every{every}"
        assert main([*AUDIO, "train.steps=3", f"train.save_every={every}",
                     f"train.out_dir={out}"]) == 0
        logs.append([json.loads(x)["train/loss"] for x in
                     (out / "log.jsonl").read_text().splitlines()])
    assert logs[0] == logs[1] and len(logs[0]) == 3


# ------------------------------------------------------------ two runs into one out_dir


def test_second_training_into_a_busy_out_dir_is_refused(tmp_path: Path, capsys) -> None:
    """Two trainings into one out_dir at once both wrote last.pt and log.jsonl."""
    import subprocess
    import sys

    out = tmp_path / "run"
    out.mkdir()
    hold = ("import sys; from cpc_seq.engine.lock import RunLock; "
            f"lock = RunLock({str(out)!r}).acquire(); print('held', flush=True); sys.stdin.read()")
    other = subprocess.Popen([sys.executable, "-c", hold], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)  # another run's process
    try:
        assert other.stdout is not None and other.stdout.readline().strip() == "held"
        for extra in ([], ["--resume"], ["--overwrite"]):
            assert main([*AUDIO, "train.steps=1", f"train.out_dir={out}", *extra]) == 2
            err = _err(capsys)
            assert "another training is running" in err and str(other.pid) in err, err
    finally:
        other.communicate("")
    assert not (out / "log.jsonl").exists()
    assert main([*AUDIO, "train.steps=1", f"train.out_dir={out}"]) == 0  # lock released
    assert main([*AUDIO, "train.steps=2", f"train.out_dir={out}", "--resume"]) == 0
    capsys.readouterr()


# ------------------------------------------------------------ lhotse manifests, hostile


def _cut(cid: str, rec: dict, start: object = 0.0, dur: object = 0.5) -> dict:
    return {"id": cid, "start": start, "duration": dur, "channel": 0, "type": "MonoCut",
            "recording": rec, "supervisions": [
                {"id": f"{cid}-s", "recording_id": rec["id"], "start": 0.0, "duration": 0.5,
                 "channel": 0, "speaker": "s1", "text": "hi"}]}


@pytest.mark.parametrize(("case", "want"), [
    ("duplicate id", "cut id 'a' appears twice"),
    ("nan start", "start nan is not a finite number"),
    ("inf duration", "duration inf is not a finite number"),
    ("string start", "start '0.1' is not a finite number"),
    ("two sources", "recording 'r1' appears with two different sources"),
    ("control id", "contains whitespace or control characters"),
    ("bad line", "item 2: cannot read lhotse item"),
])
def test_hostile_lhotse_manifests_are_one_line_errors(tmp_path: Path, capsys, case: str,
                                                      want: str) -> None:
    """NaN/inf/string times gave tracebacks; a repeated cut id or a recording id with two
    sources was silently merged; an unparsable line 2 of a lazy manifest was a traceback."""
    import json

    import soundfile as sf

    pytest.importorskip("lhotse")
    sf.write(tmp_path / "r1.wav", np.full(16000, 0.1, np.float32), 16000)
    rec = {"id": "r1", "sources": [{"type": "file", "channels": [0],
                                    "source": str(tmp_path / "r1.wav")}],
           "sampling_rate": 16000, "num_samples": 16000, "duration": 1.0, "channel_ids": [0]}
    other = dict(rec, sources=[{"type": "file", "channels": [0], "source": "/etc/passwd"}])
    cuts = {"duplicate id": [_cut("a", rec), _cut("a", rec, 0.5, 0.4)],
            "nan start": [_cut("a", rec, float("nan"))],
            "inf duration": [_cut("a", rec, 0.0, float("inf"))],
            "string start": [_cut("a", rec, "0.1")],
            "two sources": [_cut("a", rec), _cut("b", other)],
            "control id": [_cut("a\x01b", rec)],
            "bad line": [_cut("a", rec)]}[case]
    path = tmp_path / "x_cuts.jsonl"
    path.write_text("".join(json.dumps(c) + "\n" for c in cuts)
                    + ("{not json\n" if case == "bad line" else ""))
    assert main(["audio", "validate", str(path)]) == 2
    err = _err(capsys)
    assert str(path) in err and want in err, err


# ------------------------------------------------------------ huge finite samples (fuzz)


def test_huge_finite_samples_resample_and_give_finite_mfccs(tmp_path: Path) -> None:
    """A valid float WAV peaking at 1.35e38: resampling and MFCCs overflowed to NaN."""
    import soundfile as sf

    from cpc_seq.audio.data.wav import read_audio
    from cpc_seq.audio.model.mfcc import mfcc_deltas

    for peak in (3.4e38, 1.35e38):
        x = (np.sin(np.arange(4000) * 0.1) * peak).astype(np.float32)
        sf.write(tmp_path / "h.wav", x, 16000, subtype="FLOAT")
        for sr in (8000, 16000, 22050):
            w = read_audio(tmp_path / "h.wav", target_sr=sr)
            assert w.dtype == np.float32 and np.isfinite(w).all(), (peak, sr)
        for cmvn in (True, False):
            f = mfcc_deltas(x, cmvn=cmvn)
            assert f.dtype == torch.float32 and bool(torch.isfinite(f).all()), (peak, cmvn)
    small = (np.sin(np.arange(4000) * 0.1) * 0.5).astype(np.float32)
    assert mfcc_deltas(small).dtype == torch.float32  # ordinary audio keeps float32


def test_feature_writers_refuse_ids_that_are_not_valid_unicode(tmp_path: Path) -> None:
    """Found by benchmarks/fuzz.py: a lone surrogate (a JSON "\\ud800" escape in a lhotse
    manifest) raised UnicodeEncodeError in the npy and ark writers."""
    from cpc_seq.io.features import FeatureWriter, parse_wspecifier

    for spec in (f"npy:{tmp_path / 'n'}", f"ark,scp:{tmp_path}/f.ark,{tmp_path}/f.scp"):
        w = FeatureWriter(parse_wspecifier(spec), resume=False)
        with pytest.raises(DataError, match="lone surrogate"):
            w.write_batch([("a\ud800", np.zeros((2, 2), np.float32))])
        w.close(complete=False)


@pytest.mark.parametrize("name", ["ids", "yamldup", "samples", "textgrid"])
def test_fuzz_properties_of_the_new_input_classes(tmp_path: Path, name: str) -> None:
    """benchmarks/fuzz.py's new properties with a few cases (the benchmark runs 10,000)."""
    import importlib.util

    pytest.importorskip("hypothesis")
    if name == "textgrid":
        pytest.importorskip("praatio")
    spec = importlib.util.spec_from_file_location("cpc_fuzz", ROOT / "benchmarks" / "fuzz.py")
    fuzz = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fuzz)
    counter = fuzz.Counter()
    fuzz.PARSERS[name](tmp_path, 25, counter)()
    assert counter.cases >= 25
