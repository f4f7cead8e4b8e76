"""Training loop for text CPC (token or sentence level).

``python -m cpc_seq.text.cli text-train --config recipes/text/conf/sent.yaml [key=value ...]``

The same loop as the audio trainer (:mod:`cpc_seq.audio.train`): windows from a deterministic
per-epoch plan -> model -> k-step InfoNCE (:func:`cpc_seq.losses.kstep_infonce`, any
negative mode) -> Adam with warm-up, cosine/constant schedule and gradient clipping; tqdm,
TensorBoard, ``log.jsonl``; atomic ``last.pt``/``best.pt`` carrying the config as plain
data, the tokeniser (a sentencepiece model as a uint8 tensor), optimizer, RNG states and
sampler position, so ``--resume`` continues exactly.

Windows: token level, ``data.window`` consecutive tokens of one document; sentence level,
``data.window`` consecutive sentences of one document, each cut to
``data.max_sentence_tokens`` tokens.

Layout of ``train.out_dir``: ``config.yaml``, ``last.pt``, ``best.pt`` (with a dev set),
``tokenizer.model`` (sentencepiece only, the same bytes as in the checkpoint), ``tb/``,
``log.jsonl``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm import tqdm

from cpc_seq.audio.train import LossConfig, OptimConfig, RunConfig, lr_at, resolve_device
from cpc_seq.config import apply_overrides, check, from_dict, load_yaml, to_dict
from cpc_seq.engine import util as trainutil
from cpc_seq.engine.windows import WindowSampler, fixed_windows
from cpc_seq.errors import ConfigError, CpcSeqError
from cpc_seq.io.checkpoint import atomic_write, load_checkpoint, save_checkpoint
from cpc_seq.losses import KStepOutput, kstep_infonce
from cpc_seq.text.data import (
    ENCODING_ERRORS,
    LAYOUTS,
    Document,
    ReadNotes,
    SentenceStore,
    TokenStore,
    keep_long_enough,
    read_corpus,
)
from cpc_seq.text.models import SentenceCPC, TextModelConfig, TokenCPC, build_text_model
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
    """

    train: list[str] | str = "data/text/kjv/train"
    dev: list[str] | str | None = None
    layout: str = "document"
    encoding_errors: str = "strict"
    empty_files: str = "skip"
    empty_lines: str = "skip"
    window: int = 128
    max_sentence_tokens: int = 64
    batch_size: int = 32
    short_documents: str = "error"

    def validate(self) -> None:
        check(self.layout in LAYOUTS, "data.layout", f"one of {LAYOUTS}")
        check(self.encoding_errors in ENCODING_ERRORS, "data.encoding_errors",
              f"one of {ENCODING_ERRORS}")
        check(self.empty_files in ("skip", "error"), "data.empty_files", "skip or error")
        check(self.empty_lines in ("skip", "error"), "data.empty_lines", "skip or error")
        check(self.window > 0, "data.window", "must be positive")
        check(self.max_sentence_tokens > 0, "data.max_sentence_tokens", "must be positive")
        check(self.batch_size > 0, "data.batch_size", "must be positive")
        check(self.short_documents in ("error", "skip"), "data.short_documents",
              "one of 'error', 'skip'")


@dataclass
class TextRunConfig(RunConfig):
    """:class:`cpc_seq.audio.train.RunConfig` with the text default ``out_dir``."""

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
        if self.model.level == "token":
            frames = -(-self.data.window // self.model.stride)
            check(frames > self.model.n_steps, "data.window",
                  f"{self.data.window} tokens give {frames} frames of {self.model.stride} "
                  f"tokens, too few for {self.model.n_steps} prediction steps (need at least "
                  f"{(self.model.n_steps + 1) * self.model.stride} tokens)")
        else:
            check(self.data.window > self.model.n_steps, "data.window",
                  f"{self.data.window} sentences are too few for {self.model.n_steps} "
                  f"prediction steps (need at least {self.model.n_steps + 1})")


def load_text_config(
    path: str | Path | None, overrides: list[str] | None = None
) -> TextExperimentConfig:
    """YAML file (optional) + ``key=value`` overrides -> validated config."""
    data = load_yaml(path) if path is not None else {}
    data = apply_overrides(data, overrides or [])
    return from_dict(TextExperimentConfig, data)


def _corpus(paths: list[str] | str, cfg: TextDataConfig, notes: ReadNotes) -> list[Document]:
    return read_corpus(paths, cfg.layout, cfg.encoding_errors, cfg.empty_files,
                       cfg.empty_lines, notes)


def build_store(
    docs: list[Document], tok: Tokenizer, level: str, cfg: TextDataConfig, short: str,
    notes: ReadNotes,
) -> TokenStore | SentenceStore:
    """Tokenise documents into the store of ``level``, leaving out (or refusing, with
    ``short="error"``) documents shorter than ``cfg.window``."""
    if level == "token":
        seqs = encode_many(tok, [d.text for d in docs])
        keep = keep_long_enough([d.name for d in docs], [len(s) for s in seqs], cfg.window,
                                short, "tokens", notes)
        return TokenStore([docs[i].name for i in keep], [seqs[i] for i in keep])
    keep = keep_long_enough([d.name for d in docs], [len(d.sentences) for d in docs],
                            cfg.window, short, "sentences", notes)
    flat = encode_many(tok, [s for i in keep for s in docs[i].sentences])
    out, pos = [], 0
    for i in keep:
        n = len(docs[i].sentences)
        sents = []
        for s in flat[pos : pos + n]:
            if len(s) > cfg.max_sentence_tokens:
                notes.truncated_sentences += 1
                s = s[: cfg.max_sentence_tokens]
            sents.append(s)
        out.append(sents)
        pos += n
    return SentenceStore([docs[i].name for i in keep], out)


class TextTrainer:
    """Owns model, tokeniser, optimizer, data and loop state; ``run()`` trains."""

    def __init__(self, cfg: TextExperimentConfig, resume: bool = False) -> None:
        self.cfg = cfg
        run = cfg.train
        if run.threads:
            torch.set_num_threads(run.threads)
        self.device = resolve_device(run.device)
        self.out = Path(run.out_dir)
        self.level = cfg.model.level
        notes = ReadNotes()
        train_docs = _corpus(cfg.data.train, cfg.data, notes)
        resume_state = self._load_resume_state() if resume else None
        if resume_state is not None:
            self.tokenizer = tokenizer_from_state(resume_state["tokenizer"])
        else:
            sents = [s for d in train_docs for s in d.sentences]
            self.tokenizer = train_tokenizer(cfg.tokenizer, sents, run.seed)
        if cfg.model.vocab_size == 0:
            cfg.model.vocab_size = self.tokenizer.vocab_size
        elif cfg.model.vocab_size != self.tokenizer.vocab_size:
            raise ConfigError(f"model.vocab_size={cfg.model.vocab_size} but the tokenizer has "
                              f"{self.tokenizer.vocab_size} ids (leave it at 0)")
        torch.manual_seed(run.seed)
        self.model: TokenCPC | SentenceCPC = build_text_model(cfg.model).to(self.device)
        self.opt = torch.optim.Adam(
            self.model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay
        )
        self.neg_gen = torch.Generator(device=self.device).manual_seed(run.seed + 17)
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.best_dev = float("inf")
        if resume_state is not None:
            self._resume(resume_state)
        self.train_store = build_store(train_docs, self.tokenizer, self.level, cfg.data,
                                       cfg.data.short_documents, notes)
        for line in notes.summary():
            tqdm.write(f"[train] {line}")
        self.sampler = WindowSampler(self.train_store.lengths, cfg.data.window,
                                     cfg.data.batch_size, run.seed)
        self.dev_store: TokenStore | SentenceStore | None = None
        if cfg.data.dev:
            dev_notes = ReadNotes()
            self.dev_store = build_store(_corpus(cfg.data.dev, cfg.data, dev_notes),
                                         self.tokenizer, self.level, cfg.data, "skip", dev_notes)
            for line in dev_notes.summary():
                tqdm.write(f"[dev] {line}")
        self.writer = None

    # -- checkpoints -------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "kind": KIND[self.level],
            "config": to_dict(self.cfg),
            "tokenizer": self.tokenizer.state(),
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "best_dev": self.best_dev,
            "rng_cpu": torch.get_rng_state(),
            "rng_neg": self.neg_gen.get_state(),
            "rng_cuda": torch.cuda.get_rng_state() if self.device.type == "cuda" else None,
        }

    def _load_resume_state(self) -> dict[str, Any]:
        path = self.out / "last.pt"
        if not path.exists():
            raise CpcSeqError(f"--resume: no checkpoint {path} to resume from")
        st = load_checkpoint(path, map_location=self.device)
        if st.get("kind") != KIND[self.level] or "tokenizer" not in st:
            raise ConfigError(f"--resume: {path} is a {st.get('kind')} checkpoint, not "
                              f"{KIND[self.level]}")
        return st

    def _resume(self, st: dict[str, Any]) -> None:
        if st["config"]["model"] != to_dict(self.cfg.model):
            raise ConfigError(f"--resume: model config differs from the one in "
                              f"{self.out / 'last.pt'}")
        if st["config"]["tokenizer"] != to_dict(self.cfg.tokenizer):
            raise ConfigError(f"--resume: tokenizer config differs from the one in "
                              f"{self.out / 'last.pt'}")
        self.model.load_state_dict(st["model"])
        self.opt.load_state_dict(st["optimizer"])
        self.step, self.epoch = int(st["step"]), int(st["epoch"])
        self.batch_in_epoch = int(st["batch_in_epoch"])
        self.best_dev = float(st["best_dev"])
        torch.set_rng_state(st["rng_cpu"].cpu())
        self.neg_gen.set_state(st["rng_neg"].cpu() if self.device.type == "cpu" else st["rng_neg"])
        if st.get("rng_cuda") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(st["rng_cuda"].cpu())
        tqdm.write(f"resumed from {self.out / 'last.pt'} at step {self.step}")

    def save(self, name: str) -> None:
        save_checkpoint(self.state(), self.out / name)

    # -- one step ----------------------------------------------------------------------
    def _loss(self, store: TokenStore | SentenceStore, idx: torch.Tensor,
              off: torch.Tensor) -> tuple[KStepOutput, int]:
        """k-step InfoNCE of one batch of windows, and the number of real tokens in it."""
        amp = self.cfg.train.precision == "bf16"
        window = self.cfg.data.window
        if isinstance(store, TokenStore):
            x = store.gather(idx, off, window).to(self.device, non_blocking=True)
            n_tokens = x.numel()
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=amp):
                out = self.model(x)
        else:
            toks, tl = store.gather(idx, off, window)
            n_tokens = int(tl.sum())
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=amp):
                out = self.model(toks.to(self.device), tl.to(self.device))
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=amp):
            pred = self.model.predict(out.c)
            res = kstep_infonce(
                pred, out.z, out.lengths, negatives=self.cfg.loss.negatives,
                n_negatives=self.cfg.loss.n_negatives,
                exclude_positive=self.cfg.loss.exclude_positive, generator=self.neg_gen,
            )
        return res, n_tokens

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean loss/accuracy on a fixed set of dev windows."""
        assert self.dev_store is not None
        self.model.eval()
        idx, off = fixed_windows(self.dev_store.lengths, self.cfg.data.window,
                                 self.cfg.train.eval_windows)
        g_state = self.neg_gen.get_state()
        losses, accs = [], []
        bs = self.cfg.data.batch_size
        for i in range(0, len(idx), bs):
            if len(idx[i : i + bs]) < 2 and self.cfg.loss.negatives != "same_sequence":
                continue
            out, _ = self._loss(self.dev_store, idx[i : i + bs], off[i : i + bs])
            losses.append(float(out.loss))
            accs.append(float(out.step_acc.mean()))
        self.neg_gen.set_state(g_state)
        self.model.train()
        if not losses:
            return {}
        return {"dev/loss": sum(losses) / len(losses), "dev/acc": sum(accs) / len(accs)}

    def run(self) -> dict[str, float]:
        """Train until ``train.steps`` (or ``train.max_minutes``); returns the last metrics."""

        cfg, run = self.cfg, self.cfg.train
        self.out.mkdir(parents=True, exist_ok=True)
        with atomic_write(self.out / "config.yaml", "w") as f:
            yaml.safe_dump(to_dict(cfg), f, sort_keys=False)
        save_model = getattr(self.tokenizer, "save_model", None)
        if save_model is not None:
            save_model(self.out / "tokenizer.model")
        self.writer = trainutil.ScalarLog(self.out, purge_step=self.step)
        guard = trainutil.NonFiniteGuard(run.max_bad_steps, self.out / "last.pt")
        plan = self.sampler.epoch_plan(self.epoch)
        self.model.train()
        t_start = time.perf_counter()
        t_window, tokens_window = time.perf_counter(), 0
        metrics: dict[str, float] = {}
        bar = tqdm(total=run.steps, initial=self.step, disable=not run.progress,
                   desc=f"train {self.level}", unit="step", dynamic_ncols=True)
        try:
            while self.step < run.steps:
                if self.batch_in_epoch >= self.sampler.batches_per_epoch:
                    self.epoch += 1
                    self.batch_in_epoch = 0
                    plan = self.sampler.epoch_plan(self.epoch)
                idx, off = plan[0][self.batch_in_epoch], plan[1][self.batch_in_epoch]
                self.batch_in_epoch += 1
                lr = lr_at(self.step, cfg.optim, run.steps)
                trainutil.set_lr(self.opt, lr)
                out, n_tokens = self._loss(self.train_store, idx, off)
                self.opt.zero_grad(set_to_none=True)
                out.loss.backward()
                gnorm = trainutil.clip_grad_norm(self.model.parameters(), cfg.optim.grad_clip)
                if guard.bad(self.step, out.loss.detach(), gnorm):
                    self.opt.zero_grad(set_to_none=True)
                    continue
                self.opt.step()
                self.step += 1
                tokens_window += n_tokens
                bar.update(1)
                if self.step % run.log_every == 0 or self.step == run.steps:
                    now = time.perf_counter()
                    speed = tokens_window / max(now - t_window, 1e-9)
                    t_window, tokens_window = now, 0
                    metrics = {**trainutil.kstep_metrics(out), "lr": lr,
                               "speed/tokens_per_sec": speed}
                    self.writer.add(self.step, metrics)
                    bar.set_postfix(loss=f"{metrics['train/loss']:.3f}",
                                    acc=f"{metrics['train/acc']:.3f}",
                                    tok_s=f"{speed:.0f}")
                if self.dev_store is not None and (self.step % run.eval_every == 0
                                                   or self.step == run.steps):
                    dev = self.evaluate()
                    self.writer.add(self.step, dev, jsonl=False)
                    metrics.update(dev)
                    if dev and dev["dev/loss"] < self.best_dev:
                        self.best_dev = dev["dev/loss"]
                        self.save("best.pt")
                if self.step % run.save_every == 0 or self.step == run.steps:
                    self.save("last.pt")
                if run.max_minutes and (time.perf_counter() - t_start) > 60 * run.max_minutes:
                    tqdm.write(f"train.max_minutes={run.max_minutes} reached at step {self.step}")
                    self.save("last.pt")
                    break
        finally:
            bar.close()
            self.writer.close()
        return metrics


def train_text(cfg: TextExperimentConfig, resume: bool = False) -> dict[str, float]:
    """Train a text CPC model as configured; returns the last logged metrics."""
    return TextTrainer(cfg, resume=resume).run()
