"""``cpc-seq audio ctc-probe``: the CTC phone recogniser
(:mod:`cpc_seq.probes.ctc`) on frozen features with Kaldi-style frame labels."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path

import torch

from cpc_seq.errors import CpcSeqError
from cpc_seq.probes.ctc import MODELS, CTCOptions, ctc_probe

# -------------------------------------------------------------------- commands


def _read_features(rspec: str) -> Mapping[str, torch.Tensor]:
    """A lazy index of the features: each utterance is read when the probe needs it."""
    from cpc_seq.io.feature_index import open_features

    return open_features(rspec)


def cmd_ctc_probe(args: argparse.Namespace) -> int:
    from cpc_seq.audio.data.kaldi import (
        phone_table_from_labels,
        read_frame_labels,
        read_phone_table,
        read_split,
        read_table,
    )
    from cpc_seq.probes.tasks import choose_split

    opts = CTCOptions(model=args.model, hidden=args.hidden, layers=args.layers,
                      dropout=args.dropout, epochs=args.epochs, lr=args.lr,
                      batch_size=args.batch_size, seed=args.seed, threads=args.threads,
                      progress=not args.no_progress)
    opts.validate()
    phones = read_phone_table(args.phones) if args.phones else phone_table_from_labels(args.labels)
    labels = read_frame_labels(args.labels, phones)
    test_labels = (read_frame_labels(args.test_labels, phones)
                   if args.test_labels and args.test_labels != args.labels else None)
    if args.feats:
        if args.train_feats or args.test_feats:
            raise CpcSeqError("give --feats, or --train-feats with --test-feats, not both")
        train_f = test_f = _read_features(args.feats)
        utt2spk = None
        if args.utt2spk:
            utt2spk = {k: v.split()[0] for _, k, v in read_table(args.utt2spk, check_sorted=False)}
        tr = read_split(args.train_split) if args.train_split else None
        te = read_split(args.test_split) if args.test_split else None
        labelled = sorted(u for u in train_f if u in labels)
        train_utts, test_utts, _ = choose_split(labelled, tr, te, utt2spk)
    elif args.train_feats and args.test_feats:
        train_f, test_f = _read_features(args.train_feats), _read_features(args.test_feats)
        train_utts, test_utts = sorted(train_f), sorted(test_f)
    else:
        raise CpcSeqError("give --feats, or both --train-feats and --test-feats")
    ignore = [s for s in args.ignore.split(",") if s]
    name = args.name or Path(args.out).name
    r = ctc_probe(train_f, test_f, labels, phones, args.out, name, opts, train_utts, test_utts,
                  ignore=ignore, tolerance=args.tolerance, labels_path=args.labels,
                  test_labels=test_labels, buffer_frames=args.buffer_frames)
    print(f"{name}: PER {100 * r['per']:.1f}% on {r['n_test']} test utterances "
          f"({r['n_ref_phones']} phones; train PER {100 * r['train_per']:.1f}%, "
          f"{r['feature_dim']}-dim, {r['probe']})")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``ctc-probe`` to a ``cpc-seq`` subparsers object (its results print with
    ``cpc-seq table``)."""
    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = subparsers.add_parser(
        "ctc-probe", help="CTC phone recogniser on frozen features; phone error rate",
        description="Train a small CTC phone recogniser (SUPERB PR style) on frozen "
        "features and report the phone error rate. Targets: frame labels with runs merged "
        "and --ignore symbols dropped.", formatter_class=fmt)
    p.add_argument("--feats", help="features of all utterances (scp:F.scp | npy:DIR), split "
                   "with --train-split/--test-split or the default per-speaker split")
    p.add_argument("--train-feats", help="train features (instead of --feats)")
    p.add_argument("--test-feats", help="test features (with --train-feats)")
    p.add_argument("--train-split", help="utterance ids for training")
    p.add_argument("--test-split", help="utterance ids for testing")
    p.add_argument("--utt2spk", help="speaker grouping of the default split")
    p.add_argument("--labels", required=True, help="frame labels: utt l1 l2 ... (ids or symbols)")
    p.add_argument("--test-labels", help="frame labels of the test utterances (default: --labels)")
    p.add_argument("--phones", help="phones.txt (default: built from the labels)")
    p.add_argument("--ignore", default="", help="comma-separated symbols left out of the "
                   "targets, e.g. SIL")
    p.add_argument("--model", choices=MODELS, default="bilstm",
                   help="bilstm: BiLSTM then linear; linear: a linear layer per frame")
    p.add_argument("--hidden", type=int, default=256, help="LSTM units per direction")
    p.add_argument("--layers", type=int, default=2, help="BiLSTM layers")
    p.add_argument("--dropout", type=float, default=0.2, help="dropout between layers")
    p.add_argument("--epochs", type=int, default=20, help="passes over the training set")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument("--batch-size", type=int, default=16, help="utterances per batch")
    p.add_argument("--seed", type=int, default=0, help="seed of the init and batch order")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    p.add_argument("--tolerance", type=int, default=2, help="label/feature frame slack")
    p.add_argument("--buffer-frames", type=int, default=500_000,
                   help="a training set of at most this many frames is held in memory; a "
                   "larger one is read from disk one batch at a time")
    p.add_argument("--out", required=True, help="output dir (result.json)")
    p.add_argument("--name", default=None, help="row name in tables (default: --out's name)")
    p.add_argument("--no-progress", action="store_true", help="no per-epoch loss lines")
    p.set_defaults(func=cmd_ctc_probe)
