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
and mutated lines pointing into a real ark).

    python benchmarks/fuzz.py                      # 10,000 cases per parser
    python benchmarks/fuzz.py --cases 500 --only labels,item

CI runs the same properties with fewer cases (tests/test_reliability.py).
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
    from cpc_seq.audio.data.kaldi import phone_table_from_labels, read_frame_labels, read_phone_table

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


PARSERS = {"datadir": fuzz_data_dir, "labels": fuzz_labels, "config": fuzz_config,
           "item": fuzz_item, "scp": fuzz_feature_scp}


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
