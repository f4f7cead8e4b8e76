"""The one way this toolkit writes a file that must never be left half-written.

:func:`atomic_write` writes to a temporary file next to the target, fsyncs it and
renames it over the target; on any error the target is untouched and the temporary file
is removed. The file gets the permissions a plain ``open()`` would give (0666 minus the
umask), not ``mkstemp``'s 0600. OS errors (permission, disk full, a directory in the way)
become one-line :class:`~cpc_seq.errors.CpcSeqError` messages naming the path.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from cpc_seq.errors import CpcSeqError


def current_umask() -> int:
    """The process umask (read without changing it for longer than an instant)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def os_error_message(path: str | Path, e: OSError, what: str = "cannot write") -> str:
    """``PATH: cannot write (No space left on device)`` for an OSError ``e``."""
    reason = e.strerror or str(e) or type(e).__name__
    return f"{path}: {what} ({reason})"


def prepare_dir(path: str | Path, what: str = "output directory") -> Path:
    """``mkdir -p`` with a one-line error (naming ``path``) instead of a traceback."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CpcSeqError(f"{path}: {what} is a file, not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CpcSeqError(os_error_message(path, e, f"cannot create {what}")) from None
    return path


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path``; on success fsync and rename it to ``path``."""
    path = Path(path)
    if path.is_dir():
        raise CpcSeqError(f"{path}: is a directory, cannot write a file there")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, 0o666 & ~current_umask())
    except OSError as e:
        raise CpcSeqError(os_error_message(path, e)) from None
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise CpcSeqError(os_error_message(path, e) + "; the file was not changed") from None
    except RuntimeError as e:  # torch.save reports a failed write as RuntimeError
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        text = str(e).lower()
        if any(w in text for w in ("write", "file", "inline_container", "unexpected pos")):
            raise CpcSeqError(f"{path}: cannot write ({str(e).splitlines()[0]}); "
                              "the file was not changed") from None
        raise
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
