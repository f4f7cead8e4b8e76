"""The lazy audio data path: the duration index, span reads, the worker loader."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from cpc_seq.audio.data import index as index_mod
from cpc_seq.audio.data.index import load_index, resampled_length
from cpc_seq.audio.data.kaldi import write_data_dir
from cpc_seq.audio.data.loader import WindowLoader, index_plan
from cpc_seq.audio.data.spans import SpanReader
from cpc_seq.audio.data.wav import read_audio, read_segment
from cpc_seq.errors import DataError


def _corpus(root: Path, sr: int = 16000, fmt: str = "wav") -> Path:
    rng = np.random.default_rng(0)
    wav, spk = {}, {}
    for s in ("a", "b"):
        for i, n in enumerate((5000, 2300, 9100)):
            x = (0.3 * np.sin(np.arange(n) * rng.uniform(0.01, 0.2))
                 + 0.05 * rng.standard_normal(n)).astype(np.float32)
            path = root / f"{s}-{i}.{fmt}"
            sf.write(path, x, sr, subtype="PCM_16")
            wav[f"{s}-{i}"], spk[f"{s}-{i}"] = str(path), s
    return write_data_dir(root / "data", wav, spk)


def test_index_is_built_from_headers_cached_and_rebuilt_on_change(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = _corpus(tmp_path)
    idx = load_index(d, 16000, progress=False)
    assert idx.num_samples.tolist() == [5000, 2300, 9100] * 2
    assert (d / "utt2num_samples").read_text().splitlines()[0] == "a-0 5000"
    assert (d / "utt2dur").read_text().splitlines()[0] == "a-0 0.3125"
    # a restart reads the cache: no header is opened
    monkeypatch.setattr(index_mod, "_header", lambda *a: pytest.fail("reindexed"))
    again = load_index(d, 16000, progress=False)
    assert again.num_samples.tolist() == idx.num_samples.tolist()
    assert list(again.utts) == list(idx.utts) and again.speakers == ["a", "b"]
    assert again.sources == idx.sources
    monkeypatch.undo()
    # another rate, or a changed wav.scp, rebuilds
    assert load_index(d, 8000, progress=False).num_samples[0] == 2500
    lines = (d / "wav.scp").read_text().splitlines()
    (d / "wav.scp").write_text("\n".join(lines[:5]) + "\n")
    (d / "utt2spk").write_text("".join(f"{u} {u[0]}\n" for u in
                                       [ln.split()[0] for ln in lines[:5]]))
    (d / "spk2utt").unlink()
    assert len(load_index(d, 16000, progress=False)) == 5


def test_read_only_data_dir_keeps_its_index_in_the_user_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = _corpus(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    real = index_mod._write

    def refuse_data_dir(where: Path, *a, **k):  # noqa: ANN002, ANN003, ANN202
        if where == d:
            raise PermissionError("read-only")
        return real(where, *a, **k)

    monkeypatch.setattr(index_mod, "_write", refuse_data_dir)
    load_index(d, 16000, progress=False)
    assert not (d / "utt2num_samples").exists()
    cached = list((tmp_path / "cache" / "cpc_seq" / "index").glob("*/utt2num_samples"))
    assert len(cached) == 1
    stamp = json.loads((cached[0].parent / ".utt2num_samples.json").read_text())
    assert stamp["stamp"]["sample_rate"] == 16000


def test_spans_equal_whole_file_reads_across_utterances(tmp_path: Path) -> None:
    d = _corpus(tmp_path)
    idx = load_index(d, 16000, progress=False).by_speaker()
    reader = SpanReader(idx)
    whole = np.concatenate([read_audio(idx.sources[s], 16000) for s in idx.source])
    start = np.array([0, 4000, 7000, 16300, 25000])  # 4000: crosses a-0 into a-1
    length = np.array([3000, 3000, 3000, 1200, 400])
    got = reader.read_spans(start, length, 3000)
    for b, (s0, n) in enumerate(zip(start, length)):
        np.testing.assert_array_equal(got[b, :n], whole[s0 : s0 + n])
        assert not got[b, n:].any()


def test_resampled_spans_match_the_whole_file_resampled(tmp_path: Path) -> None:
    d = _corpus(tmp_path, sr=8000, fmt="flac")
    idx = load_index(d, 16000, progress=False)
    assert int(idx.num_samples[0]) == resampled_length(5000, 8000, 16000) == 10000
    reader = SpanReader(idx)
    whole = read_audio(idx.sources[idx.source[2]], 16000)
    assert len(whole) == int(idx.num_samples[2])
    for a in (0, 1, 333, 9000, len(whole) - 500):
        got = reader.read(2, a, 500)
        np.testing.assert_allclose(got, whole[a : a + len(got)], atol=2e-3)
        assert len(got) == min(500, len(whole) - a)


def test_segments_are_read_as_spans(tmp_path: Path) -> None:
    x = (np.random.default_rng(1).standard_normal(48000) * 0.1).astype(np.float32)
    sf.write(tmp_path / "rec.wav", x, 16000, subtype="FLOAT")
    d = tmp_path / "d"
    d.mkdir()
    (d / "wav.scp").write_text(f"rec {tmp_path / 'rec.wav'}\n")
    (d / "segments").write_text("s-1 rec 0.5 1.25\ns-2 rec 2.0 -1\n")
    (d / "utt2spk").write_text("s-1 s\ns-2 s\n")
    idx = load_index(d, 16000, progress=False)
    assert idx.num_samples.tolist() == [12000, 16000]
    reader = SpanReader(idx)
    seg = read_segment(tmp_path / "rec.wav", 0.5, 1.25, 16000)
    np.testing.assert_array_equal(reader.read(0, 100, 2000), seg[100:2100])
    np.testing.assert_array_equal(reader.read(1, 15000, 5000), x[47000:])


def test_unreadable_audio_stops_naming_it_or_is_skipped_and_counted(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = _corpus(tmp_path)
    os.unlink(tmp_path / "b-1.wav")
    with pytest.raises(DataError, match=r"wav.scp:5: utterance 'b-1': audio file not found"):
        load_index(d, 16000, progress=False)
    idx = load_index(d, 16000, progress=False, on_bad_audio="skip")
    assert len(idx) == 5 and "b-1" not in list(idx.utts)
    assert "skipped 1 unreadable utterance(s)" in capsys.readouterr().err
    assert not (d / "utt2num_samples").exists()  # not cached while a file is missing


def test_file_changed_after_indexing_is_a_clear_error(tmp_path: Path) -> None:
    d = _corpus(tmp_path)
    idx = load_index(d, 16000, progress=False)
    sf.write(tmp_path / "a-2.wav", np.zeros(100, dtype=np.float32), 16000)
    with pytest.raises(DataError, match="'a-2'.*changed since the data dir was indexed"):
        SpanReader(idx).read(2, 0, 1000)


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_resumes_at_the_batch_consumed_not_the_batch_read_ahead(
        tmp_path: Path, workers: int) -> None:
    d = _corpus(tmp_path)
    idx = load_index(d, 16000, progress=False).by_speaker()
    reader = SpanReader(idx)
    plan = index_plan(reader, 2000, 4, seed=3, pack=True)
    ref = WindowLoader(reader, plan, num_workers=0)
    want = [ref.next() for _ in range(3 * plan.batches_per_epoch + 1)]
    a = WindowLoader(reader, plan, num_workers=workers, prefetch=2)
    for i in range(4):
        x, n = a.next()
        assert torch.equal(x, want[i][0]) and torch.equal(n, want[i][1])
    b = WindowLoader(reader, plan, num_workers=workers)
    b.load_state_dict(a.state_dict())
    a.close()
    for i in range(4, len(want)):
        x, n = b.next()
        assert torch.equal(x, want[i][0]) and torch.equal(n, want[i][1]), i
    # two ranks read disjoint halves of the same global batches
    r0 = WindowLoader(reader, plan, rank=0, world=2, num_workers=0)
    r1 = WindowLoader(reader, plan, rank=1, world=2, num_workers=0)
    for i in range(3):
        assert torch.equal(torch.cat([r0.next()[0], r1.next()[0]]), want[i][0])


def test_worker_read_error_is_one_line_naming_the_utterance(tmp_path: Path) -> None:
    d = _corpus(tmp_path)
    idx = load_index(d, 16000, progress=False).by_speaker()
    os.unlink(tmp_path / "a-0.wav")
    reader = SpanReader(idx)
    loader = WindowLoader(reader, index_plan(reader, 2000, 6, seed=0, pack=True), num_workers=1)
    with pytest.raises(DataError) as e:
        for _ in range(10):
            loader.next()
    assert "'a-0'" in str(e.value) and "\n" not in str(e.value)


def test_lhotse_manifests_are_indexed_once_then_read_as_tables(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lhotse = pytest.importorskip("lhotse")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    x = (np.arange(16000) % 1000 / 1000 - 0.5).astype(np.float32)
    sf.write(tmp_path / "rec1.wav", x, 16000, subtype="FLOAT")
    recs = lhotse.RecordingSet.from_recordings(
        [lhotse.Recording.from_file(tmp_path / "rec1.wav", recording_id="rec1")])
    sups = lhotse.SupervisionSet.from_segments([
        lhotse.SupervisionSegment("spkA-u1", "rec1", start=0.0, duration=0.5, speaker="spkA"),
        lhotse.SupervisionSegment("spkB-u1", "rec1", start=0.5, duration=0.25, speaker="spkB"),
    ])
    cuts = tmp_path / "cuts.jsonl.gz"
    lhotse.CutSet.from_manifests(recordings=recs, supervisions=sups).trim_to_supervisions(
    ).to_file(cuts)
    first = load_index(cuts, 16000, progress=False)
    assert list(first.utts) == ["spkA-u1", "spkB-u1"] and first.speakers == ["spkA", "spkB"]
    monkeypatch.setattr(index_mod, "_build", lambda *a: pytest.fail("manifest read again"))
    again = load_index(cuts, 16000, progress=False)
    assert again.num_samples.tolist() == [8000, 4000]
    np.testing.assert_array_equal(SpanReader(again).read(1, 0, 4000), x[8000:12000])
