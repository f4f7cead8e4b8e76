"""Pieces the command-line front ends share (``cpc_seq.cli`` and each modality's
``cli``): the ``*-train`` parser shape, the final metrics line and the
error convention (a :class:`~cpc_seq.errors.CpcSeqError` prints ``error: ...`` and exits
with status 2; Ctrl-C exits with 130)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from cpc_seq.config import MAX_SEED
from cpc_seq.errors import CpcSeqError

Command = Callable[[argparse.Namespace], int]


def add_train_command(
    subparsers: argparse._SubParsersAction, name: str, help: str, description: str,
    config_help: str, func: Command | None = None,
) -> argparse.ArgumentParser:
    """``NAME [--config YAML] [--resume] [key=value ...]``; ``func`` becomes ``args.func``."""
    p = subparsers.add_parser(name, help=help, description=description)
    p.add_argument("--config", help=config_help)
    p.add_argument("--resume", action="store_true", help="continue from OUT_DIR/last.pt")
    p.add_argument("--overwrite", action="store_true",
                   help="start again in an OUT_DIR that holds an earlier run (same as "
                   "train.overwrite=true); without it, or --resume, such a run is refused")
    p.add_argument("overrides", nargs="*", help="key=value, e.g. train.steps=100")
    if func is not None:
        p.set_defaults(func=func)
    return p


def train_overrides(args: argparse.Namespace) -> list[str]:
    """The ``key=value`` overrides of a train command, with ``--overwrite`` folded in."""
    return [*args.overrides, *(["train.overwrite=true"] if args.overwrite else [])]


def show_defaults(parser: argparse.ArgumentParser) -> None:
    """Make ``--help`` of ``parser`` and every sub-command show each option's default."""
    parser.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                show_defaults(sub)
        elif (action.help is None and action.option_strings and action.default is not None
              and action.default is not argparse.SUPPRESS and action.nargs != 0):
            action.help = "(default: %(default)s)"


def print_metrics(metrics: dict[str, float]) -> None:
    """The last logged metrics as one JSON line (per-step ``.../kNN`` keys left out)."""
    if metrics:
        print(json.dumps({k: round(v, 4) for k, v in metrics.items() if "/k" not in k}))


def run_command(func: Command, args: argparse.Namespace) -> int:
    """Run ``func(args)`` with the error convention; returns the exit status.

    ``--threads`` below 0 and ``--seed`` outside ``[0, MAX_SEED]`` (any command that has
    them) are refused here, before any work; an
    OSError that names a file and escaped the command's own checks is reported in one
    line naming it rather than as a traceback."""
    try:
        threads = getattr(args, "threads", None)
        if isinstance(threads, int) and threads < 0:
            raise CpcSeqError(f"--threads must be >= 0 (0 = torch default), got {threads}")
        seed = getattr(args, "seed", None)
        if isinstance(seed, int) and not 0 <= seed <= MAX_SEED:
            raise CpcSeqError(f"--seed must be in [0, {MAX_SEED}], got {seed}")
        return func(args)
    except CpcSeqError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.filename is None:
            raise
        print(f"error: {e.filename}: {e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
