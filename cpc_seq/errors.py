"""The project's own error types.

Every problem with user input (files, configs, checkpoints) is raised as a
:class:`CpcSeqError` subclass whose message names the file, line, utterance or key.
The command line prints ``error: <message>`` and exits with status 2 instead of a
traceback.
"""

from __future__ import annotations


class CpcSeqError(Exception):
    """Base class of all errors raised for bad input."""


class DataError(CpcSeqError):
    """Bad data: a missing/unreadable file, a malformed line, inconsistent keys."""


class ConfigError(CpcSeqError):
    """Unknown config key, wrong type, or a value out of range."""


class CheckpointError(CpcSeqError):
    """A checkpoint that cannot be loaded safely or lacks what is needed."""


def where(path: object, line: int | None = None) -> str:
    """Format a location as ``path:line`` (or just ``path``) for error messages."""
    return f"{path}:{line}" if line is not None else f"{path}"
