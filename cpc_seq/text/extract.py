"""Features from a text CPC checkpoint: a Python API and ark/scp/npy extraction.

>>> from cpc_seq.text.extract import load_text
>>> m = load_text("exp/text/sent/last.pt")                       # doctest: +SKIP
>>> out = m.extract_features(["In the beginning. God said.", "Amen."])
>>> out["hidden_states"]   # [z (B, T, D_z), c (B, T, D_c)], zero after out["lengths"]

Frames: for a token-level model each string gives ``T = ceil(N / S)`` frames for its N
tokens (S = ``downsample_rate`` tokens per frame, frame t = tokens [S t, S (t+1)));
for a sentence-level model each string is split into sentences
(:func:`cpc_seq.text.data.split_sentences`, or kept whole with ``split_sentences=False``)
and gives one frame per sentence: z is that sentence's embedding (computed from the
sentence alone), c summarises it and the earlier sentences of the same string.

Extraction to files (:func:`extract_text_to`) writes one matrix per item: (T, D) frames
of layer ``z`` or ``c``, or (1, D) with ``pool`` = ``mean``/``max`` over the frames,
through :class:`cpc_seq.io.features.FeatureWriter` (crash-safe ark/scp, npy).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from cpc_seq.config import from_dict
from cpc_seq.errors import CheckpointError, ConfigError, DataError
from cpc_seq.io.checkpoint import load_checkpoint
from cpc_seq.io.features import FeatureWriter, length_batches
from cpc_seq.text.data import pad_sentence_docs, pad_sequences
from cpc_seq.text.data import split_sentences as _split
from cpc_seq.text.models import SentenceCPC, TextModelConfig, TokenCPC, build_text_model
from cpc_seq.text.tokenizers import Tokenizer, encode_many, tokenizer_from_state

TEXT_KINDS = ("text_token", "text_sentence")
POOLINGS = ("none", "mean", "max")


def text_model_from_state(
    state: dict[str, Any], path: str | Path, random_init: bool = False, seed: int = 0,
) -> tuple[TokenCPC | SentenceCPC, Tokenizer, dict[str, Any]]:
    """(model in eval mode, tokeniser, config dict) of a loaded text checkpoint.

    ``random_init``: the same architecture and tokeniser with random weights drawn from
    ``seed`` (the untrained-encoder baseline); the caller's global RNG is left as it was.
    """
    if "tokenizer" not in state:
        raise CheckpointError(f"{path}: text checkpoint lacks its tokenizer")
    try:
        mcfg = from_dict(TextModelConfig, state["config"]["model"], prefix="model.")
    except (ConfigError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: bad model config in checkpoint ({e})") from None
    tok = tokenizer_from_state(state["tokenizer"])
    if tok.vocab_size != mcfg.vocab_size:
        raise CheckpointError(f"{path}: tokenizer has {tok.vocab_size} ids but the model "
                              f"{mcfg.vocab_size}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_text_model(mcfg)
    if not random_init:
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as e:
            raise CheckpointError(f"{path}: weights do not fit the stored config ({e})") from None
    return model.eval(), tok, state["config"]


def _zero_after(x: Tensor, lengths: Tensor) -> Tensor:
    mask = torch.arange(x.shape[1], device=x.device).unsqueeze(0) < lengths.unsqueeze(1)
    return x * mask.unsqueeze(-1).to(x.dtype)


def pool_frames(x: Tensor, lengths: Tensor, how: str) -> Tensor:
    """(B, T, D) frames, (B,) valid counts -> (B, D) mean or max over the valid frames."""
    if how == "mean":
        return _zero_after(x, lengths).sum(1) / lengths.clamp_min(1).unsqueeze(1).to(x.dtype)
    if how == "max":
        mask = torch.arange(x.shape[1], device=x.device).unsqueeze(0) < lengths.unsqueeze(1)
        return x.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(1)
    raise ConfigError(f"pool {how!r}: one of mean, max")


class TextUpstream(nn.Module):
    """A loaded text CPC model (token or sentence level) with ``extract_features``."""

    def __init__(
        self, model: TokenCPC | SentenceCPC, tokenizer: Tokenizer,
        config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.config = config or {}
        self.level = model.level
        self.downsample_rate = model.downsample_rate
        self.hidden_state_names = ["z", "c"]

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _encode(self, texts: list[str]) -> list[list[int]]:
        ids = encode_many(self.tokenizer, texts)
        for i, s in enumerate(ids):
            if not s:
                raise DataError(f"text item {i} is empty (no tokens): {texts[i]!r}")
        return ids

    @torch.no_grad()
    def extract_features(self, texts: list[str], split_sentences: bool = True) -> dict[str, Any]:
        """Features of a batch of strings.

        Returns ``{"hidden_states": [z (B, T, D_z), c (B, T, D_c)], "last_hidden_state": c,
        "lengths": (B,) valid frames, "names": ["z", "c"], "downsample_rate": tokens per
        frame (token level) or 1 (sentence level; a frame is a sentence), "level",
        "token_lengths"}`` with everything past ``lengths`` zero; ``token_lengths`` is (B,)
        tokens per string (token level) or (B, T) tokens per sentence (sentence level).
        Empty strings raise DataError.
        """
        if isinstance(texts, (str, bytes)):
            raise DataError("extract_features takes a list of strings, not one string")
        texts = list(texts)
        if not texts:
            raise DataError("extract_features: no texts")
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise DataError(f"text item {i}: expected a string, got {type(t).__name__}")
        dev = self.device
        if self.level == "token":
            toks, tok_lens = pad_sequences(self._encode(texts))
            out = self.model(toks.to(dev), tok_lens.to(dev))
        else:
            docs_text = []
            for i, t in enumerate(texts):
                sents = _split(t) if split_sentences else [" ".join(t.split())]
                sents = [s for s in sents if s]
                if not sents:
                    raise DataError(f"text item {i} is empty (no sentences): {t!r}")
                docs_text.append(sents)
            flat = self._encode([s for d in docs_text for s in d])
            docs, pos = [], 0
            for d in docs_text:
                docs.append(flat[pos : pos + len(d)])
                pos += len(d)
            toks, tok_lens, n_sent = pad_sentence_docs(docs)
            out = self.model(toks.to(dev), tok_lens.to(dev), n_sent.to(dev))
        lengths = out.lengths
        z = _zero_after(out.z.float(), lengths).cpu()
        c = _zero_after(out.c.float(), lengths).cpu()
        return {
            "hidden_states": [z, c],
            "last_hidden_state": c,
            "lengths": lengths.cpu(),
            "names": list(self.hidden_state_names),
            "downsample_rate": self.downsample_rate,
            "level": self.level,
            "token_lengths": tok_lens,
        }

    @torch.no_grad()
    def embed(self, texts: list[str], layer: str = "z", pool: str = "mean",
              split_sentences: bool = True) -> Tensor:
        """One vector per string: (B, D), ``layer`` pooled over its frames."""
        out = self.extract_features(texts, split_sentences=split_sentences)
        x = out["hidden_states"][self.hidden_state_names.index(layer)]
        return pool_frames(x, out["lengths"], pool)

    def forward(self, texts: list[str]) -> dict[str, Any]:
        return self.extract_features(texts)


def load_text(ckpt: str | Path, random_init: bool = False, device: str = "cpu",
              seed: int = 0) -> TextUpstream:
    """Load a text CPC checkpoint (``torch.load(weights_only=True)``) as a TextUpstream."""
    state = load_checkpoint(ckpt, map_location=device, kinds=TEXT_KINDS,
                            purpose="text extraction")
    model, tok, cfg = text_model_from_state(state, ckpt, random_init=random_init, seed=seed)
    return TextUpstream(model.to(device), tok, cfg)


def extract_text_to(
    upstream: TextUpstream,
    items: list[tuple[str, str]],
    wspec: str,
    layer: str = "c",
    pool: str = "none",
    split_sentences: bool = True,
    skip_existing: bool = False,
    max_batch_chars: int = 200_000,
    num_frames_path: str | Path | None = None,
    progress: bool = True,
    desc: str = "extract",
) -> dict[str, int]:
    """Write features of ``items`` ([(id, text)]) to ``wspec`` (ark,scp / ark / npy).

    Each item gives a (T, D) matrix of ``layer`` (``z`` or ``c``), or (1, D) with ``pool``
    = mean/max. Items are batched by length (at most ``max_batch_chars`` padded characters
    per batch); batching does not change the features. Returns {id: rows} written.

    Memory is bounded by ``max_batch_chars``: an item longer than that is refused, before
    any work, with a message naming it (split it into lines or sentences, or raise
    ``--batch-chars``); it is not cut, since cutting would change its features. The
    outputs are checked before any work too (:func:`~cpc_seq.io.features.check_outputs`).
    """
    from cpc_seq.io.features import check_outputs, write_num_frames

    if layer not in upstream.hidden_state_names:
        raise ConfigError(f"--layer {layer!r}: one of {', '.join(upstream.hidden_state_names)}")
    if pool not in POOLINGS:
        raise ConfigError(f"--pool {pool!r}: one of {', '.join(POOLINGS)}")
    ids = [i for i, _ in items]
    if len(set(ids)) != len(ids):
        raise DataError("item ids are not unique")
    text_of = dict(items)
    if max_batch_chars < 1:
        raise ConfigError(f"--batch-chars must be >= 1, got {max_batch_chars}")
    too_long = []
    for key, text in items:
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"item {key}: empty text")
        if len(text) > max_batch_chars:
            too_long.append(key)
    if too_long:
        key = max(too_long, key=lambda k: len(text_of[k]))
        raise DataError(
            f"item {key}: {len(text_of[key])} characters, more than --batch-chars "
            f"{max_batch_chars} ({len(too_long)} such items); memory grows with the longest "
            "item, so split long items (one line or sentence per item) or raise --batch-chars")
    spec = check_outputs(wspec, num_frames_path, ids=ids, what="item")
    writer = FeatureWriter(spec, resume=skip_existing)
    todo = {k: len(text_of[k]) for k in ids if k not in writer.done}
    rows: dict[str, int] = {}
    complete = False
    li = upstream.hidden_state_names.index(layer)
    bar = tqdm(total=len(ids), initial=len(ids) - len(todo), desc=desc, unit="item",
               disable=not progress)
    try:
        for batch in length_batches(todo, max_batch_chars):
            out = upstream.extract_features([text_of[k] for k in batch],
                                            split_sentences=split_sentences)
            x, lengths = out["hidden_states"][li], out["lengths"]
            if pool != "none":
                pooled = pool_frames(x, lengths, pool)
            entries = []
            for j, key in enumerate(batch):
                arr = pooled[j : j + 1] if pool != "none" else x[j, : int(lengths[j])]
                entries.append((key, arr.numpy().astype(np.float32)))
                rows[key] = arr.shape[0]
            writer.write_batch(entries)
            bar.update(len(batch))
        complete = True
    finally:
        bar.close()
        writer.close(complete=complete)
    if num_frames_path is not None and complete:
        write_num_frames(num_frames_path, writer, rows)
    return rows
