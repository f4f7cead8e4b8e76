"""``text-train``, ``text-extract``, ``text-probe`` and ``text-table``: the text CPC commands.

Examples::

    cpc-seq text-train --config recipes/text/conf/sentence.yaml train.steps=200
    cpc-seq text-train --config recipes/text/conf/sentence.yaml --resume
    cpc-seq text-extract --ckpt exp/text/sentence/last.pt --layer z --pool mean \\
        text:exp/text/data/test/text ark,scp:exp/text/feats/z_test.ark,exp/text/feats/z_test.scp
    cpc-seq text-extract --ckpt exp/text/token/last.pt --layer c data/text/kjv/test npy:DIR
    cpc-seq text-probe --train-feats scp:F_train.scp --test-feats scp:F_test.scp \\
        --train-labels exp/text/data/train/utt2label --test-labels ... --out DIR --name NAME
    cpc-seq text-probe --bow --train-text exp/text/data/train/text --test-text ... --out DIR
    cpc-seq text-table exp/text/probe/*/result.json

``cpc_seq.cli`` registers them with :func:`add_text_commands`; standalone,
``python -m cpc_seq.text.cli text-train ...`` does the same. Bad input prints
``error: <what and where>`` and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from cpc_seq.cliutil import add_train_command, print_metrics, run_command
from cpc_seq.errors import CpcSeqError, DataError

__all__ = ["add_text_commands", "TEXT_COMMANDS", "cmd_text_train", "cmd_text_extract",
           "cmd_text_probe", "cmd_text_table", "read_items", "main"]


def cmd_text_train(args: argparse.Namespace) -> int:
    """Train a token- or sentence-level text CPC model."""
    from cpc_seq.text.train import load_text_config, train_text

    cfg = load_text_config(args.config, args.overrides)
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
    """Extract features of a text checkpoint (``cpc-seq extract`` may forward here for
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


def cmd_text_probe(args: argparse.Namespace) -> int:
    """Sentence-level linear probe on extracted features, or the bag-of-words baseline."""
    import numpy as np

    from cpc_seq.io.checkpoint import atomic_write
    from cpc_seq.probes.linear import ProbeResult, save_confusion_csv, save_confusion_png
    from cpc_seq.text.data import read_labels, read_text_items
    from cpc_seq.text.probe import HashedBow, label_table, read_vectors, run_probe, stack

    if args.threads:
        torch.set_num_threads(args.threads)
    train_lab, test_lab = read_labels(args.train_labels), read_labels(args.test_labels)
    classes = label_table(train_lab)
    if args.bow:
        if not (args.train_text and args.test_text):
            raise CpcSeqError("--bow needs --train-text and --test-text")

        def texts(path: str) -> dict[str, str]:
            return dict(read_text_items(path.removeprefix("text:")))

        tr_text, te_text = texts(args.train_text), texts(args.test_text)
        bow = HashedBow(args.bow_dim, args.bow_ngrams).fit(
            [tr_text[k] for k in sorted(train_lab) if k in tr_text])
        tr_feats = dict(zip(sorted(tr_text), bow.transform([tr_text[k] for k in sorted(tr_text)])))
        te_feats = dict(zip(sorted(te_text), bow.transform([te_text[k] for k in sorted(te_text)])))
        source = {"train_text": args.train_text, "test_text": args.test_text}
    else:
        if not (args.train_feats and args.test_feats):
            raise CpcSeqError("give --train-feats and --test-feats (or --bow)")
        tr_feats, te_feats = read_vectors(args.train_feats), read_vectors(args.test_feats)
        source = {"train_feats": args.train_feats, "test_feats": args.test_feats}
    tr_x, tr_y, _, _ = stack(tr_feats, train_lab, classes, args.pool, "train")
    te_x, te_y, _, unknown = stack(te_feats, test_lab, classes, args.pool, "test")
    if unknown:
        print(f"note: {unknown} test items have labels not seen in training; left out",
              file=sys.stderr)
    standardize = not (args.bow or args.no_standardize)
    lr = args.lr if args.lr is not None else (1e-2 if not standardize else 1e-3)
    d = run_probe(tr_x, tr_y, te_x, te_y, classes, hidden=args.mlp, epochs=args.epochs,
                  lr=lr, batch_size=args.batch_size, weight_decay=args.weight_decay,
                  seed=args.seed, standardize=standardize)
    out = Path(args.out)
    d.update({"name": args.name or out.name, "task": args.task, "pool": args.pool,
              "test_unknown_labels": unknown, **source})
    with atomic_write(out / "result.json", "w") as f:
        json.dump(d, f, indent=1)
    conf = np.asarray(d["confusion"], dtype=np.int64)
    res = ProbeResult(accuracy=d["accuracy"], per_class_accuracy={}, confusion=conf, n=d["n"])
    save_confusion_csv(res, out / "confusion.csv", classes)
    save_confusion_png(res, out / "confusion.png", classes)
    print(f"{d['name']}: {args.task} accuracy {100 * d['accuracy']:.1f}% (macro "
          f"{100 * d['macro_accuracy']:.1f}%) on {d['n']} test items (train "
          f"{100 * d['train_accuracy']:.1f}%, {d['feature_dim']}-dim)")
    return 0


def cmd_text_table(args: argparse.Namespace) -> int:
    """Print (and optionally write) a markdown table of probe results."""
    from cpc_seq.io.checkpoint import atomic_write
    from cpc_seq.text.probe import markdown_table

    rows = []
    for path in args.results:
        try:
            rows.append(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as e:
            raise DataError(f"{path}: cannot read probe result ({e})") from None
    table = markdown_table(rows)
    if args.out:
        with atomic_write(args.out, "w") as f:
            f.write(table)
    print(table, end="")
    return 0


TEXT_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "text-train": cmd_text_train,
    "text-extract": cmd_text_extract,
    "text-probe": cmd_text_probe,
    "text-table": cmd_text_table,
}


def add_text_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``text-train``, ``text-extract``, ``text-probe`` and ``text-table``.

    Each parser gets ``func`` (its command function) as a default, so a caller can run
    ``args.func(args)``; :data:`TEXT_COMMANDS` maps the names to the same functions.
    """
    add_train_command(
        subparsers, "text-train", help="train token- or sentence-level CPC on text",
        description="Train text CPC (model.level: token | sentence). Overrides are key=value "
        "with dotted keys, e.g. train.steps=100 tokenizer.kind=sentencepiece.",
        config_help="YAML config (model, tokenizer, data, loss, optim, train)",
        func=cmd_text_train,
    )

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

    q = subparsers.add_parser(
        "text-probe", help="linear probe on per-item text features (or bag of words)",
        description="Classify items (e.g. sentences) from extracted features, pooled per "
        "item (standardised with the training mean/std), or from hashed unigram+bigram "
        "TF-IDF (--bow; plain logistic regression). Labels: '<id> <label>' files.",
    )
    q.add_argument("--train-feats", help="scp:F.scp | npy:DIR")
    q.add_argument("--test-feats")
    q.add_argument("--bow", action="store_true", help="bag-of-words baseline from the texts")
    q.add_argument("--train-text", help="text file ('<id> <text>') for --bow")
    q.add_argument("--test-text")
    q.add_argument("--bow-dim", type=int, default=16384, help="hash buckets (default 16384)")
    q.add_argument("--bow-ngrams", type=int, default=2, help="1 = unigrams, 2 = +bigrams")
    q.add_argument("--train-labels", required=True)
    q.add_argument("--test-labels", required=True)
    q.add_argument("--pool", default="mean", choices=["mean", "max"],
                   help="pooling of multi-row features (default mean)")
    q.add_argument("--task", default="label", help="task name for the table")
    q.add_argument("--mlp", type=int, default=0, help="one hidden layer of this size")
    q.add_argument("--epochs", type=int, default=30)
    q.add_argument("--lr", type=float, default=None,
                   help="Adam learning rate (default 1e-3; 1e-2 without standardisation)")
    q.add_argument("--no-standardize", action="store_true",
                   help="do not standardise features (always off for --bow: its TF-IDF rows "
                   "are L2-normalised)")
    q.add_argument("--batch-size", type=int, default=256)
    q.add_argument("--weight-decay", type=float, default=0.0)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--threads", type=int, default=0)
    q.add_argument("--out", required=True, help="output dir (result.json, confusion.csv/png)")
    q.add_argument("--name", default=None, help="row name in tables")
    q.set_defaults(func=cmd_text_probe)

    t = subparsers.add_parser("text-table", help="markdown table of text probe results")
    t.add_argument("results", nargs="+", help="result.json files")
    t.add_argument("--out", help="also write the table here")
    t.set_defaults(func=cmd_text_table)


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point: ``python -m cpc_seq.text.cli text-train|text-extract|...``."""
    parser = argparse.ArgumentParser(prog="python -m cpc_seq.text.cli",
                                     description="text CPC commands of cpc-seq")
    add_text_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return run_command(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
