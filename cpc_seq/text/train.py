"""Text CPC (token or sentence level) as a task of the training engine.

``cpc-seq text train --config recipes/text/conf/sentence.yaml [key=value ...]``

Windows from a deterministic per-epoch plan -> model -> k-step InfoNCE
(:func:`cpc_seq.losses.kstep_infonce`, any negative mode). Everything else (optimiser,
schedule, precision, DDP, logging, checkpoints, resume) is the engine's
(:mod:`cpc_seq.engine.trainer`). Checkpoints also carry the tokeniser (a sentencepiece
model as a uint8 tensor).

Windows: token level, ``data.window`` consecutive tokens of one document; sentence level,
``data.window`` consecutive sentences of one document (``data.sentence_order=shuffled``:
that many distinct sentences of it drawn at random, in random order), each cut to
``data.max_sentence_tokens`` tokens.

Layout of ``train.out_dir``: ``config.yaml``, ``last.pt``, ``best.pt`` (with a dev set),
``tokenizer.model`` (sentencepiece only, the same bytes as in the checkpoint), ``tb/``,
``log.jsonl``, and ``token_cache/`` when a corpus directory cannot hold its own cache.

Corpora are tokenised once into memory-mapped caches (:mod:`cpc_seq.text.token_cache`,
``docs/text.md``): a restart or resume reads no corpus text, and memory does not grow
with the corpus.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn
from tqdm import tqdm

from cpc_seq.config import check, check_literals, to_dict
from cpc_seq.config import load_config as load_config_as
from cpc_seq.engine.config import OptimConfig, RunConfig
from cpc_seq.engine.trainer import Context, Engine, StepOutput
from cpc_seq.engine.windows import PlanBatches, WindowSampler
from cpc_seq.errors import ConfigError
from cpc_seq.losses.config import LossConfig
from cpc_seq.tasks.kstep import KStepTask
from cpc_seq.text.data import (
    Document,
    EncodingErrors,
    Layout,
    ReadNotes,
    SentenceStore,
    TokenStore,
    keep_long_enough,
    list_text_files,
    read_corpus,
    sample_positions,
)
from cpc_seq.text.models import SentenceCPC, TextModelConfig, TokenCPC, build_text_model
from cpc_seq.text.token_cache import (
    ReadOptions,
    cache_roots,
    get_token_cache,
    get_tokenizer,
    open_store,
)
from cpc_seq.text.tokenizers import (
    Tokenizer,
    TokenizerConfig,
    encode_many,
    tokenizer_from_state,
    train_tokenizer,
)

KIND = {"token": "text_token", "sentence": "text_sentence"}


@dataclass
class TextDataConfig:
    """Text corpora and windows.

    ``train``/``dev``: files, directories (all ``*.txt`` below) or globs, one or a list
    (``dev`` optional). ``layout``: ``document`` (running text) or ``lines`` (one sentence
    per line). ``window``: tokens (token level) or sentences (sentence level) per training
    window. ``short_documents``: ``error`` or ``skip`` for documents shorter than a window.
    ``subword_samples`` (sentence level, sentencepiece): subword regularisation (Kudo
    2018): besides the best segmentation, this many segmentations of every training
    sentence sampled from the tokeniser's lattice (smoothing ``subword_alpha``: smaller =
    more varied) are stored, and each sentence of a training batch takes one of them at
    random (seeded; its generator state is in the checkpoint, so a resume continues the
    same draws). 0 = off. Dev windows and extraction always use the best segmentation.
    ``sentence_order`` (sentence level): ``file`` = a training window is ``window``
    consecutive sentences of a document; ``shuffled`` = ``window`` distinct sentences of
    one document drawn at random, in random order, afresh for every window (seeded; the
    generator state is in the checkpoint). For documents that are collections of
    independent items (one fortune or quotation per line), whose order in the file
    carries nothing to predict and is otherwise memorised; what is left to predict is
    what the items of one document share. Dev windows keep the file's order.
    ``token_cache``: tokenise each corpus once into a memory-mapped cache that every
    later run, rank and resume reuses (:mod:`cpc_seq.text.token_cache`; beside the corpus,
    or in ``train.out_dir/token_cache`` when the corpus directory is read-only);
    ``token_cache_dir`` puts it elsewhere. ``false``, and ``subword_samples`` > 0, read and
    tokenise the whole corpus into memory at every start instead.
    """

    train: list[str] | str = "data/text/kjv/train"
    dev: list[str] | str | None = None
    layout: Layout = "document"
    encoding_errors: EncodingErrors = "strict"
    empty_files: Literal["skip", "error"] = "skip"
    empty_lines: Literal["skip", "error"] = "skip"
    window: int = 128
    max_sentence_tokens: int = 64
    batch_size: int = 32
    short_documents: Literal["error", "skip"] = "error"
    subword_samples: int = 0
    subword_alpha: float = 0.1
    sentence_order: Literal["file", "shuffled"] = "file"
    token_cache: bool = True
    token_cache_dir: str | None = None

    def validate(self) -> None:
        check_literals(self, "data.")
        check(self.window > 0, "data.window", "must be positive")
        check(self.max_sentence_tokens > 0, "data.max_sentence_tokens", "must be positive")
        check(self.batch_size > 0, "data.batch_size", "must be positive")
        check(self.subword_samples >= 0, "data.subword_samples", "must be >= 0 (0 = off)")
        check(0.0 < self.subword_alpha <= 1.0, "data.subword_alpha", "must be in (0, 1]")


@dataclass
class TextRunConfig(RunConfig):
    """:class:`cpc_seq.engine.config.RunConfig` with the text default ``out_dir``."""

    out_dir: str = "exp/text/cpc"


@dataclass
class TextExperimentConfig:
    """Everything a text run needs, as plain data; stored in every checkpoint."""

    model: TextModelConfig = field(default_factory=TextModelConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    data: TextDataConfig = field(default_factory=TextDataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TextRunConfig = field(default_factory=TextRunConfig)

    def validate(self) -> None:
        check(self.loss.kind != "cotrain", "loss.kind",
              "cotrain is for audio only (infonce or acpc here)")
        ahead = self.loss.frames_ahead(self.model.n_steps)
        if self.model.level == "token":
            frames = -(-self.data.window // self.model.stride)
            check(frames > ahead, "data.window",
                  f"{self.data.window} tokens give {frames} frames of {self.model.stride} "
                  f"tokens, too few for {ahead} prediction steps (need at least "
                  f"{(ahead + 1) * self.model.stride} tokens)")
        else:
            check(self.data.window > ahead, "data.window",
                  f"{self.data.window} sentences are too few for {ahead} "
                  f"prediction steps (need at least {ahead + 1})")
        if self.data.sentence_order == "shuffled":
            check(self.model.level == "sentence", "data.sentence_order",
                  "shuffled needs model.level=sentence")
        if self.data.subword_samples:
            check(self.model.level == "sentence" and self.tokenizer.kind == "sentencepiece",
                  "data.subword_samples", "needs model.level=sentence and "
                  "tokenizer.kind=sentencepiece (sampled segmentations)")


def load_text_config(
    path: str | Path | None, overrides: list[str] | None = None
) -> TextExperimentConfig:
    """YAML file (optional) + ``key=value`` overrides -> validated config."""
    return load_config_as(TextExperimentConfig, path, overrides)


def read_options(cfg: TextDataConfig) -> ReadOptions:
    """How ``cfg`` says corpus files are read."""
    return ReadOptions(cfg.layout, cfg.encoding_errors, cfg.empty_files, cfg.empty_lines)


def _corpus(paths: list[str] | str, cfg: TextDataConfig, notes: ReadNotes) -> list[Document]:
    return read_corpus(paths, cfg.layout, cfg.encoding_errors, cfg.empty_files,
                       cfg.empty_lines, notes)


def build_store(
    docs: list[Document], tok: Tokenizer, level: str, cfg: TextDataConfig, short: str,
    notes: ReadNotes, sample_seed: int | None = None,
) -> TokenStore | SentenceStore:
    """Tokenise documents into the store of ``level``, leaving out (or refusing, with
    ``short="error"``) documents shorter than ``cfg.window``. With ``sample_seed`` and
    ``cfg.subword_samples`` the sentence store also holds that many sampled segmentations
    (drawn reproducibly from ``sample_seed``)."""
    if level == "token":
        seqs = encode_many(tok, [d.text for d in docs])
        keep = keep_long_enough([d.name for d in docs], [len(s) for s in seqs], cfg.window,
                                short, "tokens", notes)
        return TokenStore([docs[i].name for i in keep], [seqs[i] for i in keep])
    keep = keep_long_enough([d.name for d in docs], [len(d.sentences) for d in docs],
                            cfg.window, short, "sentences", notes)
    texts = [s for i in keep for s in docs[i].sentences]

    def per_doc(flat: list[list[int]], count: bool) -> list[list[list[int]]]:
        out, pos = [], 0
        for i in keep:
            n = len(docs[i].sentences)
            sents = []
            for s in flat[pos : pos + n]:
                if len(s) > cfg.max_sentence_tokens:
                    notes.truncated_sentences += int(count)
                    s = s[: cfg.max_sentence_tokens]
                sents.append(s)
            out.append(sents)
            pos += n
        return out

    variants = []
    if sample_seed is not None and cfg.subword_samples:
        sampler = getattr(tok, "encode_sampled", None)
        if sampler is None:
            raise ConfigError("data.subword_samples needs a sentencepiece tokenizer")
        for v in range(cfg.subword_samples):
            variants.append(per_doc(sampler(texts, cfg.subword_alpha, seed=sample_seed + v),
                                    False))
    return SentenceStore([docs[i].name for i in keep], per_doc(encode_many(tok, texts), True),
                         variants)


class _TextStep(nn.Module):
    """Forward used for training (what DDP wraps): a batch -> (z as the loss scores it
    (``model.score``), lengths, predictions)."""

    def __init__(self, model: TokenCPC | SentenceCPC) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, lengths: Tensor | None = None
                ) -> tuple[Tensor, Tensor, Tensor]:
        out = self.model(x) if lengths is None else self.model(x, lengths)
        return self.model.loss_targets(out.z), out.lengths, self.model.predict(out.c)


class TextCPCTask(KStepTask):
    """Token- or sentence-level text CPC for the engine."""

    unit = "tokens"

    def __init__(self, cfg: TextExperimentConfig) -> None:
        self.cfg = cfg
        self.level = cfg.model.level
        self.kind = KIND[self.level]

    def setup(self, ctx: Context, resume_state: dict[str, Any] | None) -> None:
        cfg, run = self.cfg, self.cfg.train
        self.ctx = ctx
        self.check_batch_split(ctx)
        notes = ReadNotes()
        # memory-mapped token cache (built by each node's first rank, waited for by the
        # others), or the whole corpus in memory (subword regularisation, or asked for)
        cached = cfg.data.token_cache and not cfg.data.subword_samples
        builder = ctx.dist.local_rank == 0
        progress = run.progress and ctx.dist.is_main
        opts = read_options(cfg.data)
        train_docs: list[Document] = []
        if cached:
            files = list_text_files(cfg.data.train)
            roots = cache_roots(files, cfg.data.token_cache_dir,
                                Path(run.out_dir) / "token_cache")
        else:
            train_docs = _corpus(cfg.data.train, cfg.data, notes)
        if resume_state is not None:
            self.tokenizer = tokenizer_from_state(resume_state["tokenizer"])
        elif cached:
            self.tokenizer = get_tokenizer(files, cfg.tokenizer, opts, run.seed, roots,
                                           progress, builder)
        else:
            sents = [s for d in train_docs for s in d.sentences]
            self.tokenizer = train_tokenizer(cfg.tokenizer, sents, run.seed)
        if cfg.model.vocab_size == 0:
            cfg.model.vocab_size = self.tokenizer.vocab_size
        elif cfg.model.vocab_size != self.tokenizer.vocab_size:
            raise ConfigError(f"model.vocab_size={cfg.model.vocab_size} but the tokenizer has "
                              f"{self.tokenizer.vocab_size} ids (leave it at 0)")
        torch.manual_seed(run.seed)
        self.model: TokenCPC | SentenceCPC = build_text_model(cfg.model)
        self.init_loss(ctx)
        max_tokens = cfg.data.max_sentence_tokens if self.level == "sentence" else None
        if cached:
            cache = get_token_cache(files, self.tokenizer, self.level, opts, roots, progress,
                                    builder)
            self.train_store = open_store(cache, cfg.data.window, cfg.data.short_documents,
                                          notes, max_tokens)
        else:
            self.train_store = build_store(train_docs, self.tokenizer, self.level, cfg.data,
                                           cfg.data.short_documents, notes,
                                           sample_seed=run.seed + 31)
        # which segmentation each training sentence takes (subword regularisation)
        self.variant_gen = torch.Generator().manual_seed(run.seed + 37 + 1000 * ctx.dist.rank)
        # which sentences a training window takes (data.sentence_order=shuffled)
        self.order_gen = torch.Generator().manual_seed(run.seed + 41 + 1000 * ctx.dist.rank)
        if ctx.dist.is_main:
            for line in notes.summary():
                tqdm.write(f"[train] {line}")
            if getattr(self.train_store, "n_variants", 1) > 1:
                tqdm.write(f"[train] subword regularisation: {cfg.data.subword_samples} sampled "
                           f"segmentation(s) per sentence besides the best one (alpha "
                           f"{cfg.data.subword_alpha})")
        sampler = WindowSampler(self.train_store.lengths, cfg.data.window,
                                cfg.data.batch_size, run.seed)
        self.batches = PlanBatches(sampler, ctx.dist.rank, ctx.dist.world)
        self.dev_store: TokenStore | SentenceStore | None = None
        if cfg.data.dev and ctx.dist.is_main:
            dev_notes = ReadNotes()
            if cached:
                dev_files = list_text_files(cfg.data.dev)
                dev_cache = get_token_cache(
                    dev_files, self.tokenizer, self.level, opts,
                    cache_roots(dev_files, cfg.data.token_cache_dir,
                                Path(run.out_dir) / "token_cache"), progress)
                self.dev_store = open_store(dev_cache, cfg.data.window, "skip", dev_notes,
                                            max_tokens)
            else:
                self.dev_store = build_store(_corpus(cfg.data.dev, cfg.data, dev_notes),
                                             self.tokenizer, self.level, cfg.data, "skip",
                                             dev_notes)
            for line in dev_notes.summary():
                tqdm.write(f"[dev] {line}")

    def step_module(self) -> nn.Module:
        return _TextStep(self.model)

    def check_resume(self, state: dict[str, Any], path: Path) -> None:
        super().check_resume(state, path)
        if "tokenizer" not in state:
            raise ConfigError(f"--resume: {path} has no tokenizer")
        if state["config"].get("tokenizer") != to_dict(self.cfg.tokenizer):
            raise ConfigError(f"--resume: tokenizer config differs from the one in {path}")
        mine = to_dict(self.cfg.model)
        theirs = dict(state["config"].get("model", {}))
        if mine.get("vocab_size") == 0:  # filled in from the tokenizer at set-up
            theirs["vocab_size"] = 0
        if theirs != mine:
            raise ConfigError(f"--resume: model config differs from the one in {path}")

    def _gather(self, store: TokenStore | SentenceStore, idx: Tensor, off: Tensor,
                sampled: bool = False) -> tuple[tuple[Tensor, ...], int]:
        dev, window = self.ctx.device, self.cfg.data.window
        if isinstance(store, TokenStore):
            x = store.gather(idx, off, window).to(dev, non_blocking=True)
            return (x,), x.numel()
        variant = positions = None
        if sampled and store.n_variants > 1:
            variant = torch.randint(store.n_variants, (len(idx), window),
                                    generator=self.variant_gen)
        if sampled and self.cfg.data.sentence_order == "shuffled":
            positions = sample_positions(store.lengths[idx], window, self.order_gen)
        toks, tl = store.gather(idx, off, window, variant, positions)
        return (toks.to(dev), tl.to(dev)), int(tl.sum())

    def next_batch(self) -> tuple[tuple[Tensor, ...], int]:
        return self._gather(self.train_store, *self.batches.next(), sampled=True)

    def dev_batch(self, idx: Tensor, off: Tensor) -> tuple[tuple[Tensor, ...], int]:
        assert self.dev_store is not None
        return self._gather(self.dev_store, idx, off)

    def loss(self, module: nn.Module, batch: tuple[tuple[Tensor, ...], int],
             training: bool = True) -> StepOutput:
        inputs, n_tokens = batch
        z, lengths, pred = module(*inputs)
        out = self.kstep_loss(z, lengths, pred, training)
        return StepOutput(out.loss, units=float(n_tokens), extra=out)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "rng_subword": self.variant_gen.get_state(),
                "rng_order": self.order_gen.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if "rng_subword" in state:  # checkpoints from before subword regularisation lack it
            self.variant_gen.set_state(state["rng_subword"].cpu())
        if "rng_order" in state:  # nor those from before data.sentence_order
            self.order_gen.set_state(state["rng_order"].cpu())

    def checkpoint_extra(self) -> dict[str, Any]:
        return {"tokenizer": self.tokenizer.state()}

    def on_start(self, out_dir: Path) -> None:
        save_model = getattr(self.tokenizer, "save_model", None)
        if save_model is not None:
            save_model(out_dir / "tokenizer.model")


def make_text_engine(cfg: TextExperimentConfig, resume: bool = False) -> Engine:
    """The engine running text CPC as ``cfg`` says."""
    return Engine(TextCPCTask(cfg), cfg, cfg.optim, cfg.train, resume=resume)


def train_text(cfg: TextExperimentConfig, resume: bool = False) -> dict[str, float]:
    """Train a text CPC model as configured; returns the last logged metrics."""
    return make_text_engine(cfg, resume=resume).run()
