"""Property-based fuzzing of every input parser, at benchmark scale (outside CI).

Each parser gets ``--cases`` (default 10,000) random and mutated-valid inputs from
hypothesis and must either parse them into something consistent or raise the project's
own error type (:class:`~cpc_seq.errors.CpcSeqError`) with a one-line message naming the
file (or the key, for config overrides). Anything else (a traceback, a message without
the file, a multi-line message, an inconsistent result) is a failure, printed with the
input that caused it.

Parsers: a Kaldi data dir (``wav.scp``, ``segments``, ``utt2spk``, ``spk2utt``,
``text`` via ``load_data_dir``), frame labels with a phone table, config overrides
(``key=value`` and YAML files), ZeroSpeech ``.item`` files, feature scps (random bytes
and mutated lines pointing into a real ark), item ids given to the feature writers
(``npy:`` and ``ark,scp``: nothing may land outside the output folder, and what is
written reads back under its id), YAML files with duplicated keys (refused naming both
lines), float WAVs with huge finite samples (read, resampled, normalised and turned into
MFCCs without overflowing) and TextGrids with hostile spans (bounded, or refused).

    python benchmarks/fuzz.py                      # 10,000 cases per parser
    python benchmarks/fuzz.py --cases 500 --only labels,item

CI runs the same properties with fewer cases (tests/reliability/test_reliability.py).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cpc_seq.errors import ConfigError, CpcSeqError  # noqa: E402

ALPHABET = list("ab12 -_.\t\n\r:|#-\u00e9\ufeff\x00") + ["spk-1", "utt", " -1", "0.5", "1e9"]
_text = st.lists(st.sampled_from(ALPHABET), max_size=80).map("".join)


def _mutated(valid: str) -> st.SearchStrategy[str]:
    """``valid`` with a few random edits (replace, insert or delete a character)."""
    edits = st.lists(st.tuples(st.integers(0, max(len(valid), 1)), st.sampled_from(["r", "i", "d"]),
                               st.sampled_from(ALPHABET)), max_size=4)

    def apply(ops: list[tuple[int, str, str]]) -> str:
        s = valid
        for pos, op, ch in ops:
            pos = min(pos, len(s))
            if op == "r" and pos < len(s):
                s = s[:pos] + ch + s[pos + 1 :]
            elif op == "i":
                s = s[:pos] + ch + s[pos:]
            elif op == "d" and pos < len(s):
                s = s[:pos] + s[pos + 1 :]
        return s

    return edits.map(apply)


def _one_line(e: CpcSeqError, name: str) -> None:
    msg = str(e)
    assert name in msg, f"message does not name {name}: {msg!r}"
    assert "\n" not in msg.strip(), f"multi-line message: {msg!r}"


class Counter:
    def __init__(self) -> None:
        self.cases = 0
        self.ok = 0
        self.errors = 0


# ----------------------------------------------------------------- parsers under test

VALID_WAV = "s1-a a.wav\ns1-b b.wav\ns2-a c.wav\n"
VALID_SEG = "s1-a rec 0 1.5\ns1-b rec 1.5 -1\ns2-a rec 0.25 0.75\n"
VALID_U2S = "s1-a s1\ns1-b s1\ns2-a s2\n"
VALID_S2U = "s1 s1-a s1-b\ns2 s2-a\n"
VALID_TEXT = "s1-a hello there\ns1-b\ns2-a bye\n"


def fuzz_data_dir(work: Path, cases: int, c: Counter) -> Callable[[], None]:
    from cpc_seq.audio.data.kaldi import load_data_dir

    d = work / "dd"
    files = st.fixed_dictionaries({
        "wav.scp": st.one_of(_text, _mutated(VALID_WAV), _mutated("rec r.wav\n")),
        "segments": st.one_of(st.none(), _text, _mutated(VALID_SEG)),
        "utt2spk": st.one_of(st.none(), _text, _mutated(VALID_U2S)),
        "spk2utt": st.one_of(st.none(), _mutated(VALID_S2U)),
        "text": st.one_of(st.none(), _text, _mutated(VALID_TEXT)),
    })

    @settings(max_examples=cases, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(files=files, bom=st.booleans())
    def prop(files: dict[str, str | None], bom: bool) -> None:
        c.cases += 1
        def load(with_bom: bool):  # noqa: ANN202
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir()
            for name, content in files.items():
                if content is not None:
                    (d / name).write_text(("\ufeff" if with_bom else "") + content)
            try:
                return load_data_dir(d)
            except CpcSeqError as e:
                _one_line(e, str(d))
                return str(e)

        dd = load(bom)
        if bom and not any((v or "").startswith("\ufeff") for v in files.values()):
            # a leading byte-order mark changes nothing
            plain = load(False)
            assert (dd if isinstance(dd, str) else (dd.utts, dd.wav, dd.utt2spk, dd.text)) == (
                plain if isinstance(plain, str) else
                (plain.utts, plain.wav, plain.utt2spk, plain.text)), files
        if isinstance(dd, str):
            c.errors += 1
            return
        c.ok += 1
        assert dd.utts == sorted(set(dd.utts)) and dd.utts, files
        if dd.segments is not None:
            assert set(dd.segments) == set(dd.utts), files
            assert all(rec in dd.wav for rec, _, _ in dd.segments.values()), files
        else:
            assert set(dd.wav) == set(dd.utts), files
        if dd.utt2spk is not None:
            assert set(dd.utt2spk) == set(dd.utts), files
            assert sorted(u for us in dd.spk2utt.values() for u in us) == dd.utts, files
        if dd.text is not None:
            assert set(dd.text) == set(dd.utts), files

    return prop


def fuzz_labels(work: Path, cases: int, c: Counter) -> Callable[[], None]:
    from cpc_seq.audio.data.kaldi import (
        phone_table_from_labels,
        read_frame_labels,
        read_phone_table,
    )

    lp, pp = work / "labels.txt", work / "phones.txt"

    @settings(max_examples=cases, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(labels=st.one_of(_text, _mutated("u1 sil a a b\nu2 3 3 1\n")),
           phones=st.one_of(_text, _mutated("sil 0\na 1\nb 2\n3 3\n")))
    def prop(labels: str, phones: str) -> None:
        c.cases += 1
        lp.write_text(labels)
        pp.write_text(phones)
        try:
            table = read_phone_table(pp)
            assert len(set(table.values())) == len(table) and min(table.values()) >= 0
        except CpcSeqError as e:
            _one_line(e, "phones.txt")
            table = None
        try:
            out = read_frame_labels(lp, table)
            if table is None and out:
                phone_table_from_labels(lp)
        except CpcSeqError as e:
            c.errors += 1
            _one_line(e, "labels.txt")
            return
        c.ok += 1
        for arr in out.values():
            assert arr.dtype == np.int64 and arr.ndim == 1 and len(arr), (labels, phones)
            if table is not None:
                assert set(arr.tolist()) <= set(table.values()), (labels, phones)

    return prop


_scalar = st.one_of(st.integers(-5, 10**6), st.floats(allow_nan=True, allow_infinity=True),
                    st.text(max_size=8), st.booleans(), st.none(),
                    st.lists(st.integers(), max_size=3), st.sampled_from(["1e999", ".inf",
                                                                          "&x [*x]", "[[1,2]]"]))
_keys = st.sampled_from(["model.dim_c", "model.context", "model.encoder", "data.window",
                         "data.batch_size", "loss.negatives", "optim.lr", "train.steps",
                         "train.precision", "model.bogus", "nosection", "train.device",
                         "model.encoder_layers", "optim.warmup_steps", "train.threads",
                         "loss.n_negatives", "train.max_bad_steps", "data.train", "a.b.c",
                         "model", "optim.lr.x", ""])


def fuzz_config(work: Path, cases: int, c: Counter) -> Callable[[], None]:
    from cpc_seq.audio.train import load_config

    path = work / "conf.yaml"

    @settings(max_examples=cases, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(items=st.lists(st.tuples(_keys, _scalar), max_size=4),
           yaml_text=st.one_of(st.none(), _text,
                               _mutated("model:\n  dim_c: 16\ntrain: &t\n  steps: 3\n"),
                               st.binary(max_size=60)))
    def prop(items: list[tuple[str, object]], yaml_text: str | bytes | None) -> None:
        c.cases += 1
        overrides = [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in items]
        if yaml_text is not None:
            (path.write_bytes if isinstance(yaml_text, bytes) else path.write_text)(yaml_text)
        try:
            load_config(path if yaml_text is not None else None, overrides)
        except ConfigError as e:
            c.errors += 1
            assert "\n" not in str(e).strip(), str(e)
            if yaml_text is not None and str(e).startswith(str(path)):
                _one_line(e, "conf.yaml")
            return
        c.ok += 1

    return prop


VALID_ITEM = ("#file onset offset #phone prev-phone next-phone speaker\n"
              "f1 0.10 0.20 a sil b s1\nf1 0.20 0.35 b a sil s1\nf2 0.0 0.1 a sil sil s2\n")


def fuzz_item(work: Path, cases: int, c: Counter) -> Callable[[], None]:
    from cpc_seq.probes.abx import read_item_file

    path = work / "x.item"

    @settings(max_examples=cases, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(content=st.one_of(_text, _mutated(VALID_ITEM), st.binary(max_size=80)))
    def prop(content: str | bytes) -> None:
        c.cases += 1
        (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
        try:
            rows = read_item_file(path)
        except CpcSeqError as e:
            c.errors += 1
            _one_line(e, "x.item")
            return
        c.ok += 1
        assert rows, content
        for r in rows:
            assert 0 <= r.onset < r.offset, r

    return prop


def fuzz_feature_scp(work: Path, cases: int, c: Counter) -> Callable[[], None]:
    import kaldiio

    from cpc_seq.io.features import read_features

    ark, scp = work / "f.ark", work / "f.scp"
    kaldiio.save_ark(str(ark), {"u1": np.zeros((3, 2), np.float32),
                                "u2": np.ones((2, 2), np.float32)}, scp=str(scp))
    valid = scp.read_text()
    target = work / "fuzz.scp"

    @settings(max_examples=cases, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(content=st.one_of(st.binary(max_size=200).map(lambda b: (b, True)),
                             _mutated(valid).map(lambda s: (s, False))))
    def prop(content: tuple[str | bytes, bool]) -> None:
        c.cases += 1
        data, is_bytes = content
        (target.write_bytes if is_bytes else target.write_text)(data)  # type: ignore[operator]
        try:
            feats = read_features(f"scp:{target}")
        except CpcSeqError as e:
            c.errors += 1
            _one_line(e, "fuzz.scp")
            return
        c.ok += 1
        for mat in feats.values():
            assert mat.ndim == 2

    return prop


_ID_PIECES = ["a", "U-1", "/", "\\", ".", "..", "../", " ", "\t", "\n", "\x00", "\x7f", "é",
              "\u2028", "\udc80", "\ud800", "x" * 120, "sub/", ".npy", "-", "~", "$HOME", "*"]


def fuzz_ids(work: Path, cases: int, c: Counter) -> Callable[[], None]:
    """Ids into the npy and ark,scp writers: refused with a DataError naming the id, or
    written inside the output folder and read back under the same id."""
    from cpc_seq.io.features import FeatureWriter, parse_wspecifier, read_features

    root = work / "out" / "deep"
    ids = st.one_of(st.lists(st.sampled_from(_ID_PIECES), min_size=0, max_size=6).map("".join),
                    st.text(max_size=20))

    def outside() -> list[str]:
        return sorted(str(p.relative_to(work)) for p in work.rglob("*")
                      if p.is_file() and root not in p.parents)

    @settings(max_examples=cases, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(utt=ids, kind=st.sampled_from(["npy", "ark_scp"]))
    def prop(utt: str, kind: str) -> None:
        c.cases += 1
        shutil.rmtree(work / "out", ignore_errors=True)
        d = root / "feats"
        spec = parse_wspecifier(f"npy:{d}" if kind == "npy" else f"ark,scp:{d}.ark,{d}.scp")
        feats = np.arange(6, dtype=np.float32).reshape(3, 2)
        try:
            writer = FeatureWriter(spec, resume=False)
            try:
                writer.write_batch([(utt, feats)])
            finally:
                writer.close(complete=True)
        except CpcSeqError as e:
            c.errors += 1
            assert repr(utt) in str(e) and "\n" not in str(e), (utt, str(e))
            assert not outside(), (utt, outside())
            return
        c.ok += 1
        assert not outside(), (utt, outside())
        back = read_features(f"npy:{d}" if kind == "npy" else f"scp:{d}.scp")
        assert list(back) == [utt], (utt, list(back))
        assert np.array_equal(back[utt].numpy(), feats), utt

    return prop


_YAML_KEYS = ["steps", "lr", "a", "b", "<<"]


def fuzz_yaml_duplicates(work: Path, cases: int, c: Counter) -> Callable[[], None]:
    """YAML mappings (nested, block or flow style, with anchors and merges) whose keys may
    repeat: a repeated key is a ConfigError naming the file, the key and both lines (each
    line holds that key); otherwise the file loads as written (later keys of a merge
    override)."""
    import yaml

    from cpc_seq.config import load_yaml

    path = work / "dup.yaml"
    leaf = st.tuples(st.sampled_from(_YAML_KEYS[:4]), st.integers(-3, 3))
    section = st.tuples(st.sampled_from(_YAML_KEYS[:4]),
                        st.lists(st.one_of(leaf, st.just(("<<", "*base"))), max_size=4),
                        st.booleans())

    @settings(max_examples=cases, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(items=st.lists(st.one_of(leaf, section), min_size=1, max_size=6))
    def prop(items: list[tuple]) -> None:
        c.cases += 1
        lines = ["base: &base {a: 1, steps: 2}"]
        for item in items:
            if len(item) == 2:
                lines.append(f"{item[0]}: {item[1]}")
                continue
            key, body, flow = item
            if flow:
                lines.append(f"{key}: {{{', '.join(f'{k}: {v}' for k, v in body)}}}")
            else:
                lines.append(f"{key}:" if body else f"{key}: {{}}")
                lines += [f"  {k}: {v}" for k, v in body]
        text = "\n".join(lines) + "\n"
        path.write_text(text)
        try:
            got = load_yaml(path)
        except ConfigError as e:
            msg = str(e)
            _one_line(e, "dup.yaml")
            if "duplicated key" not in msg:  # e.g. a merge of a non-mapping: plain YAML error
                c.errors += 1
                yaml.safe_load(text) if "invalid YAML" not in msg else None
                return
            c.errors += 1
            key = msg.split("duplicated key ")[1].split(" (first")[0].strip("'")
            second = int(msg.split(":")[1])
            first = int(msg.split("first at line ")[1].split(")")[0])
            assert first <= second, msg
            for n in (first, second):
                assert f"{key}:" in text.splitlines()[n - 1], (msg, text)
            return
        c.ok += 1
        assert got == yaml.safe_load(text), text

    return prop


def fuzz_huge_samples(work: Path, cases: int, c: Counter) -> Callable[[], None]:
    """Float WAVs of any finite samples (up to float32's 3.4e38, down to subnormals) at
    several rates: read at 16 kHz, normalised per window and turned into MFCCs, all
    finite; or a DataError naming the file."""
    import soundfile as sf

    from cpc_seq.audio.data.wav import read_audio
    from cpc_seq.audio.data.windows import normalize_windows
    from cpc_seq.audio.model.mfcc import mfcc_deltas

    path = work / "h.wav"
    import torch

    @settings(max_examples=cases, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(seed=st.integers(0, 2**31), n=st.integers(1, 6000),
           scale=st.sampled_from([3.4028235e38, 1.35e38, 1e30, 1e19, 1e10, 1.0, 1e-20, 1e-40,
                                  1e-45, 0.0]),
           shape=st.sampled_from(["noise", "sine", "constant", "impulse", "square"]),
           sr=st.sampled_from([8000, 16000, 22050, 44100]), channels=st.sampled_from([1, 2]))
    def prop(seed: int, n: int, scale: float, shape: str, sr: int, channels: int) -> None:
        c.cases += 1
        rng = np.random.default_rng(seed)
        t = np.arange(n)
        base = {"noise": rng.uniform(-1, 1, n), "sine": np.sin(t * 0.3),
                "constant": np.ones(n), "impulse": (t % 97 == 0) * 1.0,
                "square": np.sign(np.sin(t * 0.05))}[shape]
        x = np.clip(base * scale, -3.4028235e38, 3.4028235e38).astype(np.float32)
        x = np.repeat(x[:, None], channels, axis=1) * np.array([1.0, -1.0][:channels],
                                                                  dtype=np.float32)
        sf.write(path, x, sr, subtype="FLOAT")
        try:
            w = read_audio(path, 16000)
        except CpcSeqError as e:
            c.errors += 1
            _one_line(e, "h.wav")
            return
        c.ok += 1
        assert w.dtype == np.float32 and np.isfinite(w).all(), (scale, shape, sr)
        if len(w) >= 160:  # one frame: what every command that reads audio asks for
            x = torch.from_numpy(w)[None]
            assert bool(torch.isfinite(normalize_windows(x)).all()), (scale, shape, sr)
            assert bool(torch.isfinite(normalize_windows(
                x, lengths=torch.tensor([len(w) // 2 + 1]))).all()), (scale, shape, sr)
            for cmvn in (True, False):
                f = mfcc_deltas(w, cmvn=cmvn)
                assert bool(torch.isfinite(f).all()), (scale, shape, sr, cmvn)

    return prop


def fuzz_textgrid_spans(work: Path, cases: int, c: Counter) -> Callable[[], None]:
    """TextGrids with hostile xmin/xmax and interval spans (huge, negative, reversed,
    overlapping, non-numbers): one label per 10 ms frame up to the bound, or a DataError
    naming the file; never a MemoryError or a traceback."""
    from cpc_seq.audio.data.textgrid import textgrid_frame_labels

    path = work / "t.TextGrid"
    # Praat writes plain decimals (praatio does not read 1e8): huge spans are spelt out
    num = st.one_of(st.sampled_from(["0", "0.05", "100000000", "1" + "0" * 310, "-1", "nan",
                                     "inf", "-0", "0.015", "3", "x", "3600.01", "59.999"]),
                    st.floats(0, 10, allow_nan=False).map(lambda v: f"{v:.4f}"),
                    st.floats(0, 1e12, allow_nan=False).map(lambda v: f"{v:.3f}"))
    interval = st.tuples(num, num, st.sampled_from(["a", "b", "", "sil", "a b", "\u00e9"]))

    @settings(max_examples=cases, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(xmax=num, xmin=st.sampled_from(["0", "0", "0", "0.5", "-1"]),
           intervals=st.lists(interval, max_size=5), limit=st.sampled_from([1.0, 60.0, 3600.0]))
    def prop(xmax: str, xmin: str, intervals: list[tuple[str, str, str]], limit: float) -> None:
        c.cases += 1
        lines = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "",
                 f"xmin = {xmin}", f"xmax = {xmax}", "tiers? <exists>", "size = 1", "item []:",
                 "    item [1]:", '        class = "IntervalTier"', '        name = "phones"',
                 f"        xmin = {xmin}", f"        xmax = {xmax}",
                 f"        intervals: size = {len(intervals)}"]
        for j, (a, b, lab) in enumerate(intervals, start=1):
            lines += [f"        intervals [{j}]:", f"            xmin = {a}",
                      f"            xmax = {b}", f'            text = "{lab}"']
        path.write_text("\n".join(lines) + "\n")
        try:
            labels = textgrid_frame_labels(path, max_seconds=limit)
        except CpcSeqError as e:
            c.errors += 1
            _one_line(e, "t.TextGrid")
            return
        c.ok += 1
        assert len(labels) <= limit * 100 + 1, (xmax, len(labels))
        allowed = {lab for _, _, lab in intervals} | {"SIL"}
        assert set(labels) <= allowed, (labels[:5], intervals)

    return prop


PARSERS = {"datadir": fuzz_data_dir, "labels": fuzz_labels, "config": fuzz_config,
           "item": fuzz_item, "scp": fuzz_feature_scp, "ids": fuzz_ids,
           "yamldup": fuzz_yaml_duplicates, "samples": fuzz_huge_samples,
           "textgrid": fuzz_textgrid_spans}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", type=int, default=10_000, help="cases per parser")
    ap.add_argument("--only", default="", help="comma-separated subset of " + ",".join(PARSERS))
    args = ap.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or list(PARSERS)
    failed = False
    print("| parser | cases | parsed | own errors | seconds |\n|---|---:|---:|---:|---:|")
    for name in names:
        work = Path(tempfile.mkdtemp(prefix=f"cpc_fuzz_{name}."))
        counter = Counter()
        t0 = time.perf_counter()
        try:
            PARSERS[name](work, args.cases, counter)()
        except Exception as e:  # noqa: BLE001 - report any failure with its input
            failed = True
            print(f"{name}: FAILED after {counter.cases} cases: {type(e).__name__}: {e}",
                  file=sys.stderr)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        print(f"| {name} | {counter.cases} | {counter.ok} | {counter.errors} | "
              f"{time.perf_counter() - t0:.0f} |", flush=True)
        if counter.cases < args.cases and not failed:
            print(f"{name}: only {counter.cases} of {args.cases} cases ran", file=sys.stderr)
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
