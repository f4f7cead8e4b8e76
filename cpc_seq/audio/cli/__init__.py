"""The audio command-line layer: argument parsing and printing only; the work is done by
the library (:mod:`cpc_seq.audio.train`, :mod:`cpc_seq.audio.extract_pipeline`, the data
layer and the probes).

- :mod:`.commands`: ``train``, ``extract``, ``probe``, ``validate``, ``abx``,
  ``split-data``, ``combine-scp``, ``import-checkpoint``;
- :mod:`.ctc`: ``ctc-probe``;
- :mod:`.labels`: ``make-item``, ``labels-from-textgrid``.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add every audio command to ``subparsers``."""
    from cpc_seq.audio.cli import commands, ctc, labels

    commands.register(subparsers)
    ctc.register(subparsers)
    labels.register(subparsers)
