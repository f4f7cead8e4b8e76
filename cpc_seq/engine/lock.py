"""One training run per ``out_dir`` at a time.

:class:`RunLock` holds an exclusive POSIX record lock (``lockf``) on ``OUT_DIR/.lock``
for as long as a run owns the directory. (Not ``flock``: a ``flock`` is shared with forked
children, so data-reader workers that outlive a killed run for a few seconds would keep
the directory locked; a record lock belongs to the process alone.) A second run into the same directory (started at the same time, or
a ``--resume`` of a run that is still going) is refused with a one-line error naming the
directory and the process that holds it, instead of both writing ``last.pt`` and
``log.jsonl``. The kernel drops the lock when the process ends, however it ends
(``kill -9`` included), so a stale lock file never blocks the next run; the file itself
stays and is harmless.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import IO

from cpc_seq.errors import CpcSeqError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no locking
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".lock"


class RunLock:
    """An exclusive, non-blocking lock on ``out_dir/.lock`` (see the module doc)."""

    def __init__(self, out_dir: str | Path) -> None:
        self.path = Path(out_dir) / LOCK_NAME
        self._file: IO[str] | None = None

    def acquire(self) -> RunLock:
        """Take the lock, or raise :class:`~cpc_seq.errors.CpcSeqError` naming the holder."""
        if fcntl is None or self._file is not None:
            return self
        try:
            f = open(self.path, "a+")  # noqa: SIM115 - held until release()
        except OSError as e:
            raise CpcSeqError(f"{self.path}: cannot create the run's lock file "
                              f"({e.strerror or e})") from None
        try:
            fcntl.lockf(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            f.close()
            raise CpcSeqError(
                f"{self.path.parent}: another training is running in this train.out_dir "
                f"(process {holder} holds {self.path}); wait for it to end or choose "
                "another train.out_dir") from None
        with contextlib.suppress(OSError):
            f.seek(0)
            f.truncate()
            f.write(f"{os.getpid()}\n")
            f.flush()
        self._file = f
        return self

    def release(self) -> None:
        """Drop the lock (closing the file drops it); safe to call twice."""
        f, self._file = self._file, None
        if f is not None:
            with contextlib.suppress(OSError):
                f.close()

    @property
    def held(self) -> bool:
        return self._file is not None
