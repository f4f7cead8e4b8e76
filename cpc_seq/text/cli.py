"""``cpc-seq text train``, ``extract`` and ``probe``: the text CPC commands (their results
print with ``cpc-seq table``).

Examples::

    cpc-seq text train --config recipes/text/conf/sentence.yaml train.steps=200
    cpc-seq text train --config recipes/text/conf/sentence.yaml --resume
    cpc-seq text extract --ckpt exp/text/sentence/last.pt --layer z --pool mean \\
        text:exp/text/data/test/text ark,scp:exp/text/feats/z_test.ark,exp/text/feats/z_test.scp
    cpc-seq text extract --ckpt exp/text/token/last.pt --layer c data/text/kjv/test npy:DIR
    cpc-seq text probe --train-feats scp:F_train.scp --test-feats scp:F_test.scp \\
        --train-labels exp/text/data/train/utt2label --test-labels ... --out DIR --name NAME
    cpc-seq text probe --bow --train-text exp/text/data/train/text --test-text ... --out DIR
    cpc-seq table exp/text/probe/*/result.json

The ``cpc-seq`` front end (:mod:`cpc_seq.cli`) registers them with
:func:`add_text_commands`. Bad input prints ``error: <what and where>`` and exits with
status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from cpc_seq.cliutil import add_train_command, print_metrics, train_overrides
from cpc_seq.errors import CpcSeqError, DataError
from cpc_seq.text.probe import C_GRID

__all__ = ["add_text_commands", "cmd_text_train", "cmd_text_extract",
           "cmd_text_probe", "read_items"]


def cmd_text_train(args: argparse.Namespace) -> int:
    """Train a token- or sentence-level text CPC model."""
    from cpc_seq.text.train import load_text_config, train_text

    cfg = load_text_config(args.config, train_overrides(args))
    print_metrics(train_text(cfg, resume=args.resume))
    return 0


def read_items(
    rspec: str, unit: str = "sentence", layout: str = "document", errors: str = "strict",
    level: str = "token",
) -> list[tuple[str, str]]:
    """Items (id, text) to featurise.

    ``text:FILE``: a Kaldi-style ``<id> <text>`` file, one item per line. Anything else:
    corpus paths (comma separated files/directories/globs) read with ``layout``; one item
    per sentence (``unit="sentence"``, ids ``<doc>-<nnnnn>``) or per document (ids = file
    stems; sentences joined by newlines for a sentence-level model, so its sentence
    boundaries are kept, and by spaces for a token-level one, as in training).
    """
    from cpc_seq.text.data import ReadNotes, read_corpus, read_text_items, sentence_items

    if rspec.startswith("text:"):
        return read_text_items(rspec[5:], errors)
    notes = ReadNotes()
    docs = read_corpus([p for p in rspec.split(",") if p], layout, errors, notes=notes)
    for line in notes.summary():
        print(f"note: {line}", file=sys.stderr)
    if unit == "sentence":
        return sentence_items(docs)
    sep = "\n" if level == "sentence" else " "
    return [(d.name, sep.join(d.sentences)) for d in docs]


def cmd_text_extract(args: argparse.Namespace) -> int:
    """Extract features of a text checkpoint (``cpc-seq audio extract`` may forward here for
    checkpoints of kind ``text_token``/``text_sentence``; missing options take defaults)."""
    from cpc_seq.text.extract import extract_text_to, load_text

    threads = getattr(args, "threads", 0)
    if threads:
        torch.set_num_threads(threads)
    random_init = getattr(args, "random_init", False)
    up = load_text(args.ckpt, random_init=random_init, seed=getattr(args, "seed", 0))
    items = read_items(args.rspecifier, getattr(args, "unit", "sentence"),
                       getattr(args, "layout", "document"),
                       getattr(args, "encoding_errors", "strict"), up.level)
    layer = getattr(args, "layer", "c")
    desc = f"extract {up.level} {layer}" + (" (random init)" if random_init else "")
    written = extract_text_to(
        up, items, args.wspecifier, layer=layer, pool=getattr(args, "pool", "none"),
        split_sentences=not getattr(args, "no_split", False),
        skip_existing=getattr(args, "skip_existing", False),
        max_batch_chars=getattr(args, "batch_chars", 200_000),
        num_frames_path=getattr(args, "write_num_frames", None),
        progress=not getattr(args, "no_progress", False), desc=desc,
    )
    print(f"wrote {len(written)} items ({sum(written.values())} rows) to {args.wspecifier}",
          file=sys.stderr)
    return 0


def _concat_feats(rspecs: list[str], what: str) -> dict[str, Any]:
    """Read one or more feature sets and concatenate them per item (pooled rows first)."""
    import numpy as np

    from cpc_seq.text.probe import read_vectors

    sets = [read_vectors(r) for r in rspecs]
    if len(sets) == 1:
        return sets[0]
    keys = set(sets[0])
    for r, fs in zip(rspecs[1:], sets[1:]):
        if set(fs) != keys:
            raise DataError(f"{what} features {r} and {rspecs[0]} cover different items "
                            f"({len(set(fs) ^ keys)} differ)")
    return {k: np.concatenate([np.asarray(fs[k]).mean(0, keepdims=True) for fs in sets], axis=1)
            for k in keys}


def _bow_result(args: argparse.Namespace, tr_keys: list[str], tr_y: Any, te_keys: list[str],
                te_y: Any, classes: list[str], c_grid: list[float]) -> dict[str, Any]:
    """The tuned TF-IDF bag of words on the items' texts."""
    from cpc_seq.text.data import read_text_items
    from cpc_seq.text.probe import tfidf_probe

    if not (args.train_text and args.test_text):
        raise CpcSeqError("--bow needs --train-text and --test-text")

    def texts(path: str, keys: list[str], what: str) -> list[str]:
        items = dict(read_text_items(path.removeprefix("text:")))
        missing = [k for k in keys if k not in items]
        if missing:
            raise DataError(f"{what}: item {missing[0]!r} has a label but no text in {path}")
        return [items[k] for k in keys]

    return tfidf_probe(texts(args.train_text, tr_keys, "train"), tr_y,
                       texts(args.test_text, te_keys, "test"), te_y, classes,
                       ngrams=args.bow_ngrams, min_df=args.bow_min_df,
                       max_features=args.bow_max_features, c_grid=c_grid,
                       dev_fraction=args.dev_fraction, seed=args.seed)


def _features_result(args: argparse.Namespace, train_lab: dict[str, str],
                     test_lab: dict[str, str], classes: list[str], c_grid: list[float]
                     ) -> dict[str, Any]:
    """The tuned logistic regression (or the SGD linear/MLP probe) on extracted features."""
    from cpc_seq.text.probe import logreg_probe, run_probe, stack

    if not (args.train_feats and args.test_feats):
        raise CpcSeqError("give --train-feats and --test-feats (or --bow, --majority)")
    if len(args.train_feats) != len(args.test_feats):
        raise CpcSeqError("give as many --test-feats as --train-feats")
    tr_x, tr_yt, _, _ = stack(_concat_feats(args.train_feats, "train"), train_lab, classes,
                              args.pool, "train")
    te_x, te_yt, _, _ = stack(_concat_feats(args.test_feats, "test"), test_lab, classes,
                              args.pool, "test")
    standardize = not args.no_standardize
    if args.probe == "logreg":
        return logreg_probe(tr_x, tr_yt, te_x, te_yt, classes, c_grid=c_grid,
                            dev_fraction=args.dev_fraction, seed=args.seed,
                            standardize=standardize)
    lr = args.lr if args.lr is not None else (1e-2 if not standardize else 1e-3)
    return run_probe(tr_x, tr_yt, te_x, te_yt, classes, hidden=args.mlp,
                     epochs=args.epochs, lr=lr, batch_size=args.batch_size,
                     weight_decay=args.weight_decay, seed=args.seed,
                     standardize=standardize)


def _write_probe_result(args: argparse.Namespace, d: dict[str, Any], classes: list[str]
                        ) -> None:
    """``result.json``, the confusion matrix (CSV, PNG) and the summary line."""
    import numpy as np

    from cpc_seq.io.checkpoint import atomic_write
    from cpc_seq.probes.linear import ProbeResult, save_confusion_csv, save_confusion_png

    out = Path(args.out)
    with atomic_write(out / "result.json", "w") as f:
        json.dump(d, f, indent=1)
    conf = np.asarray(d["confusion"], dtype=np.int64)
    res = ProbeResult(accuracy=d["accuracy"], per_class_accuracy={}, confusion=conf, n=d["n"])
    save_confusion_csv(res, out / "confusion.csv", classes)
    save_confusion_png(res, out / "confusion.png", classes)
    tuned = f", C={d['C']:g}" if "C" in d else ""
    print(f"{d['name']}: {args.task} accuracy {100 * d['accuracy']:.1f}% (macro "
          f"{100 * d['macro_accuracy']:.1f}%) on {d['n']} test items (train "
          f"{100 * d['train_accuracy']:.1f}%, {d['feature_dim']}-dim, {d['probe']}{tuned})")


def cmd_text_probe(args: argparse.Namespace) -> int:
    """Sentence-level probe on extracted features, the tuned bag of words, or the
    majority class."""
    import numpy as np

    from cpc_seq.text.data import read_labels
    from cpc_seq.text.probe import label_table, majority_result

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        c_grid = [float(c) for c in args.C_grid.split(",") if c.strip()]
    except ValueError:
        raise CpcSeqError(f"--C-grid {args.C_grid!r}: expected comma-separated numbers") from None
    if args.bow and args.majority:
        raise CpcSeqError("give at most one of --bow and --majority")
    train_lab, test_lab = read_labels(args.train_labels), read_labels(args.test_labels)
    classes = label_table(train_lab)
    index = {c: i for i, c in enumerate(classes)}
    tr_keys = sorted(train_lab)
    te_keys = [k for k in sorted(test_lab) if test_lab[k] in index]
    unknown = len(test_lab) - len(te_keys)
    if unknown:
        print(f"note: {unknown} test items have labels not seen in training; left out",
              file=sys.stderr)
    tr_y = np.array([index[train_lab[k]] for k in tr_keys], dtype=np.int64)
    te_y = np.array([index[test_lab[k]] for k in te_keys], dtype=np.int64)
    if args.majority:
        d, source = majority_result(tr_y, te_y, classes), {}
    elif args.bow:
        d = _bow_result(args, tr_keys, tr_y, te_keys, te_y, classes, c_grid)
        source = {"train_text": args.train_text, "test_text": args.test_text}
    else:
        d = _features_result(args, train_lab, test_lab, classes, c_grid)
        source = {"train_feats": args.train_feats, "test_feats": args.test_feats}
    d.update({"name": args.name or Path(args.out).name, "task": args.task, "pool": args.pool,
              "test_unknown_labels": unknown, **source})
    _write_probe_result(args, d, classes)
    return 0


def add_text_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``text-train``, ``text-extract`` and ``text-probe`` (filed as ``text train`` ...).

    Each parser gets ``func`` (its command function) as a default, so a caller can run
    ``args.func(args)``.
    """
    add_train_command(
        subparsers, "text-train", help="train token- or sentence-level CPC on text",
        description="Train text CPC (model.level: token | sentence). Overrides are key=value "
        "with dotted keys, e.g. train.steps=100 tokenizer.kind=sentencepiece.",
        config_help="YAML config (model, tokenizer, data, loss, optim, train)",
        func=cmd_text_train,
    )
    _add_text_extract(subparsers)
    _add_text_probe(subparsers)


def _add_text_extract(subparsers: argparse._SubParsersAction) -> None:
    e = subparsers.add_parser(
        "text-extract", help="extract text CPC features (Kaldi ark/scp or npy)",
        description="RSPEC is text:FILE ('<id> <text>' lines) or corpus paths (files, "
        "directories, globs; comma separated). WSPEC is ark,scp:F.ark,F.scp | ark:F.ark | "
        "npy:DIR. One (T, D) matrix per item: token frames (token model) or sentences "
        "(sentence model); (1, D) with --pool.",
    )
    e.add_argument("--ckpt", required=True, help="text checkpoint (kind text_token/text_sentence)")
    e.add_argument("--random-init", action="store_true",
                   help="same architecture and tokenizer with random weights (baseline)")
    e.add_argument("--seed", type=int, default=0, help="seed for --random-init")
    e.add_argument("--layer", default="c", choices=["z", "c"])
    e.add_argument("--pool", default="none", choices=["none", "mean", "max"],
                   help="pool each item's rows into one vector")
    e.add_argument("--unit", default="sentence", choices=["sentence", "document"],
                   help="corpus input: one item per sentence (default) or per document")
    e.add_argument("--layout", default="document", choices=["document", "lines"],
                   help="corpus input: running text or one sentence per line")
    e.add_argument("--encoding-errors", default="strict", choices=["strict", "replace"])
    e.add_argument("--no-split", action="store_true",
                   help="sentence model: each item is one sentence (no sentence splitting)")
    e.add_argument("--write-num-frames", help="e.g. ark,t:exp/x/utt2num_frames")
    e.add_argument("--skip-existing", action="store_true", help="resume a partial run")
    e.add_argument("--batch-chars", type=int, default=200_000,
                   help="padded characters per batch (default 200000)")
    e.add_argument("--threads", type=int, default=0)
    e.add_argument("--no-progress", action="store_true")
    e.add_argument("rspecifier")
    e.add_argument("wspecifier")
    e.set_defaults(func=cmd_text_extract)



def _add_text_probe(subparsers: argparse._SubParsersAction) -> None:
    q = subparsers.add_parser(
        "text-probe", help="probe on per-item text features (or bag of words, majority)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Classify items (e.g. sentences) from extracted features, pooled per "
        "item and standardised with the training mean/std (several --train-feats/--test-feats "
        "are concatenated per item, e.g. z and c); from TF-IDF word n-grams (--bow, "
        "scikit-learn); or report the majority class (--majority). The default probe is a "
        "multinomial logistic regression whose C is chosen on a stratified dev split of the "
        "training items, then refitted on all of them. Labels: '<id> <label>' files.",
    )
    q.add_argument("--train-feats", action="append", help="scp:F.scp | npy:DIR (repeatable)")
    q.add_argument("--test-feats", action="append", help="as --train-feats, same order")
    q.add_argument("--bow", action="store_true", help="TF-IDF bag-of-words baseline from texts")
    q.add_argument("--majority", action="store_true", help="majority-class baseline")
    q.add_argument("--train-text", help="text file ('<id> <text>') for --bow")
    q.add_argument("--test-text", help="text file ('<id> <text>') for --bow")
    q.add_argument("--bow-ngrams", type=int, default=2, help="word n-grams 1..N")
    q.add_argument("--bow-min-df", type=int, default=1, help="keep n-grams in >= this many items")
    q.add_argument("--bow-max-features", type=int, default=0,
                   help="keep the most frequent n-grams (0 = all)")
    q.add_argument("--train-labels", required=True)
    q.add_argument("--test-labels", required=True)
    q.add_argument("--probe", default="logreg", choices=["logreg", "adam"],
                   help="logreg: tuned logistic regression; adam: Adam-trained linear/MLP")
    q.add_argument("--C-grid", default=",".join(f"{c:g}" for c in C_GRID),
                   help="logreg: values of C tried on the dev split")
    q.add_argument("--dev-fraction", type=float, default=0.1,
                   help="logreg: share of the training items held out to choose C")
    q.add_argument("--pool", default="mean", choices=["mean", "max"],
                   help="pooling of multi-row features")
    q.add_argument("--task", default="label", help="task name for the table")
    q.add_argument("--mlp", type=int, default=0, help="adam: one hidden layer of this size")
    q.add_argument("--epochs", type=int, default=30, help="adam: epochs")
    q.add_argument("--lr", type=float, default=None,
                   help="adam: learning rate (None = 1e-3; 1e-2 without standardisation)")
    q.add_argument("--no-standardize", action="store_true",
                   help="do not standardise dense features")
    q.add_argument("--batch-size", type=int, default=256, help="adam: batch size")
    q.add_argument("--weight-decay", type=float, default=0.0, help="adam: weight decay")
    q.add_argument("--seed", type=int, default=0, help="dev split / probe seed")
    q.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    q.add_argument("--out", required=True, help="output dir (result.json, confusion.csv/png)")
    q.add_argument("--name", default=None, help="row name in tables (None = --out's name)")
    q.set_defaults(func=cmd_text_probe)


