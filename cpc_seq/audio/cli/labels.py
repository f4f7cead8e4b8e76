"""``cpc-seq audio make-item`` and ``labels-from-textgrid``: label files in, label files out."""

from __future__ import annotations

import argparse
import math

from cpc_seq.audio.data.items import make_item_file
from cpc_seq.audio.data.textgrid import (
    MAX_SECONDS,
    find_textgrids,
    textgrid_frame_labels,
    write_frame_labels,
)
from cpc_seq.errors import ConfigError, DataError


def cmd_make_item(args: argparse.Namespace) -> int:
    from cpc_seq.audio.data.kaldi import read_phone_table

    silence = [s for s in args.silence.split(",") if s]
    phones = read_phone_table(args.phones) if args.phones else None
    counts = make_item_file(
        args.labels, args.utt2spk, args.out, split=args.split, phones=phones, silence=silence,
        context=not args.no_context, boundary=args.boundary, frame_rate=args.frame_rate,
        min_frames=args.min_frames,
    )
    msg = (f"{args.out}: {counts['items']} items ({counts['phones']} phones) from "
           f"{counts['utterances']} utterances, {counts['speakers']} speakers")
    if counts["split_without_labels"]:
        msg += f"; {counts['split_without_labels']} split utterances have no labels"
    print(msg)
    return 0


def register_make_item(subparsers: argparse._SubParsersAction) -> None:
    """Add ``make-item`` to a ``cpc-seq`` subparsers object."""
    p = subparsers.add_parser(
        "make-item", help="ZeroSpeech/Libri-light .item file from frame labels (for abx)",
        description="One item per run of equal frame labels, with the previous and next "
        "run's label as its context. Onsets/offsets are frame boundaries (t / frame-rate).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("labels", help="frame labels: utt p1 p2 ... (phone_frames.txt)")
    p.add_argument("utt2spk", help="utt2spk (speaker of every labelled utterance)")
    p.add_argument("out", help="item file to write")
    p.add_argument("--split", help="only these utterance ids (one per line, e.g. test split)")
    p.add_argument("--phones", help="phones.txt: write integer labels as their symbols")
    p.add_argument("--silence", default="SIL",
                   help="comma-separated labels that are contexts but never items ('' = none)")
    p.add_argument("--no-context", action="store_true",
                   help="context-independent items: every context is the boundary symbol")
    p.add_argument("--boundary", default="#", help="context at utterance start and end")
    p.add_argument("--frame-rate", type=float, default=100.0, help="label frames per second")
    p.add_argument("--min-frames", type=int, default=1, help="shortest item, in frames")
    p.set_defaults(func=cmd_make_item)


def _parse_map(text: str) -> dict[str, str]:
    out = {}
    for pair in filter(None, (s.strip() for s in text.split(","))):
        src, sep, dst = pair.partition("=")
        if not sep or not src:
            raise ConfigError(f"--map: expected FROM=TO[,FROM=TO...], got {pair!r}")
        out[src] = dst
    return out


def cmd_labels_from_textgrid(args: argparse.Namespace) -> int:
    from cpc_seq.audio.data.kaldi import write_phone_table

    mapping = _parse_map(args.map)
    gap = None if args.no_gaps else args.gap_label
    files = find_textgrids(args.inputs)
    if not (math.isfinite(args.max_seconds) and args.max_seconds > 0):
        raise ConfigError(f"--max-seconds must be a positive number, got {args.max_seconds}")
    labels = {utt: textgrid_frame_labels(f, args.tier, gap, mapping, args.strip_stress,
                                         max_seconds=args.max_seconds)
              for utt, f in files.items()}
    empty = [u for u, lab in labels.items() if not lab]
    if empty:
        raise DataError(f"{files[empty[0]]}: shorter than one frame (10 ms)")
    write_frame_labels(args.out, labels)
    symbols = sorted({s for lab in labels.values() for s in lab})
    if args.phones_out:
        write_phone_table(args.phones_out, {s: i for i, s in enumerate(symbols)})
    n = sum(len(v) for v in labels.values())
    print(f"{args.out}: {len(labels)} utterances, {n} frames, {len(symbols)} labels")
    return 0


def register_labels_from_textgrid(subparsers: argparse._SubParsersAction) -> None:
    """Add ``labels-from-textgrid`` to a ``cpc-seq`` subparsers object."""
    p = subparsers.add_parser(
        "labels-from-textgrid", help="phone_frames.txt from Praat TextGrid phone tiers (MFA)",
        description="One label per 10 ms frame: the interval holding the frame centre "
        "(sample 160t+80 at 16 kHz). Utterance id = file name without .TextGrid. "
        "Overlapping intervals are an error.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", help="TextGrid files or directories (searched recursively)")
    p.add_argument("--out", required=True, help="frame-label file to write (phone_frames.txt)")
    p.add_argument("--tier", default="phones",
                   help="tier name (or the one tier ending with it, e.g. 'spk - phones')")
    p.add_argument("--gap-label", default="SIL",
                   help="label of frames no interval covers (and of empty intervals)")
    p.add_argument("--no-gaps", action="store_true", help="a gap is an error instead")
    p.add_argument("--map", default="", help="relabel, e.g. 'sil=SIL,sp=SIL,spn=SPN'")
    p.add_argument("--strip-stress", action="store_true", help="AH0 -> AH (CMU stress digits)")
    p.add_argument("--phones-out", help="also write phones.txt (symbols in LC_ALL=C order)")
    p.add_argument("--max-seconds", type=float, default=MAX_SECONDS,
                   help="refuse a TextGrid whose xmax is longer (its labels are held in memory)")
    p.set_defaults(func=cmd_labels_from_textgrid)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``make-item`` and ``labels-from-textgrid``."""
    register_make_item(subparsers)
    register_labels_from_textgrid(subparsers)
