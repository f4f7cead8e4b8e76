"""Frame labels against frame features: how far their lengths may differ."""

from __future__ import annotations

from pathlib import Path

from cpc_seq.errors import DataError, where

__all__ = ["check_label_length"]


def check_label_length(
    utt: str,
    n_label_frames: int,
    n_audio_frames: int,
    tolerance: int = 2,
    path: str | Path | None = None,
    line: int | None = None,
) -> None:
    """Raise if an utterance's labels and its audio differ by more than ``tolerance`` frames.

    Alignments are often a frame or two shorter or longer than the encoder output (edge
    handling differs); larger gaps mean the labels belong to other audio.

    Raises:
        DataError: naming ``path:line`` (when given) and the utterance.
    """
    diff = n_label_frames - n_audio_frames
    if abs(diff) > tolerance:
        prefix = f"{where(path, line)}: " if path is not None else ""
        raise DataError(
            f"{prefix}utterance {utt!r} has {n_label_frames} label frames but its audio gives "
            f"{n_audio_frames} frames (differ by {abs(diff)}, tolerance {tolerance})"
        )
