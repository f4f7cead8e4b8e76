"""Text token caches: built once beside the corpus, memory-mapped, same windows and losses
as the in-memory stores, rebuilt when the corpus or tokeniser changes."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cpc_seq.errors import DataError
from cpc_seq.text import token_cache as tc
from cpc_seq.text.data import ReadNotes, SentenceStore, TokenStore, read_corpus
from cpc_seq.text.tokenizers import (
    ByteTokenizer,
    CharTokenizer,
    SentencePieceTokenizer,
    TokenizerConfig,
    encode_many,
    train_tokenizer,
)
from cpc_seq.text.train import (
    TextDataConfig,
    build_store,
    load_text_config,
    make_text_engine,
    read_options,
)

ROOT = Path(__file__).resolve().parents[2]
KJV_DEV = ROOT / "data" / "text" / "kjv" / "dev"
BOOKS = ["01-genesis.txt", "19-psalms.txt", "40-matthew.txt", "63-2john.txt",
         "21-ecclesiastes.txt", "66-revelation.txt"]

torch.set_num_threads(1)


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A few KJV dev books (one short enough to be skipped) in a private directory."""
    d = tmp_path / "corpus"
    d.mkdir()
    for name in BOOKS:
        shutil.copy(KJV_DEV / name, d / name)
    return d


def _cache(corpus: Path, tok, level: str, out: Path | None = None, **kw: object
           ) -> tc.TokenCache:
    files = sorted(corpus.glob("*.txt"))
    return tc.get_token_cache(files, tok, level, tc.ReadOptions(**kw),
                              tc.cache_roots(files, None, out), progress=False)


@pytest.fixture(scope="module")
def spm_tok() -> SentencePieceTokenizer:
    sents = [s for d in read_corpus(KJV_DEV) for s in d.sentences]
    return SentencePieceTokenizer.train(sents, vocab_size=300)


# ------------------------------------------------------------------ the cache files


@pytest.mark.parametrize("kind", ["bytes", "chars", "sentencepiece"])
def test_cache_holds_exactly_the_in_memory_tokens(corpus: Path, kind: str,
                                                  spm_tok: SentencePieceTokenizer,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tc, "CHUNK_CHARS", 500)  # many chunks per document
    docs = read_corpus(corpus)
    tok = {"bytes": ByteTokenizer(), "sentencepiece": spm_tok,
           "chars": CharTokenizer.train([d.text for d in docs])}[kind]
    cache = _cache(corpus, tok, "token")
    assert cache.path.parent == corpus / tc.CACHE_DIR_NAME
    assert isinstance(cache.tokens, np.memmap) and cache.tokens.dtype == np.uint16
    assert cache.names == [d.name for d in docs]
    want = encode_many(tok, [d.text for d in docs])
    off = cache.doc_offsets
    for i, ids in enumerate(want):
        assert cache.tokens[off[i] : off[i + 1]].tolist() == ids, docs[i].name
    sent = _cache(corpus, tok, "sentence")
    want_s = encode_many(tok, [s for d in docs for s in d.sentences])
    so = sent.sent_offsets
    assert so is not None and len(so) == len(want_s) + 1
    assert [sent.tokens[so[j] : so[j + 1]].tolist() for j in range(len(want_s))] == want_s
    assert np.diff(sent.doc_offsets).tolist() == [len(d.sentences) for d in docs]


def test_token_dtype() -> None:
    assert tc.token_dtype(257) == np.uint16 and tc.token_dtype(65536) == np.uint16
    assert tc.token_dtype(65537) == np.int32


@pytest.mark.parametrize("level", ["token", "sentence"])
def test_memmap_store_gathers_what_the_in_memory_store_does(
        corpus: Path, level: str, spm_tok: SentencePieceTokenizer) -> None:
    window = 64 if level == "token" else 5
    cfg = TextDataConfig(window=window, max_sentence_tokens=12)
    mem_notes, map_notes = ReadNotes(), ReadNotes()
    mem = build_store(read_corpus(corpus), spm_tok, level, cfg, "skip", mem_notes)
    mapped = tc.open_store(_cache(corpus, spm_tok, level), window, "skip", map_notes,
                           12 if level == "sentence" else None)
    assert type(mem) is type(mapped)
    assert mem.names == mapped.names and torch.equal(mem.lengths, mapped.lengths)
    assert mem_notes.summary() == map_notes.summary()
    if level == "sentence":
        assert map_notes.truncated_sentences > 0
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        idx = torch.randint(len(mem.names), (7,), generator=g)
        off = (torch.rand(7, generator=g) * (mem.lengths[idx] - window + 1)).long()
        a, b = mem.gather(idx, off, window), mapped.gather(idx, off, window)
        if isinstance(mem, TokenStore):
            assert a.dtype == b.dtype == torch.int64 and torch.equal(a, b)
        else:
            assert isinstance(mapped, SentenceStore)
            assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_short_documents_error_names_the_document(corpus: Path) -> None:
    cache = _cache(corpus, ByteTokenizer(), "token")
    with pytest.raises(DataError, match="document 21-ecclesiastes: .* shorter than the training"):
        tc.open_store(cache, 2000, "error", ReadNotes())


# ------------------------------------------------------------- keys and rebuilds


def test_reused_until_the_corpus_or_tokenizer_changes(corpus: Path,
                                                      spm_tok: SentencePieceTokenizer,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[Path] = []
    real = tc.build_cache

    def counting(path: Path, *a: object, **kw: object) -> None:
        built.append(path)
        real(path, *a, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(tc, "build_cache", counting)
    first = _cache(corpus, ByteTokenizer(), "token")
    assert _cache(corpus, ByteTokenizer(), "token").path == first.path and len(built) == 1
    other = _cache(corpus, spm_tok, "token")  # another tokenizer
    assert other.path != first.path and len(built) == 2
    f = corpus / "21-ecclesiastes.txt"
    f.write_text(f.read_text() + "And one more line.\n")  # the corpus changed
    changed = _cache(corpus, ByteTokenizer(), "token")
    assert changed.path != first.path and len(built) == 3
    assert changed.meta["n_tokens"] == first.meta["n_tokens"] + len("And one more line.") + 1
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched: rebuilt
    assert _cache(corpus, ByteTokenizer(), "token").path != changed.path and len(built) == 4
    _cache(corpus, ByteTokenizer(), "token", layout="lines")  # another reading
    assert len(built) == 5


def test_incomplete_cache_is_rebuilt_and_bad_input_leaves_no_cache(corpus: Path) -> None:
    cache = _cache(corpus, ByteTokenizer(), "token")
    with open(cache.path / "tokens.bin", "r+b") as fh:
        fh.truncate(10)
    again = _cache(corpus, ByteTokenizer(), "token")
    assert again.path == cache.path and len(again.tokens) == cache.meta["n_tokens"]
    (corpus / "bad.txt").write_bytes(b"fine text\nthen \xff bad\n")
    with pytest.raises(DataError, match=r"bad.txt: invalid UTF-8 at byte offset 15"):
        _cache(corpus, ByteTokenizer(), "token")
    left = [p for p in (corpus / tc.CACHE_DIR_NAME).rglob("*")
            if p.is_file() and cache.path not in p.parents]
    assert left == []  # nothing half-written
    replaced = _cache(corpus, ByteTokenizer(), "token", errors="replace")
    notes = ReadNotes()
    tc.open_store(replaced, 8, "skip", notes)
    assert "replaced 1 invalid UTF-8" in " ".join(notes.summary())


def test_read_only_corpus_falls_back_to_out_dir(corpus: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    real = tc._writable
    monkeypatch.setattr(tc, "_writable",
                        lambda p: tc.CACHE_DIR_NAME not in str(p) and real(p))
    cache = _cache(corpus, ByteTokenizer(), "token", out=tmp_path / "exp" / "token_cache")
    assert cache.path.parent == tmp_path / "exp" / "token_cache"
    assert not (corpus / tc.CACHE_DIR_NAME / cache.path.name).exists()
    monkeypatch.setattr(tc, "_writable", lambda p: False)
    with pytest.raises(DataError, match="cannot write a token cache"):
        _cache(corpus, CharTokenizer(["a"]), "token", out=tmp_path / "x")


def test_tokenizer_sampling_streams_the_in_memory_choice(corpus: Path) -> None:
    files = sorted(corpus.glob("*.txt"))
    opts = tc.ReadOptions()
    every = [s for d in read_corpus(corpus) for s in d.sentences]
    assert tc.sample_sentences(files, opts, 0, False) == every
    assert tc.sample_sentences(files, opts, len(every), False) == every
    step = len(every) / 37
    assert tc.sample_sentences(files, opts, 37, False) == [every[int(i * step)]
                                                           for i in range(37)]
    cfg = TokenizerConfig(kind="chars", train_sentences=50)
    roots = tc.cache_roots(files, None, None)
    tok = tc.get_tokenizer(files, cfg, opts, 0, roots, False)
    assert tok.state() == train_tokenizer(cfg, every, 0).state()
    assert len(list(roots[0].glob("tokenizer-*.pt"))) == 1
    assert tc.get_tokenizer(files, cfg, opts, 0, roots, False).state() == tok.state()


# --------------------------------------------------------------------- training

BASE = ["data.batch_size=4", "model.embed_dim=8", "model.dim_c=16", "train.steps=4",
        "train.log_every=1", "train.save_every=2", "train.progress=false", "train.threads=1",
        "optim.warmup_steps=2", "data.short_documents=skip"]
TOKEN = [*BASE, "model.level=token", "model.encoder_layers=[[2,2,16],[2,2,16]]",
         "model.n_steps=3", "data.window=32"]
SENT = [*BASE, "model.level=sentence", "model.encoder_layers=[[3,1,16]]", "model.n_steps=2",
        "data.window=4", "data.max_sentence_tokens=10", "tokenizer.kind=sentencepiece",
        "tokenizer.vocab_size=200", "tokenizer.train_sentences=300"]


def _losses(out: Path) -> list[float]:
    return [json.loads(x)["train/loss"] for x in (out / "log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("level", ["token", "sentence"])
def test_training_losses_equal_the_in_memory_store(corpus: Path, tmp_path: Path,
                                                   level: str) -> None:
    args = [*(TOKEN if level == "token" else SENT), f"data.train={corpus}",
            f"data.dev={corpus}", "train.eval_every=2", "train.eval_windows=4"]
    runs = {}
    for cached in (False, True):
        out = tmp_path / f"run-{cached}"
        engine = make_text_engine(load_text_config(
            None, [*args, f"data.token_cache={str(cached).lower()}", f"train.out_dir={out}"]))
        engine.run()
        runs[cached] = (engine, _losses(out))
    mem, mapped = runs[False][0].task.train_store, runs[True][0].task.train_store
    assert isinstance(mapped.flat, np.memmap) and not isinstance(mem.flat, np.memmap)
    assert runs[True][1] == runs[False][1] and len(runs[True][1]) == 4
    for (name, p1), p2 in zip(runs[False][0].model.state_dict().items(),
                              runs[True][0].model.state_dict().values()):
        assert torch.equal(p1, p2), name


def test_resume_reads_only_the_cache(corpus: Path, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    args = [*SENT, f"data.train={corpus}"]
    full = make_text_engine(load_text_config(None, [*args, "train.steps=6",
                                                    f"train.out_dir={tmp_path / 'a'}"]))
    full.run()
    part = make_text_engine(load_text_config(None, [*args, "train.steps=3",
                                                    f"train.out_dir={tmp_path / 'b'}"]))
    part.run()

    def no_reading(*a: object, **kw: object) -> str:
        raise AssertionError("the corpus was read again")

    monkeypatch.setattr(tc, "read_text_file", no_reading)
    resumed = make_text_engine(load_text_config(None, [*args, "train.steps=6",
                                                       f"train.out_dir={tmp_path / 'b'}"]),
                               resume=True)
    assert resumed.step == 3
    resumed.run()
    assert _losses(tmp_path / "b")[3:] == _losses(tmp_path / "a")[3:]
    for (name, p1), p2 in zip(full.model.state_dict().items(),
                              resumed.model.state_dict().values()):
        assert torch.equal(p1, p2), name
    # a fresh run on the same corpus reuses the cached tokenizer and tokens too
    make_text_engine(load_text_config(None, [*args, "train.steps=1",
                                             f"train.out_dir={tmp_path / 'c'}"])).run()


def test_read_options_follow_the_config() -> None:
    cfg = TextDataConfig(layout="lines", encoding_errors="replace", empty_lines="error")
    assert read_options(cfg) == tc.ReadOptions("lines", "replace", "skip", "error")


def test_counting_long_sentences_in_chunks(tmp_path: Path) -> None:
    so = np.array([0, 3, 10, 11, 30, 31, 40, 52], dtype=np.int64)
    so.tofile(tmp_path / "so.bin")
    lens = np.diff(so)
    for ranges in ([(0, 7)], [(1, 3), (4, 7)], [(2, 2)]):
        want = sum(int((lens[lo:hi] > 5).sum()) for lo, hi in ranges)
        for chunk in (1, 2, 3, 100):
            assert tc._count_longer(tmp_path / "so.bin", ranges, 5, chunk) == want
