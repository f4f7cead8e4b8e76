"""Checkpoints: atomic writes, safe loads, and the config they carry.

A checkpoint is a plain dict of tensors and plain data::

    {"format": "cpc_seq", "version": 1, "kind": "audio_cpc", "config": {...},
     "model": state_dict, "step": int, ... (optimizer, rng, sampler state when training)}

so ``cpc-seq extract --ckpt X`` needs nothing else. Loading always uses
``torch.load(weights_only=True)``: a file carrying pickled objects that would run code is
refused with a :class:`~cpc_seq.errors.CheckpointError`.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import torch

from cpc_seq.errors import CheckpointError, CpcSeqError

FORMAT = "cpc_seq"
VERSION = 1


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path``; on success fsync and rename it to ``path``.

    On any error the temporary file is removed and ``path`` is untouched. Disk-full and
    permission errors are re-raised as :class:`CpcSeqError` naming the path.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise CpcSeqError(f"{path}: cannot write ({e.strerror or e})") from None
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise CpcSeqError(f"{path}: cannot write ({e.strerror or e}); nothing was written") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` atomically (temporary file, fsync, rename)."""
    state = {"format": FORMAT, "version": VERSION, **state}
    with atomic_write(path) as f:
        torch.save(state, f)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; refuse anything else."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "unsupported content"
        raise CheckpointError(
            f"{path}: refused: the file holds objects that plain weights loading does not allow "
            f"(possibly code); {first}"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, struct.error) as e:
        raise CheckpointError(f"{path}: not a readable checkpoint ({e})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a cpc_seq checkpoint (no 'format: {FORMAT}' field)")
    if "config" not in state or "model" not in state:
        raise CheckpointError(f"{path}: checkpoint lacks its config or model weights")
    return state
