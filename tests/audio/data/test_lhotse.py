"""lhotse manifests accepted as data directories (cpc_seq.audio.data.lhotse_io via load_data_dir)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from cpc_seq.audio.data.kaldi import load_data_dir, write_data_dir
from cpc_seq.audio.data.lhotse_io import is_lhotse_manifest
from cpc_seq.errors import DataError

SR = 16000


def _audio(tmp_path):
    """Two 16 kHz recordings whose sample values encode their position."""
    paths = {}
    for rec, n in (("rec1", SR), ("rec2", SR // 2)):
        wave = (np.arange(n) % 1000 / 1000 - 0.5).astype(np.float32) * (0.5 if rec == "rec1" else 0.3)
        paths[rec] = tmp_path / f"{rec}.wav"
        sf.write(paths[rec], wave, SR, subtype="FLOAT")
    return paths


def _manifests(tmp_path):
    lhotse = pytest.importorskip("lhotse")
    paths = _audio(tmp_path)
    recs = lhotse.RecordingSet.from_recordings(
        lhotse.Recording.from_file(paths[r], recording_id=r) for r in sorted(paths))
    sups = lhotse.SupervisionSet.from_segments([
        lhotse.SupervisionSegment("spkA-u1", "rec1", start=0.0, duration=0.5, text="hello there",
                                  speaker="spkA"),
        lhotse.SupervisionSegment("spkA-u2", "rec1", start=0.5, duration=0.25, text="bye",
                                  speaker="spkA"),
        lhotse.SupervisionSegment("spkB-u1", "rec2", start=0.1, duration=0.3, speaker="spkB"),
    ])
    return lhotse, recs, sups


def test_recordings_and_supervisions_directory(tmp_path):
    lhotse, recs, sups = _manifests(tmp_path)
    d = tmp_path / "manifests"
    d.mkdir()
    recs.to_file(d / "mini_recordings_dev.jsonl.gz")
    sups.to_file(d / "mini_supervisions_dev.jsonl.gz")
    assert is_lhotse_manifest(d) and not is_lhotse_manifest(tmp_path)
    dd = load_data_dir(d)
    assert dd.utts == ["spkA-u1", "spkA-u2", "spkB-u1"]
    assert dd.segments == {"spkA-u1": ("rec1", 0.0, 0.5), "spkA-u2": ("rec1", 0.5, 0.75),
                           "spkB-u1": ("rec2", 0.1, 0.4)}
    assert dd.utt2spk == {"spkA-u1": "spkA", "spkA-u2": "spkA", "spkB-u1": "spkB"}
    assert dd.spk2utt == {"spkA": ["spkA-u1", "spkA-u2"], "spkB": ["spkB-u1"]}
    assert dd.text == {"spkA-u1": "hello there", "spkA-u2": "bye", "spkB-u1": ""}
    # the audio is cut from the recording exactly as for a Kaldi segments file
    full = sf.read(tmp_path / "rec1.wav", dtype="float32")[0]
    got = dd.load_audio("spkA-u2")
    assert got.shape == (4000,) and np.allclose(got, full[8000:12000], atol=1e-6)
    # and equals what the Kaldi data dir with the same content gives
    kd = write_data_dir(tmp_path / "kaldi", dd.wav, dd.utt2spk, segments=dd.segments)
    assert np.array_equal(load_data_dir(kd).load_audio("spkB-u1"), dd.load_audio("spkB-u1"))


def test_cutset_file_and_recording_set_file(tmp_path):
    lhotse, recs, sups = _manifests(tmp_path)
    cuts = lhotse.CutSet.from_manifests(recordings=recs, supervisions=sups)
    # one cut per whole recording: its supervisions give speaker and text
    whole = tmp_path / "cuts_whole.jsonl.gz"
    cuts.to_file(whole)
    dd = load_data_dir(whole)
    assert dd.utt2spk is not None and sorted(dd.utt2spk.values()) == ["spkA", "spkB"]
    assert sorted(dd.text.values()) == ["", "hello there bye"]
    assert sorted(dd.segments.values()) == [("rec1", 0.0, 1.0), ("rec2", 0.0, 0.5)]
    # ... per-supervision cuts are the usual input
    per_sup = cuts.trim_to_supervisions(keep_overlapping=False)
    path = tmp_path / "cuts_train.jsonl.gz"
    per_sup.to_file(path)
    dd = load_data_dir(path)
    assert len(dd.utts) == 3 and set(dd.utt2spk.values()) == {"spkA", "spkB"}
    seg = {dd.utt2spk[u] + f"{dd.segments[u][1]:.2f}": dd.segments[u] for u in dd.utts}
    assert seg["spkA0.50"][0] == "rec1" and seg["spkA0.50"][2] == pytest.approx(0.75)
    assert dd.load_audio(dd.utts[0]).ndim == 1
    # a RecordingSet alone: one utterance per recording, no speakers
    rpath = tmp_path / "recordings.jsonl"
    recs.to_file(rpath)
    dd = load_data_dir(rpath)
    assert dd.utts == ["rec1", "rec2"] and dd.segments is None and dd.utt2spk is None
    assert dd.load_audio("rec2").shape == (SR // 2,)


def test_cut_with_two_speakers_is_refused(tmp_path):
    lhotse, recs, _ = _manifests(tmp_path)
    sups = lhotse.SupervisionSet.from_segments([
        lhotse.SupervisionSegment("a", "rec1", 0.0, 0.4, speaker="s1"),
        lhotse.SupervisionSegment("b", "rec1", 0.5, 0.4, speaker="s2"),
    ])
    path = tmp_path / "cuts.jsonl"
    lhotse.CutSet.from_manifests(recordings=recs.filter(lambda r: r.id == "rec1"),
                                 supervisions=sups).to_file(path)
    with pytest.raises(DataError, match="supervisions of 2 speakers .*trim_to_supervisions"):
        load_data_dir(path)


def test_unsupported_sources_and_bad_manifests(tmp_path):
    lhotse, recs, sups = _manifests(tmp_path)
    rec = recs["rec1"]
    url = lhotse.Recording(id="r", sources=[lhotse.audio.AudioSource("url", [0], "http://x/a.wav")],
                           sampling_rate=SR, num_samples=SR, duration=1.0)
    lhotse.RecordingSet.from_recordings([url]).to_file(tmp_path / "url.jsonl")
    with pytest.raises(DataError, match="source of type 'url' is not supported"):
        load_data_dir(tmp_path / "url.jsonl")
    cmd = lhotse.Recording(id="r", sources=[lhotse.audio.AudioSource("command", [0],
                                                                     f"cat {rec.sources[0].source}")],
                           sampling_rate=SR, num_samples=SR, duration=1.0)
    lhotse.RecordingSet.from_recordings([cmd]).to_file(tmp_path / "cmd.jsonl")
    with pytest.raises(DataError, match="command audio source refused"):
        load_data_dir(tmp_path / "cmd.jsonl")
    assert load_data_dir(tmp_path / "cmd.jsonl", allow_pipes=True).wav["r"].endswith("|")
    # a supervision of a recording that is not there
    d = tmp_path / "m"
    d.mkdir()
    recs.filter(lambda r: r.id == "rec2").to_file(d / "recordings.jsonl")
    sups.to_file(d / "supervisions.jsonl")
    with pytest.raises(DataError, match="spkA-u1.*recording 'rec1' is not in the recordings"):
        load_data_dir(d)
    (tmp_path / "junk.jsonl").write_text("{not json\n")
    with pytest.raises(DataError, match=r"junk\.jsonl: cannot read lhotse manifest"):
        load_data_dir(tmp_path / "junk.jsonl")
    sups.to_file(tmp_path / "sups_only.jsonl")
    with pytest.raises(DataError, match="SupervisionSet; expected a CutSet or RecordingSet"):
        load_data_dir(tmp_path / "sups_only.jsonl")
