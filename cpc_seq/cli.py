"""The ``cpc-seq`` command: one front end that registers every modality's commands.

- audio (:mod:`cpc_seq.audio.cli`): ``train``, ``extract``, ``probe``, ``validate-data``,
  ``abx``;
- text (:mod:`cpc_seq.text.cli`): ``text-train``, ``text-extract``, ``text-probe``,
  ``text-table``;
- images (:mod:`cpc_seq.images.cli`): ``image-train``, ``image-probe``;
- ``table``: a markdown table of probe ``result.json`` files (any modality).

Every command's ``--help`` shows its defaults. Bad input prints ``error: <what and where>``
and exits with status 2. ``python -m cpc_seq`` is the same command, so
``torchrun --nproc-per-node N -m cpc_seq train ...`` trains on N processes.
"""

from __future__ import annotations

import argparse
import sys

from cpc_seq.cliutil import run_command, show_defaults
from cpc_seq.io.tables import probe_table, read_results


def _add_table(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("table", help="print a markdown table from probe result.json files")
    p.add_argument("results", nargs="+", help="result.json files")
    p.set_defaults(func=cmd_table)


def build_parser() -> argparse.ArgumentParser:
    from cpc_seq.audio.cli import register as add_audio_commands
    from cpc_seq.audio.ctc_cli import register as add_ctc_commands
    from cpc_seq.audio.items import register as add_make_item_command
    from cpc_seq.audio.textgrid import register as add_textgrid_command
    from cpc_seq.images.cli import add_image_commands
    from cpc_seq.mibench.cli import register as add_mibench_command
    from cpc_seq.text.cli import add_text_commands

    parser = argparse.ArgumentParser(prog="cpc-seq", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    add_audio_commands(sub)
    _add_table(sub)
    add_image_commands(sub)
    add_text_commands(sub)
    add_mibench_command(sub)
    add_make_item_command(sub)
    add_textgrid_command(sub)
    add_ctc_commands(sub)
    show_defaults(parser)
    return parser


def cmd_table(args: argparse.Namespace) -> int:
    print(probe_table(read_results(args.results, require="accuracy")), end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``cpc-seq``; user errors print one line and exit with status 2."""
    args = build_parser().parse_args(argv)
    return run_command(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
