"""The one way this toolkit writes a file that must never be left half-written.

:func:`atomic_write` writes to a temporary file next to the target, fsyncs it and
renames it over the target; on any error the target is untouched and the temporary file
is removed. The file gets the permissions a plain ``open()`` would give (0666 minus the
umask), not ``mkstemp``'s 0600. OS errors (permission, disk full, a directory in the way)
become one-line :class:`~cpc_seq.errors.CpcSeqError` messages naming the path.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
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


def _write_failure(e: RuntimeError, tmp: str) -> str | None:
    """The OS-level reason behind a write that torch reports as a RuntimeError
    (``inline_container.cc ... unexpected pos``), or None when ``e`` is not a failed write.

    The OSError that torch's writer met is usually chained to ``e``; when it is not, a
    file-size limit the temporary file reached or a full file system is named, and only
    then torch's own first line."""
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError):
            return _os_reason(cur, tmp)
        cur = cur.__cause__ or cur.__context__
    text = str(e).lower()
    if not any(w in text for w in ("write", "file", "inline_container", "unexpected pos")):
        return None
    return _limit_reached(tmp) or str(e).splitlines()[0]


def _limit_reached(tmp: str) -> str | None:
    """``File too large`` when ``tmp`` reached the process's file-size limit (``ulimit
    -f``), ``No space left on device`` when its file system is full, else None."""
    with contextlib.suppress(OSError, ValueError):
        soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if soft != resource.RLIM_INFINITY and os.path.getsize(tmp) >= soft:
            return f"{os.strerror(errno.EFBIG)}: the file-size limit is {soft} bytes"
    with contextlib.suppress(OSError):
        st = os.statvfs(os.path.dirname(tmp) or ".")
        if st.f_bavail == 0:
            return os.strerror(errno.ENOSPC)
    return None


def _os_reason(e: OSError, tmp: str) -> str:
    """The reason of an OSError met while writing ``tmp``; a short write reported without
    an errno (NumPy: ``21372 requested and 10208 written``) is traced to its cause."""
    if e.errno is None:
        return _limit_reached(tmp) or str(e) or type(e).__name__
    return e.strerror or str(e) or type(e).__name__


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
        reason = _os_reason(e, tmp)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise CpcSeqError(f"{path}: cannot write ({reason}); the file was not changed"
                          ) from None
    except RuntimeError as e:  # torch.save reports a failed write as RuntimeError
        reason = _write_failure(e, tmp)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if reason is not None:
            raise CpcSeqError(f"{path}: cannot write ({reason}); the file was not changed"
                              ) from None
        raise
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
