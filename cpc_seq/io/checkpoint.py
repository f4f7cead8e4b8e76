"""Checkpoints: atomic saves, safe loads, and the config they carry.

A checkpoint is a plain dict of tensors and plain data::

    {"format": "cpc_seq", "version": 1, "kind": "audio_cpc", "config": {...},
     "model": state_dict, "step": int, ... (optimizer, rng, sampler state when training)}

so ``cpc-seq audio extract --ckpt X`` needs nothing else. Loading always uses
``torch.load(weights_only=True)``: a file carrying pickled objects that would run code is
refused with a :class:`~cpc_seq.errors.CheckpointError`. Which model a checkpoint holds
is its ``kind``; :func:`cpc_seq.api.load_model` dispatches on it.
"""

from __future__ import annotations

import pickle
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from cpc_seq.errors import CheckpointError
from cpc_seq.io.atomic import atomic_write

FORMAT = "cpc_seq"
VERSION = 1

_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = 0x80


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` atomically (temporary file, fsync, rename)."""
    state = {"format": FORMAT, "version": VERSION, **state}
    with atomic_write(path) as f:
        torch.save(state, f)


def _sniff(path: Path) -> None:
    """Refuse, by their first bytes, files that cannot be checkpoints at all."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read checkpoint ({e.strerror or e})") from None
    if not head:
        raise CheckpointError(f"{path}: empty file, not a checkpoint")
    if head.startswith(_ZIP_MAGIC) or head[0] == _PICKLE_PROTO:
        return
    what = "a text file" if all(32 <= b < 127 or b in (9, 10, 13) for b in head) else \
        "a binary file of another format"
    if head.startswith((b"fLaC", b"RIFF", b"OggS", b"ID3")):
        what = "an audio file"
    raise CheckpointError(f"{path}: not a cpc_seq checkpoint ({what}; checkpoints are "
                          "written by cpc-seq audio train as last.pt / best.pt)")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu",
                    kinds: Sequence[str] | None = None, purpose: str = "") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; refuse anything else with one line.

    ``kinds``: the checkpoint kinds the caller can use (e.g. ``("audio_cpc",)``); any other
    kind is a :class:`CheckpointError` saying what it is and, with ``purpose``, what the
    caller wanted (``"cpc-seq audio extract reads audio"``).
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory; give the checkpoint file "
                              f"(e.g. {path / 'last.pt'})")
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    _sniff(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{path}: refused: the file holds pickled objects other than tensors and plain "
            "data (it may run code when loaded), so it is not a cpc_seq checkpoint"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, struct.error, KeyError,
            IndexError, TypeError, AttributeError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint ({reason[:200]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a cpc_seq checkpoint (no 'format: {FORMAT}' field)")
    version = state.get("version")
    if not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{path}: checkpoint has no valid version field ({version!r})")
    if version > VERSION:
        raise CheckpointError(f"{path}: written by a newer cpc_seq (checkpoint version "
                              f"{version}; this one reads up to {VERSION}); upgrade cpc_seq")
    if "config" not in state or "model" not in state:
        raise CheckpointError(f"{path}: checkpoint lacks its config or model weights")
    kind = state.setdefault("kind", "audio_cpc")
    if kinds is not None and kind not in kinds:
        want = " or ".join(kinds)
        raise CheckpointError(f"{path}: a {kind} checkpoint, but "
                              f"{purpose + ' and ' if purpose else ''}needs {want}")
    return state
