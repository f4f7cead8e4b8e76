"""The ``cpc-seq`` command: ``cpc-seq <modality> <task> ...``, one grammar for every modality.

============  ==========================================================================
``audio``     ``train``, ``extract``, ``probe phone|speaker``, ``ctc-probe``, ``abx``,
              ``validate``, ``make-item``, ``labels-from-textgrid``, ``split-data``,
              ``combine-scp``, ``import-checkpoint``
``text``      ``train``, ``extract``, ``probe``
``image``     ``train``, ``probe``
``mi``        ``estimate``, ``bench`` (and the other MI tools)
``table``     a markdown table of any probe ``result.json`` files (phone, speaker, text,
              image, CTC)
============  ==========================================================================

Every command's ``--help`` shows its defaults. Bad input prints ``error: <what and where>``
and exits with status 2. ``python -m cpc_seq`` is the same command, so
``torchrun --nproc-per-node N -m cpc_seq audio train ...`` trains on N processes.

The flat spellings of earlier releases (``cpc-seq train``, ``text-train``,
``validate-data``, ``text-table``, ...) still work for this release and print one line
naming the new spelling.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cpc_seq.cliutil import run_command, show_defaults
from cpc_seq.io.tables import probe_table, read_results

MODALITIES = {
    "audio": "audio CPC: train, extract features, probes, ABX, data-dir tools",
    "text": "token- and sentence-level CPC on text",
    "image": "DIM and AMDIM on images",
    "mi": "mutual-information estimators and their benchmarks",
}
#: flat commands of earlier releases that are now one ``table`` command
OLD_TABLES = ("text-table", "ctc-table")
_RENAMED = {"validate-data": "validate"}


def new_spelling(old: str) -> tuple[str, ...]:
    """``cpc-seq OLD`` of earlier releases as ``(modality, task)`` (or ``("table",)``)."""
    if old in OLD_TABLES or old == "table":
        return ("table",)
    for prefix in ("text", "image", "mi"):
        if old.startswith(prefix + "-"):
            return prefix, old[len(prefix) + 1 :]
    if old == "info-plane":
        return "mi", old
    return "audio", _RENAMED.get(old, old)


class _Regroup:
    """Stands in for the flat sub-command list that each modality's ``register``
    function adds its commands to, and files each one under its modality with its new
    name (``text-train`` -> ``text`` / ``train``)."""

    def __init__(self, groups: dict[str, argparse._SubParsersAction]) -> None:
        self.groups = groups
        self.flat: set[str] = set()

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        self.flat.add(name)
        modality, task = new_spelling(name)
        return self.groups[modality].add_parser(task, **kwargs)


def _add_table(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("table", help="a markdown table of probe result.json files (any kind)",
                       description="One markdown table per kind of result among the files: "
                       "frame/utterance probes (phone, speaker, image), text probes, CTC "
                       "phone recognisers.")
    p.add_argument("results", nargs="+", help="result.json files")
    p.add_argument("--out", help="also write the tables to this file")
    p.set_defaults(func=cmd_table)


def build_parser() -> argparse.ArgumentParser:
    from cpc_seq.audio.cli import register as add_audio_commands
    from cpc_seq.images.cli import add_image_commands
    from cpc_seq.mibench.cli import register as add_mibench_command
    from cpc_seq.text.cli import add_text_commands

    parser = argparse.ArgumentParser(
        prog="cpc-seq", description=__doc__.split("\n")[0],
        epilog="Run 'cpc-seq MODALITY --help' for its tasks.")
    top = parser.add_subparsers(dest="modality", required=True, metavar="MODALITY")
    groups = {}
    for name, help in MODALITIES.items():
        p = top.add_parser(name, help=help, description=help)
        groups[name] = p.add_subparsers(dest="command", required=True, metavar="TASK")
    _add_table(top)
    regroup = _Regroup(groups)
    sub: Any = regroup
    add_audio_commands(sub)
    add_text_commands(sub)
    add_image_commands(sub)
    add_mibench_command(sub)
    parser.set_defaults(old_spellings=sorted(regroup.flat | set(OLD_TABLES)))
    show_defaults(parser)
    return parser


def cmd_table(args: argparse.Namespace) -> int:
    """Print (and with ``--out`` write) one table per kind of result."""
    from cpc_seq.io.atomic import atomic_write

    rows = read_results(args.results, require="")
    kinds: dict[str, list[dict]] = {"probe": [], "text": [], "ctc": []}
    for path, row in zip(args.results, rows):
        if "per" in row:
            kinds["ctc"].append(row)
        elif "majority_accuracy" in row:
            kinds["text"].append(row)
        elif "accuracy" in row:
            kinds["probe"].append(row)
        else:
            from cpc_seq.errors import DataError

            raise DataError(f"{path}: not a probe result (no 'accuracy' or 'per')")
    parts = []
    if kinds["probe"]:
        parts.append(probe_table(kinds["probe"]))
    if kinds["text"]:
        from cpc_seq.text.probe import markdown_table

        parts.append(markdown_table(kinds["text"]))
    if kinds["ctc"]:
        from cpc_seq.probes.ctc import ctc_table

        parts.append(ctc_table(kinds["ctc"]))
    text = "\n".join(parts)
    if args.out:
        with atomic_write(args.out, "w") as f:
            f.write(text)
    print(text, end="")
    return 0


def _respell(argv: list[str], old_spellings: list[str]) -> list[str]:
    """``argv`` in the current grammar; an old flat spelling prints one line."""
    if not argv or argv[0] in MODALITIES or argv[0] == "table" or argv[0].startswith("-"):
        return argv
    if argv[0] not in old_spellings:
        return argv  # argparse names the valid choices
    new = new_spelling(argv[0])
    print(f"cpc-seq: 'cpc-seq {argv[0]}' is now spelled 'cpc-seq {' '.join(new)}'; the old "
          "spelling goes away in the next release", file=sys.stderr)
    return [*new, *argv[1:]]


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``cpc-seq``; user errors print one line and exit with status 2."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(_respell(argv, parser.get_default("old_spellings")))
    return run_command(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
