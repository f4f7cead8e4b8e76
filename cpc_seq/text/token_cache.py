"""Token caches: a text corpus tokenised once into memory-mapped files.

Training on a large corpus must not hold its text or its tokens in memory, nor tokenise
it again at every start or ``--resume``. The first run streams the corpus file by file
(one file's text at a time, tokens written as they come) into a cache directory; every
later run, rank and resume opens it with :class:`numpy.memmap`, so a training step reads
only the pages of the windows it gathers and memory stays flat in the corpus size.

Where: ``<root>/.cpc_seq_cache/text-<level>-<key>/``, ``<root>`` being the deepest
directory holding every corpus file (beside the corpus: shared by every experiment and
every rank that trains on it with the same tokeniser, and deleted with it). When that
place is not writable (a read-only corpus), ``<train.out_dir>/token_cache/`` instead;
``data.token_cache_dir`` names another directory. A cache found in any of these is used.

The key is a hash of each corpus file's path, size and modification time, the
tokeniser's identity (its full state: a different sentencepiece model is a different
tokeniser), the model level and the reading options (layout, encoding errors, empty
files/lines). Changing any of them builds a new cache; an old one is never reused. The
window length, ``short_documents`` and ``max_sentence_tokens`` are applied when the cache
is opened, so changing them needs no rebuild.

Files of one cache (all written atomically, ``meta.json`` last, so a cache with a
``meta.json`` is complete):

``tokens.bin``
    every token, documents (and their sentences) in corpus order; ``uint16`` when the
    vocabulary has at most 65,536 ids, else ``int32``. (T,)
``doc_offsets.npy``
    (D + 1,) int64: document ``i`` is tokens (token level) or sentences (sentence level)
    ``doc_offsets[i]`` .. ``doc_offsets[i + 1] - 1``.
``sent_offsets.bin``
    sentence level only, (S + 1,) int64 raw: sentence ``j`` is
    ``tokens[sent_offsets[j] : sent_offsets[j + 1]]`` (not yet cut to
    ``max_sentence_tokens``).
``meta.json``
    the key and what went into it, dtype, counts, document names and paths, and what
    reading skipped or replaced (reported again by every run that uses the cache).

A tokeniser that has to be trained (chars, sentencepiece) is trained on sentences
sampled from the corpus in a streaming pass (the same sentences an in-memory read
picks) and cached as ``tokenizer-<key>.pt`` in the same directory, keyed like the token
cache plus the tokeniser config and seed.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from cpc_seq.errors import DataError
from cpc_seq.io.atomic import atomic_write
from cpc_seq.text.data import (
    LAYOUTS,
    ReadNotes,
    SentenceStore,
    TokenStore,
    keep_long_enough,
    parse_document,
    read_text_file,
)
from cpc_seq.text.tokenizers import (
    ByteTokenizer,
    Tokenizer,
    TokenizerConfig,
    encode_many,
    tokenizer_from_state,
    train_tokenizer,
)

CACHE_DIR_NAME = ".cpc_seq_cache"
FORMAT_VERSION = 1
#: Token level: a document's text is encoded in pieces of about this many characters.
CHUNK_CHARS = 1 << 20
#: Sentence level: sentences encoded per call.
SENTENCE_BATCH = 4096
#: How often a rank waiting for another one's cache looks for it (seconds).
POLL_S = 1.0


@dataclass(frozen=True)
class ReadOptions:
    """How corpus files are read (see :mod:`cpc_seq.text.data`)."""

    layout: str = "document"
    errors: str = "strict"
    empty_files: str = "skip"
    empty_lines: str = "skip"


# ----------------------------------------------------------------------- keys


def corpus_fingerprint(files: Sequence[Path]) -> list[tuple[str, int, int]]:
    """(absolute path, size in bytes, mtime in ns) of every file, in order."""
    out = []
    for p in files:
        try:
            st = os.stat(p)
        except OSError as e:
            raise DataError(f"{p}: cannot read ({e.strerror or e})") from None
        out.append((os.path.abspath(p), int(st.st_size), int(st.st_mtime_ns)))
    return out


def tokenizer_identity(tok: Tokenizer) -> str:
    """sha256 of the tokeniser's full state (kind, character list or model bytes)."""
    h = hashlib.sha256()
    state = tok.state()
    for name in sorted(state):
        value = state[name]
        h.update(name.encode())
        if isinstance(value, torch.Tensor):
            h.update(value.cpu().contiguous().numpy().tobytes())
        else:
            h.update(json.dumps(value, sort_keys=True).encode())
    return h.hexdigest()


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def token_dtype(vocab_size: int) -> np.dtype:
    """``uint16`` when every id fits (vocab <= 65,536), else ``int32``."""
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.int32)


def cache_roots(files: Sequence[Path], cache_dir: str | None, fallback: str | Path | None
                ) -> list[Path]:
    """Directories a cache is looked for in, first writable one built in: ``cache_dir``
    if given, else ``<deepest directory holding every file>/.cpc_seq_cache`` then
    ``fallback`` (for a read-only corpus)."""
    if cache_dir:
        return [Path(cache_dir)]
    root = Path(os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in files]))
    roots = [root / CACHE_DIR_NAME]
    if fallback is not None:
        roots.append(Path(fallback))
    return roots


def _writable(path: Path) -> bool:
    """Can a cache be written in ``path`` (created if missing)? Tried, not guessed from
    permission bits (a read-only mount, or a directory this user may not write)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".probe.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError:
        return False
    return True


# -------------------------------------------------------------------- reading


def read_document(path: Path, opts: ReadOptions, notes: ReadNotes | None) -> list[str]:
    """One corpus file's sentences (as :func:`~cpc_seq.text.data.read_corpus` reads it)."""
    text = read_text_file(path, opts.errors, notes)
    return parse_document(text, opts.layout, path, opts.empty_lines, notes)


def iter_documents(files: Sequence[Path], opts: ReadOptions, notes: ReadNotes
                   ) -> Iterator[tuple[Path, list[str]]]:
    """(path, sentences) of every non-empty file, one file in memory at a time, with
    read_corpus's checks: empty files skipped (or an error), unique stems, some text."""
    if opts.layout not in LAYOUTS:
        raise DataError(f"layout={opts.layout!r}: one of {', '.join(LAYOUTS)}")
    seen: dict[str, Path] = {}
    any_text = False
    for path in files:
        notes.files += 1
        sents = read_document(path, opts, notes)
        if not sents:
            if opts.empty_files == "error":
                raise DataError(f"{path}: empty file (no text)")
            notes.empty_files.append(str(path))
            yield path, sents
            continue
        if path.stem in seen:
            raise DataError(f"{path}: document name {path.stem!r} already used by "
                            f"{seen[path.stem]}; file stems must be unique within a corpus")
        seen[path.stem] = path
        any_text = True
        yield path, sents
    if not any_text:
        where = os.path.commonpath([str(p) for p in files]) if files else "<no files>"
        raise DataError(f"{where}: the corpus has no text ({notes.files} file(s), all empty)")


def _text_chunks(sents: list[str]) -> Iterator[str]:
    """``" ".join(sents)`` in pieces of about CHUNK_CHARS characters; every piece but the
    first starts with the separating space (so bytes and chars encode exactly as the
    whole text, and sentencepiece, which drops leading whitespace and marks a word start
    itself, does too)."""
    group: list[str] = []
    size, first = 0, True
    for s in sents:
        group.append(s)
        size += len(s) + 1
        if size >= CHUNK_CHARS:
            yield ("" if first else " ") + " ".join(group)
            group, size, first = [], 0, False
    if group:
        yield ("" if first else " ") + " ".join(group)


def _encode_flat(tok: Tokenizer, text: str, dtype: np.dtype) -> np.ndarray:
    if isinstance(tok, ByteTokenizer):
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(dtype) + 1
    return np.asarray(encode_many(tok, [text])[0], dtype=dtype)


# ----------------------------------------------------------------- the cache


@dataclass
class TokenCache:
    """An opened cache: ``tokens`` (T,) and ``sent_offsets`` (S + 1,) are read-only
    memmaps, ``doc_offsets`` (D + 1,) an int64 array; ``meta`` the parsed meta.json."""

    path: Path
    meta: dict[str, Any]
    tokens: np.ndarray
    doc_offsets: np.ndarray
    sent_offsets: np.ndarray | None

    @property
    def names(self) -> list[str]:
        return list(self.meta["names"])

    def add_notes(self, notes: ReadNotes) -> None:
        """Add what reading the corpus skipped or replaced (stored at build) to ``notes``."""
        r = self.meta["read_notes"]
        notes.files += r["files"]
        notes.empty_files.extend(r["empty_files"])
        notes.empty_lines += r["empty_lines"]
        if notes.first_empty_line is None:
            notes.first_empty_line = r["first_empty_line"]
        notes.replaced.update(r["replaced"])
        notes.first_replaced.update(r["first_replaced"])


def _memmap(path: Path, dtype: np.dtype, count: int) -> np.ndarray:
    if count == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=(count,))


def open_cache(path: Path, key: str) -> TokenCache | None:
    """The complete cache in ``path`` for ``key``, or None (missing, other key, or files
    of the wrong size: a cache that is not exactly what was built is never used)."""
    try:
        meta = json.loads((path / "meta.json").read_text())
        if meta.get("format") != FORMAT_VERSION or meta.get("key") != key:
            return None
        dtype = np.dtype(meta["dtype"])
        n_tok, level = int(meta["n_tokens"]), meta["level"]
        if (path / "tokens.bin").stat().st_size != n_tok * dtype.itemsize:
            return None
        doc_offsets = np.load(path / "doc_offsets.npy")
        sent_offsets = None
        if level == "sentence":
            n_sent = int(meta["n_sentences"])
            if (path / "sent_offsets.bin").stat().st_size != (n_sent + 1) * 8:
                return None
            sent_offsets = np.memmap(path / "sent_offsets.bin", dtype=np.int64, mode="r",
                                     shape=(n_sent + 1,))
        if len(doc_offsets) != len(meta["names"]) + 1:
            return None
        return TokenCache(path, meta, _memmap(path / "tokens.bin", dtype, n_tok),
                          doc_offsets, sent_offsets)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def build_cache(path: Path, key: str, inputs: dict[str, Any], files: Sequence[Path],
                tok: Tokenizer, level: str, opts: ReadOptions, progress: bool = True) -> None:
    """Tokenise ``files`` into the cache directory ``path`` (see the module docstring).

    Memory: one file's text and sentences plus one chunk's tokens at a time.
    """
    if level not in ("token", "sentence"):
        raise ValueError(f"level {level!r}: token or sentence")
    dtype = token_dtype(tok.vocab_size)
    notes = ReadNotes()
    names: list[str] = []
    paths: list[str] = []
    doc_offsets = [0]
    n_tok = n_sent = 0
    sizes = [s for _, s, _ in inputs["files"]]
    bar = tqdm(total=sum(sizes), unit="B", unit_scale=True, disable=not progress,
               desc=f"token cache {path.name}", dynamic_ncols=True)
    with contextlib.ExitStack() as stack:
        ft = stack.enter_context(atomic_write(path / "tokens.bin"))
        fs = (stack.enter_context(atomic_write(path / "sent_offsets.bin"))
              if level == "sentence" else None)
        if fs is not None:
            fs.write(np.zeros(1, dtype=np.int64).tobytes())
        for (doc_path, sents), size in zip(iter_documents(files, opts, notes), sizes):
            bar.update(size)
            if not sents:
                continue
            names.append(doc_path.stem)
            paths.append(str(doc_path))
            if level == "token":
                for chunk in _text_chunks(sents):
                    ids = _encode_flat(tok, chunk, dtype)
                    ft.write(ids.tobytes())
                    n_tok += len(ids)
                doc_offsets.append(n_tok)
                continue
            for i in range(0, len(sents), SENTENCE_BATCH):
                enc = encode_many(tok, sents[i : i + SENTENCE_BATCH])
                lens = np.fromiter((len(x) for x in enc), dtype=np.int64, count=len(enc))
                total = int(lens.sum())
                flat = np.fromiter(itertools.chain.from_iterable(enc), dtype=dtype, count=total)
                ft.write(flat.tobytes())
                assert fs is not None
                fs.write((n_tok + np.cumsum(lens)).tobytes())
                n_tok += total
                n_sent += len(enc)
            doc_offsets.append(n_sent)
    bar.close()
    with atomic_write(path / "doc_offsets.npy") as f:
        np.save(f, np.asarray(doc_offsets, dtype=np.int64))
    meta = {
        "format": FORMAT_VERSION, "key": key, "level": level, "dtype": dtype.name,
        "n_tokens": n_tok, "n_sentences": n_sent, "names": names, "paths": paths,
        "read_notes": {
            "files": notes.files, "empty_files": notes.empty_files,
            "empty_lines": notes.empty_lines, "first_empty_line": notes.first_empty_line,
            "replaced": notes.replaced, "first_replaced": notes.first_replaced,
        },
        "inputs": inputs,
    }
    with atomic_write(path / "meta.json", "w") as f:
        json.dump(meta, f)


def _say(msg: str, progress: bool) -> None:
    if progress:
        tqdm.write(msg)


def _wait_for(found: Any) -> Any:
    """Poll ``found()`` until it returns something (another rank is building it)."""
    while True:
        out = found()
        if out is not None:
            return out
        time.sleep(POLL_S)


def _build_root(roots: Sequence[Path]) -> Path:
    for r in roots:
        if _writable(r):
            return r
    raise DataError(f"{roots[0]}: cannot write a token cache there or in "
                    f"{', '.join(str(r) for r in roots[1:]) or 'any other place'} "
                    "(set data.token_cache_dir to a writable directory)")


def get_token_cache(files: Sequence[Path], tok: Tokenizer, level: str, opts: ReadOptions,
                    roots: Sequence[Path], progress: bool = True, build: bool = True
                    ) -> TokenCache:
    """The cache of ``files`` tokenised by ``tok`` at ``level``: opened from the first of
    ``roots`` that has it, else built in the first writable one (``build=False``: wait
    for another process, e.g. the local main rank, to build it)."""
    inputs = {"files": corpus_fingerprint(files), "tokenizer": tokenizer_identity(tok),
              "level": level, "read": asdict(opts)}
    key = _digest({"format": FORMAT_VERSION, **inputs})
    name = f"text-{level}-{key[:16]}"

    def found() -> TokenCache | None:
        for r in roots:
            cache = open_cache(r / name, key)
            if cache is not None:
                return cache
        return None

    cache = found()
    if cache is not None:
        _say(f"[token cache] {cache.path}: {cache.meta['n_tokens']:,} tokens "
             f"({cache.meta['dtype']})", progress)
        return cache
    if not build:
        return _wait_for(found)
    root = _build_root(roots)
    t0 = time.perf_counter()
    build_cache(root / name, key, inputs, files, tok, level, opts, progress)
    cache = open_cache(root / name, key)
    if cache is None:
        raise DataError(f"{root / name}: the token cache just built cannot be read back")
    _say(f"[token cache] built {cache.path}: {cache.meta['n_tokens']:,} tokens "
         f"({cache.meta['dtype']}) in {time.perf_counter() - t0:.1f} s", progress)
    return cache


def _count_longer(path: Path, ranges: list[tuple[int, int]], limit: int,
                  chunk: int = 1 << 20) -> int:
    """Sentences longer than ``limit`` tokens in the sentence ranges [lo, hi), read from
    the offsets file in chunks with plain reads (mapping it would leave every page
    resident)."""
    n = 0
    for lo, hi in ranges:
        for a in range(int(lo), int(hi), chunk):
            b = min(int(hi), a + chunk)
            so = np.fromfile(path, dtype=np.int64, count=b - a + 1, offset=8 * a)
            n += int(np.count_nonzero(np.diff(so) > limit))
    return n


def open_store(cache: TokenCache, window: int, short: str, notes: ReadNotes,
               max_sentence_tokens: int | None = None) -> TokenStore | SentenceStore:
    """The training store over ``cache``'s memmaps, leaving out (or refusing, with
    ``short="error"``) documents shorter than ``window`` tokens / sentences, as
    :func:`cpc_seq.text.train.build_store` does in memory. Sentences longer than
    ``max_sentence_tokens`` are cut when gathered (and counted in ``notes``)."""
    cache.add_notes(notes)
    names = cache.names
    off = cache.doc_offsets
    counts = np.diff(off)
    if cache.sent_offsets is None:
        keep = keep_long_enough(names, counts.tolist(), window, short, "tokens", notes)
        return TokenStore.from_arrays([names[i] for i in keep], cache.tokens, off[keep],
                                      counts[keep])
    keep = keep_long_enough(names, counts.tolist(), window, short, "sentences", notes)
    if max_sentence_tokens is not None:
        notes.truncated_sentences += _count_longer(cache.path / "sent_offsets.bin",
                                                   [(off[i], off[i + 1]) for i in keep],
                                                   max_sentence_tokens)
    return SentenceStore.from_arrays([names[i] for i in keep], cache.tokens, cache.sent_offsets,
                                     off[keep], counts[keep], max_sentence_tokens)


# ------------------------------------------------------------------- tokeniser


def sample_sentences(files: Sequence[Path], opts: ReadOptions, n: int, progress: bool = True
                     ) -> list[str]:
    """The sentences :func:`~cpc_seq.text.tokenizers.train_tokenizer` would pick from the
    whole corpus (every one when ``n == 0`` or the corpus has at most ``n``; else the
    ``int(i * total / n)``-th, i < n), read in one or two streaming passes."""
    kept: list[str] | None = []
    counts: list[int] = []
    for path in tqdm(files, desc="tokenizer: counting sentences", unit="file",
                     disable=not progress, dynamic_ncols=True):
        sents = read_document(path, opts, None)
        counts.append(len(sents))
        if kept is not None:
            kept.extend(sents)
            if n and len(kept) > n:
                kept = None  # too many to keep: a second pass picks
    if kept is not None:
        return kept
    total = sum(counts)
    step = total / n
    picks = np.array([int(i * step) for i in range(n)], dtype=np.int64)
    out: list[str] = []
    base = 0
    for path, count in tqdm(list(zip(files, counts)), desc="tokenizer: sampling sentences",
                            unit="file", disable=not progress, dynamic_ncols=True):
        lo, hi = np.searchsorted(picks, [base, base + count])
        if hi > lo:
            sents = read_document(path, opts, None)
            out.extend(sents[int(j) - base] for j in picks[lo:hi])
        base += count
    return out


def get_tokenizer(files: Sequence[Path], cfg: TokenizerConfig, opts: ReadOptions, seed: int,
                  roots: Sequence[Path], progress: bool = True, build: bool = True) -> Tokenizer:
    """The tokeniser ``cfg`` describes, trained on ``files`` (sampled as in memory) and
    cached beside the token caches; bytes need no training (nothing cached)."""
    if cfg.kind == "bytes":
        return ByteTokenizer()
    key = _digest({"format": FORMAT_VERSION, "files": corpus_fingerprint(files),
                   "tokenizer_config": asdict(cfg), "read": asdict(opts), "seed": seed})
    name = f"tokenizer-{key[:16]}.pt"

    def found() -> Tokenizer | None:
        for r in roots:
            p = r / name
            if p.is_file():
                try:
                    state = torch.load(p, map_location="cpu", weights_only=True)
                except (OSError, RuntimeError, EOFError):
                    continue
                if isinstance(state, dict) and state.get("key") == key:
                    return tokenizer_from_state(state["tokenizer"])
        return None

    tok = found()
    if tok is not None:
        return tok
    if not build:
        return _wait_for(found)
    tok = train_tokenizer(cfg, sample_sentences(files, opts, cfg.train_sentences, progress),
                          seed)
    root = _build_root(roots)
    with atomic_write(root / name) as f:
        torch.save({"key": key, "tokenizer": tok.state()}, f)
    return tok
