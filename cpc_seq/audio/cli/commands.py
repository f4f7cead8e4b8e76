"""The audio commands of ``cpc-seq``: train, extract, probe, validate-data, abx,
import-checkpoint (:mod:`cpc_seq.audio.model.import_cpc_audio`).

Examples::

    cpc-seq audio train --config recipes/tiny/conf/cpc.yaml train.steps=500 model.context=lstm
    cpc-seq audio train --config recipes/tiny/conf/cpc.yaml --resume
    cpc-seq audio extract --ckpt exp/cpc/last.pt --layer c \\
        scp:data/tiny/test/wav.scp ark,scp:exp/feats/c_test.ark,exp/feats/c_test.scp
    cpc-seq audio extract --mfcc scp:data/tiny/test/wav.scp npy:exp/feats/mfcc_test
    cpc-seq audio probe phone --train-feats scp:exp/feats/c_train.scp --test-feats ... \\
        --train-labels data/tiny/train/phone_frames.txt --test-labels ... \\
        --phones data/tiny/phones.txt --out exp/probe/cpc_c --name "CPC c"

:func:`register` adds them to the ``cpc-seq`` front end (:mod:`cpc_seq.cli`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import ChainMap
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from cpc_seq.cliutil import add_train_command, print_metrics, train_overrides
from cpc_seq.errors import CpcSeqError, DataError
from cpc_seq.io.feature_index import open_features
from cpc_seq.io.features import read_features
from cpc_seq.probes.stream import DEFAULT_BUFFER_FRAMES

if TYPE_CHECKING:
    from cpc_seq.audio.data.kaldi import DataDir
    from cpc_seq.audio.data.wav import AudioNotes


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = add_train_command(sub, "train", help="train a CPC model",
                          description="Train CPC. Overrides are key=value with dotted keys.",
                          config_help="YAML config (sections model, data, loss, optim, train)",
                          func=cmd_train)
    p.add_argument("--init-from", metavar="CKPT",
                   help="fine-tune: start from this checkpoint's weights (e.g. one made by "
                   "import-checkpoint); its model and loss config are the base the YAML "
                   "and overrides apply to")
    p.add_argument("--fresh-heads", action="store_true",
                   help="with --init-from: new prediction heads instead of the checkpoint's")


def _add_extract(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "extract", help="extract frame-level features (Kaldi ark/scp or npy)",
        description="Read like compute-mfcc-feats: RSPEC is scp:DATA/wav.scp (or a data dir); "
        "WSPEC is ark,scp:F.ark,F.scp | ark:F.ark | npy:DIR.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--ckpt", help="cpc_seq checkpoint (carries its own config)")
    src.add_argument("--mfcc", action="store_true", help="MFCC+delta+delta-delta baseline (39)")
    p.add_argument("--no-cmvn", action="store_true",
                   help="--mfcc without per-utterance mean/variance normalisation")
    p.add_argument("--random-init", action="store_true",
                   help="same architecture as --ckpt with random weights (baseline)")
    p.add_argument("--seed", type=int, default=0, help="seed for --random-init")
    p.add_argument("--layer", default="c", help="z, c or convN (default c)")
    p.add_argument("--write-num-frames", help="e.g. ark,t:exp/x/utt2num_frames")
    p.add_argument("--skip-existing", action="store_true", help="resume a partial run")
    p.add_argument("--allow-pipes", action="store_true", help="run piped wav.scp entries")
    p.add_argument("--skip-bad", action="store_true", help="warn and skip unreadable audio")
    p.add_argument("--batch-seconds", type=float, default=0.0,
                   help="padded audio per batch, seconds (default: 60 on CPU, where the "
                   "encoder takes it in groups of at most 10 s, since its first layers' "
                   "outputs outgrow the caches, and the GRU takes it whole; 120 on CUDA)")
    p.add_argument("--chunk-seconds", type=float, default=60.0,
                   help="an utterance longer than this is read and computed in spans of "
                   "this length, in memory that does not grow with its duration (default 60)")
    p.add_argument("--device", default="cpu",
                   help="cpu, cuda, cuda:N or auto (CUDA when available); default cpu")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="fp32",
                   help="bf16 autocast (about 1.7x faster for the paper preset on CPUs with "
                   "avx512_bf16; features differ from fp32 by bf16 rounding). auto = bf16 "
                   "where the hardware has it. Default fp32")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("rspecifier")
    p.add_argument("wspecifier")
    p.set_defaults(func=cmd_extract)


def _probe_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--feats", help="features of all utterances (scp:F.scp | npy:DIR); "
                   "split with --train-split/--test-split or the default split")
    p.add_argument("--train-feats", help="train features (instead of --feats)")
    p.add_argument("--test-feats", help="test features (with --train-feats)")
    p.add_argument("--train-split", help="utterance ids for training (train_split.txt format)")
    p.add_argument("--test-split", help="utterance ids for testing")
    p.add_argument("--utt2spk", help="utt2spk (speaker probe; grouping of the default split)")
    p.add_argument("--mlp", type=int, default=0, help="one hidden layer of this size")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output dir (result.json, confusion.csv/png)")
    p.add_argument("--name", default=None, help="row name in tables")
    p.add_argument("--buffer-frames", type=int, default=DEFAULT_BUFFER_FRAMES,
                   help="feature frames held in memory: a larger training set is read from "
                   "disk in utterance-shuffled minibatches through a shuffle buffer of this "
                   "many frames (500000 = 0.5 GB of 256-dim features)")
    p.add_argument("--no-progress", action="store_true")


def _add_probe(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("probe", help="linear probes on frozen features (phone, speaker)")
    p.set_defaults(func=cmd_probe)
    kinds = p.add_subparsers(dest="probe_kind", required=True)
    ph = kinds.add_parser("phone", help="frame-level phone classification")
    _probe_common(ph)
    ph.add_argument("--labels", "--train-labels", dest="labels", required=True,
                    help="frame labels: utt l1 l2 ... (ids or symbols)")
    ph.add_argument("--test-labels", help="default: same file as --labels")
    ph.add_argument("--phones", help="phones.txt (symbol id); default: built from the labels")
    ph.add_argument("--tolerance", type=int, default=2, help="label/feature frame slack")
    sp = kinds.add_parser("speaker", help="speaker classification (utterance or window level)")
    _probe_common(sp)
    sp.add_argument("--level", choices=["utterance", "window"], default="utterance")
    sp.add_argument("--window-frames", type=int, default=128,
                    help="window level: frames per window (128 = 1.28 s)")


def _add_validate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate-data", help="check a Kaldi data dir (and frame labels)")
    p.set_defaults(func=cmd_validate)
    p.add_argument("data_dir")
    p.add_argument("--labels", help="frame-label file to check against the audio lengths")
    p.add_argument("--phones", help="phones.txt for symbolic labels")
    p.add_argument("--tolerance", type=int, default=2, help="allowed frame-count difference")
    p.add_argument("--allow-pipes", action="store_true", help="run piped wav.scp entries")
    p.add_argument("--headers-only", action="store_true",
                   help="read only the audio headers (fast, but misses NaN samples and "
                   "undecodable data that extract rejects)")


def _add_abx(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("abx", help="ABX phone discriminability (ZeroSpeech .item format)")
    p.set_defaults(func=cmd_abx)
    p.add_argument("--feats", required=True, help="scp:F.scp | npy:DIR (keys = item file ids)")
    p.add_argument("--item", required=True, help="ZeroSpeech / Libri-light .item file")
    p.add_argument("--mode", choices=["within", "across", "both"], default="both")
    p.add_argument("--distance", choices=["angular", "cosine", "euclidean"], default="angular",
                   help="angular = acos(cos)/pi, what ZeroSpeech/Libri-light call cosine")
    p.add_argument("--frame-rate", type=float, default=100.0, help="frames per second")
    p.add_argument("--average", choices=["librilight", "zerospeech2017"], default="librilight",
                   help="across-speaker averaging: librilight = contexts and X speakers "
                   "together, then A/B speakers; zerospeech2017 = contexts per speaker pair, "
                   "then all speaker pairs")
    p.add_argument("--out", help="write the result as JSON here")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the audio commands to a ``add_subparsers()`` object."""
    _add_train(sub)
    _add_extract(sub)
    _add_probe(sub)
    _add_validate(sub)
    _add_abx(sub)
    from cpc_seq.audio.data.split import register as add_split_commands

    add_split_commands(sub)  # split-data, combine-scp
    from cpc_seq.audio.model.import_cpc_audio import register as add_import_command

    add_import_command(sub)


# --------------------------------------------------------------------------- commands


def cmd_train(args: argparse.Namespace) -> int:
    from cpc_seq.audio.train import load_config, train

    if args.init_from:
        from cpc_seq.audio.init_from import init_config

        cfg, init, note = init_config(args.init_from, args.config, train_overrides(args),
                                      fresh_heads=args.fresh_heads)
        print(f"[init] weights from {args.init_from}; {note}", file=sys.stderr)
        print_metrics(train(cfg, resume=args.resume, init=init))
        return 0
    if args.fresh_heads:
        raise CpcSeqError("--fresh-heads needs --init-from")
    cfg = load_config(args.config, train_overrides(args))
    print_metrics(train(cfg, resume=args.resume))
    return 0


def cmd_extract(args: argparse.Namespace) -> int:
    """``cpc-seq audio extract``: :func:`cpc_seq.extract` on a data dir, written to WSPEC."""
    from cpc_seq.audio.extract_pipeline import ExtractSummary, extract
    from cpc_seq.kernels.memory import keep_freed_memory

    if args.threads < 0:
        raise CpcSeqError(f"--threads must be >= 0 (0 = torch default), got {args.threads}")
    if args.threads:
        torch.set_num_threads(args.threads)
    keep_freed_memory()  # batches reuse the memory freed by the last (cpc_seq/kernels/memory.py)
    summary = extract(
        args.rspecifier, None if args.mfcc else args.ckpt, layer=args.layer,
        output=args.wspecifier, mfcc=args.mfcc, cmvn=not args.no_cmvn, device=args.device,
        precision=args.precision, batch_seconds=args.batch_seconds,
        chunk_seconds=args.chunk_seconds, num_frames=args.write_num_frames,
        skip_existing=args.skip_existing, skip_bad=args.skip_bad,
        allow_pipes=args.allow_pipes, progress=not args.no_progress,
        random_init=args.random_init, seed=args.seed)
    assert isinstance(summary, ExtractSummary)
    for line in summary.notes:
        print(f"note: {line}", file=sys.stderr)
    secs, audio = summary.wall_seconds, summary.audio_seconds
    print(f"wrote {len(summary.frames)} utterances ({sum(summary.frames.values())} frames) to "
          f"{args.wspecifier}; {audio:.0f} s of audio in {secs:.1f} s "
          f"({audio / max(secs, 1e-9):.0f}x real time)", file=sys.stderr)
    return 0


def _probe_sets(args: argparse.Namespace, utt2spk: dict[str, str] | None
                ) -> tuple[dict, dict, list[str], list[str]]:
    from cpc_seq.audio.data.kaldi import read_split
    from cpc_seq.probes.tasks import choose_split

    if args.feats:
        if args.train_feats or args.test_feats:
            raise CpcSeqError("give --feats, or --train-feats with --test-feats, not both")
        feats = open_features(args.feats)
        tr_split = read_split(args.train_split) if args.train_split else None
        te_split = read_split(args.test_split) if args.test_split else None
        train_utts, test_utts, missing = choose_split(sorted(feats), tr_split, te_split, utt2spk)
        if missing.get("train") or missing.get("test"):
            print(f"note: split ids without features: {missing['train']} train, "
                  f"{missing['test']} test (left out)", file=sys.stderr)
        if missing.get("train_only_speakers"):
            print(f"note: default split: {missing['train_only_speakers']} speakers have fewer "
                  "than 5 utterances; all their utterances are in train, none in test",
                  file=sys.stderr)
        return feats, feats, train_utts, test_utts
    if not (args.train_feats and args.test_feats):
        raise CpcSeqError("give --feats, or both --train-feats and --test-feats")
    train_f, test_f = open_features(args.train_feats), open_features(args.test_feats)
    shared = sorted(set(train_f) & set(test_f))
    if shared:
        print(f"warning: {len(shared)} utterances (first {shared[0]}) are in both "
              f"{args.train_feats} and {args.test_feats}: test accuracy includes training "
              "data", file=sys.stderr)
    return train_f, test_f, sorted(train_f), sorted(test_f)


def cmd_probe(args: argparse.Namespace) -> int:
    from cpc_seq.audio.data.kaldi import (
        phone_table_from_labels,
        read_frame_labels,
        read_phone_table,
        read_table,
    )
    from cpc_seq.probes.options import ProbeOptions
    from cpc_seq.probes.tasks import phone_probe, speaker_probe

    opts = ProbeOptions(hidden=args.mlp, epochs=args.epochs, lr=args.lr,
                        batch_size=args.batch_size, seed=args.seed,
                        progress=not args.no_progress)
    utt2spk = None
    if args.utt2spk:
        utt2spk = {k: v.split()[0] for _, k, v in read_table(args.utt2spk, check_sorted=False)}
    train_f, test_f, train_utts, test_utts = _probe_sets(args, utt2spk)
    name = args.name or Path(args.out).name
    if args.probe_kind == "phone":
        phones = (read_phone_table(args.phones) if args.phones
                  else phone_table_from_labels(args.labels))
        train_lab = read_frame_labels(args.labels, phones)
        test_lab = (read_frame_labels(args.test_labels, phones)
                    if args.test_labels and args.test_labels != args.labels else train_lab)
        have = set(train_f) | set(test_f)
        for path, lab in {args.labels: train_lab, args.test_labels or args.labels: test_lab}.items():
            stray = sorted(set(lab) - have)
            if stray:
                print(f"note: {path}: {len(stray)} labelled utterances have no features "
                      f"(first {stray[0]}); left out", file=sys.stderr)
        d = phone_probe(train_f, test_f, train_lab, test_lab, phones, args.out, name, opts,
                        train_utts, test_utts, args.tolerance, args.buffer_frames)
        what = f"phone accuracy on {d['n']} test frames"
    else:
        if utt2spk is None:
            raise CpcSeqError("probe speaker needs --utt2spk")
        if train_f is not test_f:
            merged = ChainMap(test_f, train_f)  # lazy: nothing is read here
            train_f = test_f = merged
        stray = sorted(set(utt2spk) - set(train_f))
        if stray:
            print(f"note: {args.utt2spk}: {len(stray)} utterances have no features "
                  f"(first {stray[0]}); left out", file=sys.stderr)
        d = speaker_probe(train_f, utt2spk, train_utts, test_utts, args.out, name, opts,
                          level=args.level, window_frames=args.window_frames)
        what = f"speaker accuracy ({args.level} level, {d['speakers']} speakers) on {d['n']} items"
    print(f"{name}: {what}: {100 * d['accuracy']:.1f}% (train {100 * d['train_accuracy']:.1f}%, "
          f"{d['feature_dim']}-dim)")
    return 0


def _audio_frames(args: argparse.Namespace, dd: DataDir, utt: str, notes: AudioNotes) -> int:
    """Samples at 16 kHz of one utterance: decoded in full as extract does, or (with
    --headers-only) from the file header; -1 for a piped entry in --headers-only mode."""
    import soundfile as sf

    from cpc_seq.audio.data.wav import is_pipe

    if not args.headers_only:
        return len(dd.load_audio(utt, target_sr=16000, allow_pipes=args.allow_pipes, notes=notes))
    if dd.segments is not None:
        rec, start, end = dd.segments[utt]
        if end > 0:
            return int(round((end - start) * 16000))
        path = dd.wav[rec]
    else:
        start, path = 0.0, dd.wav[utt]
    if is_pipe(path):
        return -1
    try:
        info = sf.info(path)
    except Exception as e:  # soundfile raises several types
        raise DataError(f"{args.data_dir}: utterance {utt}: cannot read {path} ({e})") from None
    return int(round((info.frames / info.samplerate - start) * 16000))


def cmd_validate(args: argparse.Namespace) -> int:
    """Check a data dir the way ``extract`` reads it: every utterance is decoded in full
    (missing, truncated or undecodable files, NaN/Inf samples are errors), then the frame
    labels are checked against the audio lengths. ``--headers-only`` reads only headers."""
    from cpc_seq.audio.data.kaldi import (
        check_label_length,
        load_data_dir,
        phone_table_from_labels,
        read_frame_labels,
        read_phone_table,
    )
    from cpc_seq.audio.data.wav import AudioNotes

    dd = load_data_dir(args.data_dir, allow_pipes=args.allow_pipes)
    notes = AudioNotes()
    samples = 0
    n_frames: dict[str, int] = {}
    bad: list[str] = []
    for utt in dd.utts:
        try:
            n = _audio_frames(args, dd, utt, notes)
        except DataError as e:
            bad.append(str(e))
            continue
        if 0 <= n < 160:  # extract's rule: at least one frame (160 samples at 16 kHz)
            bad.append(f"utterance {utt}: {n} samples at 16 kHz is shorter than one frame "
                       "(160 samples), which extract refuses")
            continue
        if n >= 0:
            samples += n
            n_frames[utt] = n // 160
    if bad:
        more = f" ({len(bad)} of {len(dd.utts)} utterances cannot be read; first shown)" \
            if len(bad) > 1 else ""
        raise DataError(bad[0] + more)
    for line in notes.summary():
        print(f"note: {line}", file=sys.stderr)
    msg = f"{args.data_dir}: {len(dd.utts)} utterances, {samples / 16000 / 60:.1f} minutes"
    if dd.utt2spk:
        msg += f", {len(set(dd.utt2spk.values()))} speakers"
    if args.labels:
        phones = read_phone_table(args.phones) if args.phones else phone_table_from_labels(args.labels)
        labels = read_frame_labels(args.labels, phones)
        for utt, lab in labels.items():
            if utt in n_frames:
                check_label_length(utt, len(lab), n_frames[utt], args.tolerance, path=args.labels)
        missing = [u for u in dd.utts if u not in labels]
        stray = sorted(set(labels) - set(dd.utts))
        msg += f"; labels for {len(dd.utts) - len(missing)} ({len(phones)} classes) agree with the audio"
        if missing:
            msg += f"; {len(missing)} utterances without labels (first {missing[0]})"
        if stray:
            print(f"note: {args.labels}: {len(stray)} labelled utterances are not in "
                  f"{args.data_dir} (first {stray[0]}); they are not checked", file=sys.stderr)
    print(msg)
    return 0


def cmd_abx(args: argparse.Namespace) -> int:
    from cpc_seq.io.atomic import atomic_write
    from cpc_seq.probes.abx import abx_error, read_item_file

    feats = read_features(args.feats)
    items = read_item_file(args.item)
    modes = ["within", "across"] if args.mode == "both" else [args.mode]
    results = {}
    for mode in modes:
        r = abx_error(feats, items, mode=mode, distance=args.distance, frame_rate=args.frame_rate,
                      average=args.average)
        results[mode] = r
        print(f"ABX {mode}-speaker error ({args.distance}): {100 * r['error']:.2f}% "
              f"({r['n_triplets']} triplets)")
    if args.out:
        with atomic_write(args.out, "w") as f:
            json.dump(results, f, indent=1)
    return 0


