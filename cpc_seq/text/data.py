"""Plain-text corpora for text CPC: reading, sentence splitting, training windows.

Corpus layouts (``layout``):

``document``
    One document per file, running text. Each line is a paragraph; paragraphs are split
    into sentences with :func:`split_sentences` (a sentence never spans a line break).
    Blank lines are paragraph separators and are simply ignored.
``lines``
    One sentence per line; a file is one document (its lines are consecutive sentences).
    Empty or whitespace-only lines are skipped and counted (``empty_lines="error"`` makes
    them an error naming ``file:line``).

Bad input, as documented here and reported through :class:`ReadNotes`:

- invalid UTF-8: ``errors="strict"`` (default) raises :class:`~cpc_seq.errors.DataError`
  naming the file, the byte offset and the line; ``errors="replace"`` decodes each
  invalid sequence as U+FFFD and counts them per file.
- a UTF-8 byte-order mark at the start of a file is dropped; ``\\r\\n`` and ``\\r`` line
  ends are read as ``\\n``.
- empty files (no text after stripping whitespace): skipped and counted
  (``empty_files="error"`` raises); a corpus with no text at all is an error.
- documents with fewer tokens (token level) or sentences (sentence level) than the
  training window: ``short="error"`` (default) raises naming the document and both
  lengths; ``short="skip"`` leaves them out and counts them.
- sentences longer than ``max_sentence_tokens`` are truncated (counted).

Training windows reuse :class:`cpc_seq.engine.windows.WindowSampler`: a pure function of
(seed, epoch), so resumed runs see the same batches.
"""

from __future__ import annotations

import glob
import re
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from cpc_seq.errors import DataError

Layout = Literal["document", "lines"]
EncodingErrors = Literal["strict", "replace"]
LAYOUTS = typing.get_args(Layout)
ENCODING_ERRORS = typing.get_args(EncodingErrors)


# ------------------------------------------------------------------------ notes


@dataclass
class ReadNotes:
    """Counts of what was skipped, replaced or truncated while reading a corpus."""

    files: int = 0
    empty_files: list[str] = field(default_factory=list)
    empty_lines: int = 0
    first_empty_line: str | None = None
    replaced: dict[str, int] = field(default_factory=dict)
    first_replaced: dict[str, int] = field(default_factory=dict)
    short_documents: list[str] = field(default_factory=list)
    truncated_sentences: int = 0

    def summary(self) -> list[str]:
        """One human-readable line per kind of event (empty when nothing happened)."""
        out = []
        if self.empty_files:
            out.append(f"skipped {len(self.empty_files)} empty file(s) (first: {self.empty_files[0]})")
        if self.empty_lines:
            out.append(f"skipped {self.empty_lines} empty line(s) (first: {self.first_empty_line})")
        if self.replaced:
            total = sum(self.replaced.values())
            first = next(iter(self.replaced))
            out.append(
                f"replaced {total} invalid UTF-8 sequence(s) with U+FFFD in "
                f"{len(self.replaced)} file(s) (first: {first} at byte offset "
                f"{self.first_replaced[first]})"
            )
        if self.short_documents:
            out.append(f"skipped {len(self.short_documents)} document(s) shorter than the "
                       f"window (first: {self.short_documents[0]})")
        if self.truncated_sentences:
            out.append(f"truncated {self.truncated_sentences} sentence(s) longer than "
                       "data.max_sentence_tokens")
        return out


# ------------------------------------------------------------------------ reading


def _line_col(data: bytes, offset: int) -> tuple[int, int]:
    line_start = data.rfind(b"\n", 0, offset) + 1
    return data.count(b"\n", 0, offset) + 1, offset - line_start + 1


def decode_utf8(
    data: bytes, path: str | Path = "<bytes>", errors: str = "strict",
    notes: ReadNotes | None = None,
) -> str:
    """Decode UTF-8 bytes; a BOM is dropped and line ends become ``\\n``.

    ``errors="strict"``: invalid UTF-8 raises DataError ``PATH: invalid UTF-8 at byte offset
    N (line L, column C): ...``. ``errors="replace"``: every invalid sequence becomes one
    U+FFFD (as Python's ``"replace"`` handler does) and is counted in ``notes``.
    """
    if errors not in ENCODING_ERRORS:
        raise DataError(f"errors={errors!r}: one of {', '.join(ENCODING_ERRORS)}")
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
        base = 3
    else:
        base = 0
    parts: list[str] = []
    pos = 0
    bad: list[int] = []
    while True:
        try:
            parts.append(data[pos:].decode("utf-8"))
            break
        except UnicodeDecodeError as e:
            start, end = pos + e.start, pos + e.end
            if errors == "strict":
                line, col = _line_col(data, start)
                raise DataError(
                    f"{path}: invalid UTF-8 at byte offset {start + base} (line {line}, byte "
                    f"{col} of the line): {e.reason} (byte 0x{data[start]:02x}); fix the file or "
                    "read it with encoding errors 'replace' to substitute U+FFFD"
                ) from None
            parts.append(data[pos:start].decode("utf-8"))
            parts.append("\ufffd")
            bad.append(start + base)
            pos = end
    if bad and notes is not None:
        notes.replaced[str(path)] = len(bad)
        notes.first_replaced[str(path)] = bad[0]
    text = "".join(parts)
    return text.replace("\r\n", "\n").replace("\r", "\n")


def read_text_file(path: str | Path, errors: str = "strict", notes: ReadNotes | None = None) -> str:
    """Whole file as text (see :func:`decode_utf8`); unreadable files raise DataError."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    return decode_utf8(data, path, errors, notes)


def list_text_files(paths: str | Sequence[str]) -> list[Path]:
    """Files named by ``paths``: files, directories (every ``*.txt`` below, sorted) or globs.

    Order: as given, each directory's files sorted by path. Missing paths raise DataError.
    """
    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not items:
        raise DataError("no corpus paths given")
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(x for x in p.rglob("*.txt") if x.is_file())
            if not found:
                raise DataError(f"{p}: directory has no *.txt files")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        elif any(ch in str(item) for ch in "*?["):
            found = sorted(Path(x) for x in glob.glob(str(item), recursive=True)
                           if Path(x).is_file())
            if not found:
                raise DataError(f"{item}: pattern matches no files")
            out.extend(found)
        else:
            raise DataError(f"{p}: no such file or directory")
    return out


# ------------------------------------------------------------------ sentence splitting

#: Lower-cased words that end with a period without ending a sentence.
ABBREVIATIONS = frozenset(
    "mr mrs ms messrs dr prof rev fr sr jr st mt ft gen gov col capt lt sgt hon "
    "vs cf viz al e.g i.e a.m p.m no nos vol vols fig figs ch chap pp ed eds inc ltd co corp "
    "jan feb mar apr jun jul aug sep sept oct nov dec approx dept est".split()
)

# A run of sentence punctuation (not preceded by more of it, so that a long run of dots
# is tried once, not once per dot), closing quotes/brackets, then whitespace.
_BOUNDARY = re.compile(r"(?<![.!?])[.!?]+['\"\u2019\u201d)\]]*\s+")
_OPENERS = "'\"\u2018\u201c([\u00bf\u00a1"
_CLOSERS = "'\"\u2019\u201d)]"


def _starts_sentence(para: str, i: int) -> bool:
    """Does ``para[i:]``, after opening quotes/brackets, start with an upper-case letter
    or a digit? (Reads only as far as the first other character.)"""
    n = len(para)
    while i < n and para[i] in _OPENERS:
        i += 1
    return i < n and (para[i].isupper() or para[i].isdigit())


def _is_abbreviation(para: str, start: int, stop: int) -> bool:
    """Is the word of ``para[start:stop]`` that ends at ``stop`` (just before a single
    ``.``) an abbreviation? ``para`` has single spaces only (see :func:`split_sentences`);
    only that word is read, so the cost does not grow with the sentence."""
    word = para[max(para.rfind(" ", start, stop) + 1, start) : stop].lstrip(_OPENERS)
    if not word:
        return False
    if len(word) == 1 and word.isalpha() and word.isupper():
        return True  # an initial: "J. R. R. Tolkien"
    return word.lower() in ABBREVIATIONS


def split_sentences(text: str) -> list[str]:
    """Split running text into sentences (rule based; no dependency).

    A sentence ends at ``.``, ``!`` or ``?`` (possibly repeated and followed by closing
    quotes or brackets) followed by whitespace and a word starting with an upper-case
    letter or digit (after optional opening quotes/brackets), except after a known
    abbreviation (``Mr.``, ``e.g.``, ...) or a single capital initial. Line breaks always
    end a sentence; whitespace inside a sentence is collapsed to single spaces and empty
    results are dropped. ``"Yes. He went home! Did he?"`` -> three sentences;
    ``"Where art thou? and he said"`` stays one (lower-case continuation).

    Time is linear in the length of ``text`` (each boundary reads only its neighbours),
    so a one-line document of many megabytes splits in seconds.
    """
    out: list[str] = []
    for para in text.split("\n"):
        para = " ".join(para.split())
        if not para:
            continue
        start = 0
        for m in _BOUNDARY.finditer(para):
            end = m.end()
            if not _starts_sentence(para, end):
                continue
            punct = m.group(0).rstrip()
            if punct.rstrip(_CLOSERS) == "." and _is_abbreviation(para, start, m.start()):
                continue
            sent = para[start:end].strip()
            if sent:
                out.append(sent)
            start = end
        tail = para[start:].strip()
        if tail:
            out.append(tail)
    return out


# ---------------------------------------------------------------------- corpora


@dataclass
class Document:
    """A document: its name (file stem, unique in a corpus), source path and sentences."""

    name: str
    path: str
    sentences: list[str]

    @property
    def text(self) -> str:
        """The sentences joined by single spaces (the token-level model's input)."""
        return " ".join(self.sentences)


def parse_document(
    text: str, layout: str, path: str | Path = "<text>", empty_lines: str = "skip",
    notes: ReadNotes | None = None,
) -> list[str]:
    """Sentences of one file's text under ``layout`` (see the module docstring)."""
    if layout == "document":
        return split_sentences(text)
    if layout != "lines":
        raise DataError(f"layout={layout!r}: one of {', '.join(LAYOUTS)}")
    sents = []
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline does not make an empty line
    for n, line in enumerate(lines, 1):
        s = " ".join(line.split())
        if not s:
            if empty_lines == "error":
                raise DataError(f"{path}:{n}: empty line in a one-sentence-per-line file")
            if notes is not None:
                notes.empty_lines += 1
                if notes.first_empty_line is None:
                    notes.first_empty_line = f"{path}:{n}"
            continue
        sents.append(s)
    return sents


def read_corpus(
    paths: str | Sequence[str],
    layout: str = "document",
    errors: str = "strict",
    empty_files: str = "skip",
    empty_lines: str = "skip",
    notes: ReadNotes | None = None,
) -> list[Document]:
    """Read a corpus: one :class:`Document` per non-empty file, in :func:`list_text_files` order.

    Raises DataError for unreadable files, invalid UTF-8 (``errors="strict"``), empty files
    with ``empty_files="error"``, two files with the same stem (document names must be
    unique), or a corpus without any text.
    """
    if layout not in LAYOUTS:
        raise DataError(f"layout={layout!r}: one of {', '.join(LAYOUTS)}")
    notes = notes if notes is not None else ReadNotes()
    docs: list[Document] = []
    seen: dict[str, Path] = {}
    for path in list_text_files(paths):
        notes.files += 1
        text = read_text_file(path, errors, notes)
        sents = parse_document(text, layout, path, empty_lines, notes)
        if not sents:
            if empty_files == "error":
                raise DataError(f"{path}: empty file (no text)")
            notes.empty_files.append(str(path))
            continue
        name = path.stem
        if name in seen:
            raise DataError(f"{path}: document name {name!r} already used by {seen[name]}; "
                            "file stems must be unique within a corpus")
        seen[name] = path
        docs.append(Document(name, str(path), sents))
    if not docs:
        raise DataError(f"{paths}: the corpus has no text ({notes.files} file(s), all empty)")
    return docs


def read_text_items(path: str | Path, errors: str = "strict") -> list[tuple[str, str]]:
    """A Kaldi-style ``text`` file: ``<id> <text...>`` per line -> [(id, text)].

    Blank lines are skipped; a line with an id but no text, or a repeated id, is an error
    naming ``file:line``.
    """
    text = read_text_file(path, errors)
    items: list[tuple[str, str]] = []
    seen: set[str] = set()
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        parts = line.strip().split(maxsplit=1)
        if len(parts) < 2:
            raise DataError(f"{path}:{n}: expected '<id> <text>', got {line.strip()!r}")
        if parts[0] in seen:
            raise DataError(f"{path}:{n}: id {parts[0]!r} repeated")
        seen.add(parts[0])
        items.append((parts[0], parts[1]))
    if not items:
        raise DataError(f"{path}: no '<id> <text>' lines")
    return items


def read_labels(path: str | Path) -> dict[str, str]:
    """``<id> <label>`` per line (like Kaldi's utt2spk) -> {id: label}."""
    out: dict[str, str] = {}
    for n, line in enumerate(read_text_file(path).split("\n"), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise DataError(f"{path}:{n}: expected '<id> <label>', got {line.strip()!r}")
        if parts[0] in out:
            raise DataError(f"{path}:{n}: id {parts[0]!r} repeated")
        out[parts[0]] = parts[1]
    if not out:
        raise DataError(f"{path}: no labels")
    return out


def sentence_items(docs: Sequence[Document]) -> list[tuple[str, str]]:
    """One (id, sentence) per sentence, ids ``<document>-<nnnnn>`` (0-based)."""
    return [(f"{d.name}-{i:05d}", s) for d in docs for i, s in enumerate(d.sentences)]


# ---------------------------------------------------------------- token windows


class TokenStore:
    """Token sequences concatenated in one flat array (in memory, or a read-only memmap).

    ``flat``: (T,) int32 or uint16 tokens; ``starts``/``lengths``: (D,) int64 tensors.
    ``gather(seq_idx (B,), offset (B,), n) -> (B, n)`` int64 windows; ``sequence(i)``.
    Built from token lists (``TokenStore(names, seqs)``) or over existing arrays
    (:meth:`from_arrays`, e.g. a memory-mapped token cache: only the gathered windows'
    pages are read).
    """

    def __init__(self, names: Sequence[str], seqs: Sequence[Sequence[int]]) -> None:
        lengths = np.array([len(s) for s in seqs], dtype=np.int64)
        starts = np.zeros(len(lengths), dtype=np.int64)
        if len(lengths):
            starts[1:] = np.cumsum(lengths)[:-1]
        flat = np.zeros(int(lengths.sum()), dtype=np.int32)
        pos = 0
        for s in seqs:
            flat[pos : pos + len(s)] = s
            pos += len(s)
        self._set(names, flat, starts, lengths)

    @classmethod
    def from_arrays(cls, names: Sequence[str], flat: np.ndarray, starts: np.ndarray,
                    lengths: np.ndarray) -> TokenStore:
        """A store over ``flat`` (T,) (not copied; a ``np.memmap`` stays on disk) with
        sequence ``i`` = ``flat[starts[i] : starts[i] + lengths[i]]``."""
        store = cls.__new__(cls)
        store._set(names, flat, np.asarray(starts, dtype=np.int64),
                   np.asarray(lengths, dtype=np.int64))
        return store

    def _set(self, names: Sequence[str], flat: np.ndarray, starts: np.ndarray,
             lengths: np.ndarray) -> None:
        self.names = list(names)
        self.flat = flat
        self.starts = torch.from_numpy(starts)
        self.lengths = torch.from_numpy(lengths)

    @property
    def data(self) -> Tensor:
        """The flat tokens as a tensor (a copy when ``flat`` is a read-only memmap)."""
        flat = self.flat if self.flat.flags.writeable else np.array(self.flat)
        return torch.from_numpy(flat)

    @property
    def total_tokens(self) -> int:
        return int(self.lengths.sum())

    def gather(self, seq_idx: Tensor, offset: Tensor, n: int) -> Tensor:
        idx = (self.starts[seq_idx] + offset).unsqueeze(1) + torch.arange(n)
        return torch.from_numpy(self.flat[idx.numpy()].astype(np.int64))

    def sequence(self, i: int) -> Tensor:
        s, n = int(self.starts[i]), int(self.lengths[i])
        return torch.from_numpy(self.flat[s : s + n].astype(np.int64))


class SentenceStore:
    """Documents as sequences of tokenised sentences.

    ``lengths``: (D,) sentences per document. ``gather(doc_idx (B,), offset (B,), n)``
    returns ``tokens`` (B, n, L) int64 zero-padded, and ``token_lengths`` (B, n), with L the
    longest of the gathered sentences.

    ``variants``: further segmentations of the same documents (subword regularisation),
    each shaped like ``docs``; ``gather(..., variant=(B, n) ints)`` then picks segmentation
    ``variant`` of each sentence (0 = ``docs``). ``n_variants`` counts them all.

    Built from token lists, or over a flat token array and a sentence offsets array
    (:meth:`from_arrays`, e.g. a memory-mapped token cache). ``sent_store`` (a
    :class:`TokenStore` with one sequence per sentence) exists for the former only.
    """

    def __init__(self, names: Sequence[str], docs: Sequence[Sequence[Sequence[int]]],
                 variants: Sequence[Sequence[Sequence[Sequence[int]]]] = ()) -> None:
        self.names = list(names)
        self.lengths = torch.tensor([len(d) for d in docs], dtype=torch.long)
        self.doc_start = torch.zeros(len(docs), dtype=torch.long)
        if len(docs):
            self.doc_start[1:] = torch.cumsum(self.lengths, 0)[:-1]
        sents = [s for d in docs for s in d]
        self.n_sentences = len(sents)
        for v in variants:
            alt = [s for d in v for s in d]
            if len(alt) != self.n_sentences:
                raise ValueError(f"a segmentation variant has {len(alt)} sentences, "
                                 f"expected {self.n_sentences}")
            sents.extend(alt)
        self.n_variants = 1 + len(variants)
        self.sent_store: TokenStore | None = TokenStore(
            [str(i) for i in range(len(sents))], sents)
        self.flat = self.sent_store.flat
        self.sent_offsets = np.zeros(len(sents) + 1, dtype=np.int64)
        self.sent_offsets[1:] = np.cumsum(self.sent_store.lengths.numpy())
        self.max_tokens: int | None = None

    @classmethod
    def from_arrays(cls, names: Sequence[str], flat: np.ndarray, sent_offsets: np.ndarray,
                    doc_start: np.ndarray, doc_sentences: np.ndarray,
                    max_tokens: int | None = None) -> SentenceStore:
        """Sentence ``j`` is ``flat[sent_offsets[j] : sent_offsets[j + 1]]`` cut to
        ``max_tokens``; document ``i`` is sentences ``doc_start[i]`` ..
        ``doc_start[i] + doc_sentences[i] - 1``. ``flat`` (T,) and ``sent_offsets`` (S + 1,)
        are used as given (memmaps stay on disk); one segmentation only."""
        store = cls.__new__(cls)
        store.names = list(names)
        store.lengths = torch.from_numpy(np.asarray(doc_sentences, dtype=np.int64))
        store.doc_start = torch.from_numpy(np.asarray(doc_start, dtype=np.int64))
        store.n_sentences = len(sent_offsets) - 1
        store.n_variants = 1
        store.sent_store = None
        store.flat, store.sent_offsets, store.max_tokens = flat, sent_offsets, max_tokens
        return store

    @property
    def total_sentences(self) -> int:
        return int(self.lengths.sum())

    def gather(self, doc_idx: Tensor, offset: Tensor, n: int, variant: Tensor | None = None,
               positions: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Sentences ``offset .. offset + n - 1`` of each document ``doc_idx`` (B,), or,
        with ``positions`` (B, n), sentences ``positions`` of each (``offset`` unused)."""
        if positions is None:
            positions = offset.unsqueeze(1) + torch.arange(n)
        sid = self.doc_start[doc_idx].unsqueeze(1) + positions  # (B, n)
        if variant is not None:
            sid = sid + variant * self.n_sentences
        sid_np = sid.numpy()
        start = np.asarray(self.sent_offsets[sid_np], dtype=np.int64)
        tl = np.asarray(self.sent_offsets[sid_np + 1], dtype=np.int64) - start  # (B, n)
        if self.max_tokens is not None:
            tl = np.minimum(tl, self.max_tokens)
        width = max(1, int(tl.max()))
        pos = np.arange(width)
        valid = pos < tl[..., None]  # (B, n, L)
        idx = np.where(valid, start[..., None] + pos, 0)
        toks = self.flat[idx].astype(np.int64) * valid
        return torch.from_numpy(toks), torch.from_numpy(tl)


def sample_positions(lengths: Tensor, n: int, generator: torch.Generator) -> Tensor:
    """``n`` distinct positions drawn uniformly from ``0 .. lengths[b] - 1`` for each row,
    in random order: (B,) -> (B, n) int64. Every length must be at least ``n``. Draws
    B x (longest length) uniform keys and sorts them: cheap for documents of up to some
    ten thousand sentences (a fortune collection, a book); split longer ones."""
    if len(lengths) and int(lengths.min()) < n:
        raise ValueError(f"a document has {int(lengths.min())} sentences, fewer than {n}")
    width = int(lengths.max()) if len(lengths) else n
    keys = torch.rand(len(lengths), width, generator=generator)
    keys[torch.arange(width) >= lengths.unsqueeze(1)] = 2.0  # past the end: never drawn
    return keys.argsort(dim=1)[:, :n]


def pad_sequences(seqs: Sequence[Sequence[int]]) -> tuple[Tensor, Tensor]:
    """Zero-pad token lists: -> (B, N) int64 ids, (B,) lengths."""
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    out = torch.zeros(len(seqs), max(1, int(lengths.max()) if len(seqs) else 1), dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.as_tensor(list(s), dtype=torch.long)
    return out, lengths


def pad_sentence_docs(docs: Sequence[Sequence[Sequence[int]]]) -> tuple[Tensor, Tensor, Tensor]:
    """Documents of tokenised sentences -> tokens (B, S, L), token_lengths (B, S),
    sentence counts (B,); everything zero-padded."""
    n_sent = torch.tensor([len(d) for d in docs], dtype=torch.long)
    s_max = max(1, int(n_sent.max()) if len(docs) else 1)
    l_max = max([1] + [len(s) for d in docs for s in d])
    toks = torch.zeros(len(docs), s_max, l_max, dtype=torch.long)
    tl = torch.zeros(len(docs), s_max, dtype=torch.long)
    for i, d in enumerate(docs):
        for j, s in enumerate(d):
            toks[i, j, : len(s)] = torch.as_tensor(list(s), dtype=torch.long)
            tl[i, j] = len(s)
    return toks, tl, n_sent


def keep_long_enough(
    names: Sequence[str], lengths: Sequence[int], window: int, short: str, what: str,
    notes: ReadNotes | None = None,
) -> list[int]:
    """Indices of sequences with at least ``window`` items; shorter ones raise (``short=
    "error"``) or are skipped and recorded in ``notes`` (``short="skip"``)."""
    keep = []
    for i, (name, n) in enumerate(zip(names, lengths)):
        if n >= window:
            keep.append(i)
            continue
        if short == "error":
            raise DataError(
                f"document {name}: {n} {what}, shorter than the training window of {window}; "
                "set data.short_documents=skip to leave such documents out, or use a "
                "shorter data.window"
            )
        if notes is not None:
            notes.short_documents.append(name)
    if not keep:
        raise DataError(f"no document has at least {window} {what} (data.window)")
    return keep
