"""Reliability of outputs (issue 13): OS errors as one line naming the path, checked
before any work; a full disk (injected, and on a real 64 kB filesystem where the machine
allows one); bad config files; ``--threads`` below 0 for every command; the memory bound
of text extraction."""

from __future__ import annotations

import argparse
import errno
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import torch
from helpers.runs import TINY_AUDIO

from cpc_seq.cli import main
from cpc_seq.errors import CpcSeqError, DataError

pytestmark = pytest.mark.usefixtures("one_thread")  # torch on one thread

ROOT = Path(__file__).resolve().parents[2]
DEV = ROOT / "data" / "tiny" / "dev"
TINY = TINY_AUDIO




def _err(capsys: pytest.CaptureFixture[str]) -> str:
    """The one ``error:`` line a failed command printed (last on stderr, after any notes)."""
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and err.count("error: ") == 1, err
    last = err.splitlines()[-1]
    assert last.startswith("error: "), err
    return last


def _mfcc(*args: str) -> int:
    return main(["audio", "extract", "--mfcc", "--no-progress", *args])


# ------------------------------------------------------------ outputs checked first


def test_bad_outputs_are_refused_before_any_work(tmp_path: Path, capsys) -> None:
    ark, scp = tmp_path / "f.ark", tmp_path / "f.scp"
    (tmp_path / "nf").mkdir()
    # --write-num-frames names a directory: found before extraction, not after it
    assert _mfcc("--write-num-frames", f"ark,t:{tmp_path / 'nf'}", str(DEV),
                 f"ark,scp:{ark},{scp}") == 2
    assert "nf: utt2num_frames file is a directory, expected a file" in _err(capsys)
    assert not ark.exists()
    scp.mkdir()
    assert _mfcc(str(DEV), f"ark,scp:{ark},{scp}") == 2
    assert f"{scp}: scp is a directory" in _err(capsys)
    assert not ark.exists()
    scp.rmdir()
    Path(f"{scp}.partial").mkdir()
    assert _mfcc(str(DEV), f"ark,scp:{ark},{scp}") == 2
    assert "f.scp.partial: progress record is a directory" in _err(capsys)
    # a file where a directory is expected
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    assert _mfcc(str(DEV), f"ark,scp:{blocker}/f.ark,{tmp_path}/g.scp") == 2
    assert f"{blocker}: directory of the ark is a file, not a directory" in _err(capsys)
    assert _mfcc(str(DEV), f"npy:{blocker}") == 2
    assert f"{blocker}: npy output directory is a file" in _err(capsys)
    assert _mfcc(str(DEV), f"ark,scp:{ark},{ark}") == 2
    assert "given as both the ark and the scp" in _err(capsys)


def test_unwritable_output_directory(tmp_path: Path, capsys, monkeypatch) -> None:
    """Permission denied on the output directory (injected: the tests may run as root)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    real = tempfile.mkstemp

    def mkstemp(*a, **k):  # noqa: ANN002, ANN003, ANN202
        if Path(k.get("dir", "")) == ro:
            raise PermissionError(errno.EACCES, "Permission denied", str(ro))
        return real(*a, **k)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    assert _mfcc(str(DEV), f"ark,scp:{ro}/f.ark,{ro}/f.scp") == 2
    err = _err(capsys)
    assert f"{ro}/f.ark: cannot write the ark (Permission denied)" in err
    assert not (ro / "f.ark").exists()
    assert _mfcc(str(DEV), f"npy:{ro}") == 2
    assert f"{ro}: cannot write the npy output directory (Permission denied)" in _err(capsys)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only directory")
def test_read_only_output_directory(tmp_path: Path, capsys) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        assert _mfcc(str(DEV), f"ark,scp:{ro}/f.ark,{ro}/f.scp") == 2
        assert "Permission denied" in _err(capsys)
    finally:
        ro.chmod(0o700)


# ------------------------------------------------------------ a full disk, injected


def test_enospc_inside_kaldiio_names_what_is_left_and_resumes(tmp_path: Path, monkeypatch
                                                              ) -> None:
    from cpc_seq.io.features import extract_to

    utts = ["a", "b", "c"]
    waves = {u: np.full(1600 * (i + 1), 0.1 * (i + 1), dtype=np.float32)
             for i, u in enumerate(utts)}

    def featurize(ws: list[torch.Tensor]) -> list[np.ndarray]:
        return [np.tile(w[:10].numpy(), (len(w) // 160, 1)) for w in ws]

    ark, scp = tmp_path / "f.ark", tmp_path / "f.scp"
    real = kaldiio.save_ark
    calls = {"n": 0}

    def full_disk(f, d, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
        calls["n"] += 1
        if calls["n"] == 2:
            f.write(b"half an entr")  # a torn write, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(f, d, *a, **k)

    monkeypatch.setattr(kaldiio, "save_ark", full_disk)
    with pytest.raises(CpcSeqError) as e:
        extract_to(featurize, waves.__getitem__, utts, f"ark,scp:{ark},{scp}",
                   max_batch_samples=1, progress=False)
    msg = str(e.value)
    assert f"{ark}: cannot write (No space left on device)" in msg
    assert "1 items are complete" in msg and "--skip-existing" in msg
    assert "nothing was written" not in msg and "\n" not in msg
    assert ark.exists() and Path(f"{scp}.partial").exists() and not scp.exists()
    monkeypatch.setattr(kaldiio, "save_ark", real)
    written = extract_to(featurize, waves.__getitem__, utts, f"ark,scp:{ark},{scp}",
                         skip_existing=True, max_batch_samples=1, progress=False)
    assert sorted(written) == ["a", "b"]  # c (longest) was written before the failure
    feats = dict(kaldiio.load_scp(str(scp)))
    assert sorted(feats) == utts
    for u in utts:
        np.testing.assert_array_equal(feats[u], featurize([torch.from_numpy(waves[u])])[0])


def test_enospc_on_the_command_line(tmp_path: Path, monkeypatch, capsys) -> None:
    real = kaldiio.save_ark
    calls = {"n": 0}

    def full_disk(f, d, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(f, d, *a, **k)

    monkeypatch.setattr(kaldiio, "save_ark", full_disk)
    ark, scp = tmp_path / "f.ark", tmp_path / "f.scp"
    assert _mfcc("--batch-seconds", "0.01", str(DEV), f"ark,scp:{ark},{scp}") == 2
    err = _err(capsys)
    assert f"{ark}: cannot write (No space left on device); 2 items are complete" in err
    assert "rerun with --skip-existing" in err
    monkeypatch.setattr(kaldiio, "save_ark", real)
    assert _mfcc("--skip-existing", str(DEV), f"ark,scp:{ark},{scp}") == 0
    assert len(kaldiio.load_scp(str(scp))) == len((DEV / "wav.scp").read_text().splitlines())


def test_enospc_in_npy_output_names_what_is_left(tmp_path: Path, monkeypatch) -> None:
    from cpc_seq.io.features import extract_to

    real = np.save
    calls = {"n": 0}

    def full(f, arr, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(f, arr, *a, **k)

    monkeypatch.setattr(np, "save", full)
    with pytest.raises(CpcSeqError, match=r"b\.npy: cannot write \(No space left on device\); "
                       r"the file was not changed; 1 items are complete in .*--skip-existing"):
        extract_to(lambda ws: [np.zeros((1, 2), np.float32) for _ in ws],
                   lambda u: np.zeros(320, np.float32), ["a", "b"], f"npy:{tmp_path / 'n'}",
                   max_batch_samples=1, progress=False)
    assert sorted(p.name for p in (tmp_path / "n").iterdir()) == ["a.npy"]


def test_torch_save_failing_on_a_full_disk(tmp_path: Path, monkeypatch, capsys) -> None:
    from cpc_seq.io.checkpoint import save_checkpoint

    def full(*a, **k):  # noqa: ANN002, ANN003, ANN202
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(CpcSeqError, match=r"x\.pt: cannot write .*the file was not changed"):
        save_checkpoint({"kind": "audio_cpc", "config": {}, "model": {}}, tmp_path / "x.pt")
    assert list(tmp_path.iterdir()) == []  # no temporary file left
    out = tmp_path / "run"
    assert main(["audio", "train", *TINY, "train.steps=2", f"train.out_dir={out}"]) == 2
    err = _err(capsys)
    assert f"{out / 'last.pt'}: cannot write" in err and not (out / "last.pt").exists()


def _can_mount_tmpfs() -> bool:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs "
                            f"{tempfile.gettempdir()}"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="needs a private 64 kB tmpfs (root, unshare)")
def test_a_real_full_filesystem(tmp_path: Path) -> None:
    """Extraction and training onto a real 64 kB filesystem (a private mount namespace,
    gone when the command exits): one line naming the path, exit 2."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    py = sys.executable
    script = (
        f"mount -t tmpfs -o size=64k tmpfs {mnt} && "
        f"{py} -m cpc_seq audio extract --mfcc --no-progress {DEV} "
        f"ark,scp:{mnt}/f.ark,{mnt}/f.scp 2> {tmp_path}/extract.err; echo $? > {tmp_path}/extract.rc; "
        f"rm -f {mnt}/*; {py} -m cpc_seq audio train {' '.join(TINY)} train.steps=2 "
        f"train.out_dir={mnt}/run 2> {tmp_path}/train.err; echo $? > {tmp_path}/train.rc"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    subprocess.run(["unshare", "-m", "sh", "-c", script], env=env, check=True, timeout=300)
    err = (tmp_path / "extract.err").read_text().strip()
    assert (tmp_path / "extract.rc").read_text().strip() == "2", err
    assert err.count("\n") == 0 and "No space left on device" in err
    assert f"{mnt}/f.ark" in err and "--skip-existing" in err
    err = (tmp_path / "train.err").read_text().strip()
    assert (tmp_path / "train.rc").read_text().strip() == "2", err
    assert "No space left on device" in err and "last.pt" in err
    assert "Traceback" not in err


# ------------------------------------------------------------ a directory or file in the way


def test_directory_where_a_file_is_expected_and_vice_versa(tmp_path: Path, capsys) -> None:
    feats = tmp_path / "f"
    feats.mkdir()
    rng = np.random.default_rng(0)
    utts = [f"s1-{i}" for i in range(5)]
    for u in utts:
        np.save(feats / f"{u}.npy", rng.standard_normal((6, 3)).astype(np.float32))
    (tmp_path / "lab").write_text("".join(f"{u} 0 0 0 1 1 1\n" for u in utts))
    out = tmp_path / "out"
    out.write_text("a file")
    args = ["probe", "phone", "--no-progress", "--epochs", "1", "--feats", f"npy:{feats}",
            "--labels", str(tmp_path / "lab"), "--out", str(out)]
    assert main(args) == 2
    assert str(out) in _err(capsys)
    out.unlink()
    (out / "result.json").mkdir(parents=True)
    assert main(args) == 2
    assert f"{out / 'result.json'}: is a directory" in _err(capsys)
    cfg = tmp_path / "conf"
    cfg.mkdir()
    assert main(["audio", "train", "--config", str(cfg)]) == 2
    assert f"{cfg}: cannot read config" in _err(capsys)


# ------------------------------------------------------------ config files, --threads


@pytest.mark.parametrize("command", ["train", "text-train", "image-train"])
def test_bad_config_files_are_one_line_errors(tmp_path: Path, capsys, command: str) -> None:
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("train:\n  out_dir: caf\u00e9\n".encode("latin-1"))
    assert main([command, "--config", str(latin1)]) == 2
    assert f"{latin1}:2: not UTF-8 text" in _err(capsys)
    rec = tmp_path / "rec.yaml"
    rec.write_text("train: &a\n  x: *a\n")
    assert main([command, "--config", str(rec)]) == 2
    assert "recursive structure" in _err(capsys)
    bomb = tmp_path / "bomb.yaml"
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    bomb.write_text("\n".join(lines) + "\n")
    assert main([command, "--config", str(bomb)]) == 2
    assert "aliases expand it to more than" in _err(capsys)
    nul = tmp_path / "nul.yaml"
    nul.write_text("train:\x00\n")  # the YAML reader's message has a line break
    assert main([command, "--config", str(nul)]) == 2
    assert "invalid YAML (unacceptable character" in _err(capsys)
    assert main([command, "train.steps=&x [*x]"]) == 2
    assert "override train.steps: invalid YAML" in _err(capsys)


def _commands_with_threads() -> list[tuple[str, argparse.ArgumentParser]]:
    from cpc_seq.cli import build_parser

    found = []

    def walk(parser: argparse.ArgumentParser, prefix: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{prefix} {name}".strip())
        if any("--threads" in a.option_strings for a in parser._actions):
            found.append((prefix, parser))

    walk(build_parser(), "")
    return found


def test_negative_threads_refused_by_every_command(capsys) -> None:
    from cpc_seq.cliutil import run_command

    commands = _commands_with_threads()
    names = [n for n, _ in commands]
    assert {"audio extract", "text extract", "text probe", "image probe"} <= set(names), names
    for name, parser in commands:
        ns = argparse.Namespace(**{a.dest: a.default for a in parser._actions
                                   if a.dest != "help"})
        for k, v in parser._defaults.items():
            setattr(ns, k, v)
        ns.threads = -3
        assert run_command(ns.func, ns) == 2, name
        assert "--threads must be >= 0" in _err(capsys), name


def test_negative_threads_on_the_command_line(tmp_path: Path, capsys) -> None:
    assert main(["text", "extract", "--threads", "-3", "--ckpt", str(tmp_path / "x.pt"),
                 f"text:{tmp_path / 't'}", f"npy:{tmp_path / 'o'}"]) == 2
    assert "--threads must be >= 0" in _err(capsys)
    assert main(["image", "probe", "--threads", "-3", "--ckpt", str(tmp_path / "x.pt"),
                 "--out", str(tmp_path / "o")]) == 2
    assert "--threads must be >= 0" in _err(capsys)


# ------------------------------------------------------------ text: memory bound, outputs


def _text_upstream():  # noqa: ANN202
    from cpc_seq.text.extract import TextUpstream
    from cpc_seq.text.models import TextModelConfig, build_text_model
    from cpc_seq.text.tokenizers import ByteTokenizer

    cfg = TextModelConfig(level="token", vocab_size=257, embed_dim=8,
                          encoder_layers=[[2, 2, 16]], dim_c=16, n_steps=2)
    return TextUpstream(build_text_model(cfg), ByteTokenizer())


def test_text_item_longer_than_batch_chars_is_refused_before_any_work(tmp_path: Path) -> None:
    from cpc_seq.text.extract import extract_text_to

    up = _text_upstream()
    ark, scp = tmp_path / "t.ark", tmp_path / "t.scp"
    items = [("short", "hello there"), ("long", "x" * 5000), ("long2", "y" * 3000)]
    with pytest.raises(DataError, match=r"item long: 5000 characters, more than --batch-chars "
                       r"1000 \(2 such items\).*split long items"):
        extract_text_to(up, items, f"ark,scp:{ark},{scp}", max_batch_chars=1000, progress=False)
    assert not ark.exists()
    rows = extract_text_to(up, items, f"ark,scp:{ark},{scp}", max_batch_chars=5000,
                           progress=False)
    assert rows == {"short": 6, "long": 2500, "long2": 1500}
    bad = tmp_path / "dir.scp"
    bad.mkdir()
    with pytest.raises(CpcSeqError, match="dir.scp: scp is a directory"):
        extract_text_to(up, items[:1], f"ark,scp:{tmp_path / 'u.ark'},{bad}", progress=False)
    assert not (tmp_path / "u.ark").exists()


def test_feature_writer_progress_record_tolerates_a_torn_line(tmp_path: Path) -> None:
    """A torn last line of ``.partial`` and a torn ark tail (kill -9 mid-write) are
    dropped on resume; every item is read back once."""
    from cpc_seq.io.features import FeatureWriter, extract_to, parse_wspecifier

    ark, scp = tmp_path / "f.ark", tmp_path / "f.scp"
    spec = f"ark,scp:{ark},{scp}"
    w = FeatureWriter(parse_wspecifier(spec), resume=False)
    w.write_batch([("a", np.zeros((2, 2), np.float32))])
    w.ark.write(b"b \0BFM half")  # a torn entry, never recorded
    w.ark.flush()
    w.prog.write(f"b {ark}:")  # a torn record
    w.prog.flush()  # then the process dies: no close()
    load = {u: np.ones(320, np.float32) for u in "abc"}.__getitem__
    feat = lambda ws: [np.zeros((2, 2), np.float32) + len(w) for w in ws]  # noqa: E731
    written = extract_to(feat, load, ["a", "b", "c"], spec, skip_existing=True, progress=False)
    assert sorted(written) == ["b", "c"]
    got = dict(kaldiio.load_scp(str(scp)))
    assert sorted(got) == ["a", "b", "c"] and float(got["b"][0, 0]) == 320.0
