"""Tokenisers for text CPC: bytes, characters, and a sentencepiece subword model.

Every tokeniser maps a string to a list of ids in ``[1, vocab_size)``; id 0 is padding
(``PAD_ID``) and is never produced by ``encode``. Each one is fully described by
``state()``, a dict of plain data and tensors that is stored in the checkpoint (loadable
with ``torch.load(weights_only=True)``) and turned back into a tokeniser by
:func:`tokenizer_from_state`:

``bytes``
    UTF-8 bytes, id = byte + 1 (vocab 257). No training, no unknown symbols; ``decode``
    replaces invalid byte sequences with U+FFFD.
``chars``
    Unicode characters seen at least ``min_count`` times in the training text (at most
    ``max_chars``, most frequent first, ties in code-point order); others map to the
    unknown id 1. The character list is stored in the state.
``sentencepiece``
    A unigram or BPE model trained on the corpus with the ``sentencepiece`` package
    (pad id 0, unk id 1, no BOS/EOS). The serialised model proto is stored in the state as
    a uint8 tensor, so a checkpoint is self-contained; ``save_model`` also writes it as a
    ``.model`` file for use with other tools.
"""

from __future__ import annotations

import io
import typing
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import torch

from cpc_seq.config import check, check_literals
from cpc_seq.errors import CheckpointError, ConfigError

PAD_ID = 0
UNK_ID = 1
TokenizerKind = Literal["bytes", "chars", "sentencepiece"]
TOKENIZERS = typing.get_args(TokenizerKind)


@dataclass
class TokenizerConfig:
    """How to build the tokeniser (stored in the checkpoint config).

    ``vocab_size``: sentencepiece vocabulary (including pad and unk). ``model_type``:
    ``unigram`` or ``bpe``. ``max_chars``/``min_count``: the ``chars`` vocabulary.
    ``train_sentences``: at most this many sentences (evenly spaced over the corpus) are
    used to train sentencepiece / count characters (0 = all).
    """

    kind: TokenizerKind = "bytes"
    vocab_size: int = 4000
    model_type: Literal["unigram", "bpe"] = "unigram"
    character_coverage: float = 1.0
    max_chars: int = 1000
    min_count: int = 1
    train_sentences: int = 200000

    def validate(self) -> None:
        check_literals(self, "tokenizer.")
        check(self.vocab_size >= 8, "tokenizer.vocab_size", "must be at least 8")
        check(0.0 < self.character_coverage <= 1.0, "tokenizer.character_coverage",
              "must be in (0, 1]")
        check(self.max_chars > 0, "tokenizer.max_chars", "must be positive")
        check(self.min_count > 0, "tokenizer.min_count", "must be positive")
        check(self.train_sentences >= 0, "tokenizer.train_sentences", "must be >= 0 (0 = all)")


class Tokenizer(Protocol):
    """What the models and data pipeline need from a tokeniser."""

    kind: str
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def state(self) -> dict[str, Any]: ...


class ByteTokenizer:
    """UTF-8 bytes; id = byte + 1 (0 is padding). ``vocab_size`` = 257."""

    kind = "bytes"
    vocab_size = 257

    def encode(self, text: str) -> list[int]:
        """String -> ids (one per UTF-8 byte)."""
        return [b + 1 for b in text.encode("utf-8")]

    def decode(self, ids: Sequence[int]) -> str:
        """Ids -> string; padding is dropped, invalid UTF-8 becomes U+FFFD."""
        return bytes(int(i) - 1 for i in ids if 0 < int(i) < 257).decode("utf-8", errors="replace")

    def state(self) -> dict[str, Any]:
        return {"kind": "bytes"}


class CharTokenizer:
    """Characters from a fixed list; id 0 padding, 1 unknown, then ``chars`` in order."""

    kind = "chars"

    def __init__(self, chars: Sequence[str]) -> None:
        self.chars = list(chars)
        if len(set(self.chars)) != len(self.chars) or any(len(c) != 1 for c in self.chars):
            raise ConfigError("chars tokenizer: the character list must hold distinct characters")
        self.index = {c: i + 2 for i, c in enumerate(self.chars)}
        self.vocab_size = len(self.chars) + 2

    @classmethod
    def train(cls, texts: Iterable[str], max_chars: int = 1000, min_count: int = 1) -> CharTokenizer:
        """Vocabulary of the most frequent characters of ``texts``."""
        counts: Counter[str] = Counter()
        for t in texts:
            counts.update(t)
        items = sorted(((c, n) for c, n in counts.items() if n >= min_count),
                       key=lambda cn: (-cn[1], ord(cn[0])))
        return cls([c for c, _ in items[:max_chars]])

    def encode(self, text: str) -> list[int]:
        return [self.index.get(c, UNK_ID) for c in text]

    def decode(self, ids: Sequence[int]) -> str:
        """Unknown ids decode to U+FFFD; padding is dropped."""
        out = []
        for i in ids:
            i = int(i)
            if i == PAD_ID:
                continue
            out.append(self.chars[i - 2] if 2 <= i < self.vocab_size else "\ufffd")
        return "".join(out)

    def state(self) -> dict[str, Any]:
        return {"kind": "chars", "chars": list(self.chars)}


class SentencePieceTokenizer:
    """A sentencepiece model held as its serialised proto (pad 0, unk 1, no BOS/EOS)."""

    kind = "sentencepiece"

    def __init__(self, model_proto: bytes) -> None:
        try:
            import sentencepiece as spm
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ConfigError("tokenizer.kind=sentencepiece needs the 'sentencepiece' package "
                              "(pip install sentencepiece, or the [text] extra)") from e
        self.model_proto = bytes(model_proto)
        self.sp = spm.SentencePieceProcessor()
        try:
            self.sp.LoadFromSerializedProto(self.model_proto)
        except (RuntimeError, OSError) as e:
            raise CheckpointError(f"sentencepiece model cannot be loaded ({e})") from None
        if self.sp.pad_id() != PAD_ID:
            raise CheckpointError(f"sentencepiece model has pad id {self.sp.pad_id()}, expected 0")
        self.vocab_size = int(self.sp.get_piece_size())

    @classmethod
    def train(
        cls, texts: Iterable[str], vocab_size: int = 4000, model_type: str = "unigram",
        character_coverage: float = 1.0, seed: int = 0,
    ) -> SentencePieceTokenizer:
        """Train on an iterable of sentences (in memory; no files written).

        Raises ConfigError when the text cannot support ``vocab_size`` pieces.
        """
        import sentencepiece as spm

        buf = io.BytesIO()
        texts = [t for t in texts if t.strip()]
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(texts), model_writer=buf, vocab_size=vocab_size,
                model_type=model_type, character_coverage=character_coverage,
                pad_id=PAD_ID, unk_id=UNK_ID, bos_id=-1, eos_id=-1,
                input_sentence_size=0, shuffle_input_sentence=False, num_threads=1,
                minloglevel=2, max_sentence_length=1 << 16,
                hard_vocab_limit=True,
            )
        except RuntimeError as e:
            raise ConfigError(f"tokenizer: sentencepiece training failed ({e}); "
                              "try a smaller tokenizer.vocab_size") from None
        return cls(buf.getvalue())

    def encode(self, text: str) -> list[int]:
        return list(self.sp.encode(text, out_type=int))

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Many strings at once (faster than ``encode`` in a loop)."""
        return [list(x) for x in self.sp.encode(texts, out_type=int)]

    def encode_sampled(self, texts: list[str], alpha: float = 0.1, nbest_size: int = -1,
                       seed: int | None = None) -> list[list[int]]:
        """Subword regularisation: one segmentation per string sampled from the model's
        lattice (``alpha``: smoothing, smaller = more varied; ``nbest_size=-1``: sample
        from all segmentations). With ``seed`` the draw is reproducible (sentencepiece's
        generator seeded, one thread); for training only (extraction uses
        :meth:`encode_batch`)."""
        if not 0.0 < alpha <= 1.0:
            raise ConfigError(f"subword sampling alpha {alpha}: must be in (0, 1]")
        extra: dict[str, Any] = {}
        if seed is not None:
            import sentencepiece as spm

            spm.set_random_generator_seed(seed)
            extra["num_threads"] = 1
        return [list(x) for x in self.sp.encode(texts, out_type=int, enable_sampling=True,
                                                  alpha=alpha, nbest_size=nbest_size, **extra)]

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.sp.decode([int(i) for i in ids if int(i) != PAD_ID]))

    def state(self) -> dict[str, Any]:
        proto = torch.frombuffer(bytearray(self.model_proto), dtype=torch.uint8).clone()
        return {"kind": "sentencepiece", "model_proto": proto}

    def save_model(self, path: str | Path) -> None:
        """Write the ``.model`` file (the same bytes as in the checkpoint)."""
        from cpc_seq.io.atomic import atomic_write

        with atomic_write(path) as f:
            f.write(self.model_proto)


def encode_many(tok: Tokenizer, texts: list[str]) -> list[list[int]]:
    """``[tok.encode(t) for t in texts]``, batched when the tokeniser supports it."""
    batch = getattr(tok, "encode_batch", None)
    if batch is not None and texts:
        return batch(texts)
    return [tok.encode(t) for t in texts]


def train_tokenizer(cfg: TokenizerConfig, texts: Sequence[str], seed: int = 0) -> Tokenizer:
    """Build the configured tokeniser, training it on ``texts`` (sentences) when needed."""
    if cfg.kind == "bytes":
        return ByteTokenizer()
    if cfg.train_sentences and len(texts) > cfg.train_sentences:
        step = len(texts) / cfg.train_sentences
        texts = [texts[int(i * step)] for i in range(cfg.train_sentences)]
    if cfg.kind == "chars":
        return CharTokenizer.train(texts, cfg.max_chars, cfg.min_count)
    return SentencePieceTokenizer.train(texts, cfg.vocab_size, cfg.model_type,
                                        cfg.character_coverage, seed)


def tokenizer_from_state(state: dict[str, Any]) -> Tokenizer:
    """Rebuild a tokeniser from its ``state()`` (as stored in a checkpoint)."""
    kind = state.get("kind") if isinstance(state, dict) else None
    if kind == "bytes":
        return ByteTokenizer()
    if kind == "chars":
        return CharTokenizer(state["chars"])
    if kind == "sentencepiece":
        proto = state.get("model_proto")
        if not isinstance(proto, torch.Tensor) or proto.dtype != torch.uint8:
            raise CheckpointError("sentencepiece tokenizer state lacks its uint8 model_proto")
        return SentencePieceTokenizer(proto.cpu().numpy().tobytes())
    raise CheckpointError(f"unknown tokenizer state {kind!r}; one of {', '.join(TOKENIZERS)}")
