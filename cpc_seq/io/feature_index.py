"""Lazy access to stored features: an index of where each utterance's matrix lies.

:func:`open_features` reads only the listing (``scp:F.scp``: one ``utt ark:offset``
line per utterance; ``npy:DIR``: the file names) and returns a :class:`FeatureIndex`,
a read-only mapping ``utt -> (T, D) float32 tensor`` that reads an utterance's matrix
from disk each time it is looked up and keeps nothing. Probes on corpora larger than
memory (the CPC paper's LibriSpeech-100 protocol is about 30 M frames, 30 GB of 256-dim
float32) read through it in bounded memory; :func:`cpc_seq.io.features.read_features`
is the same index read in full.

Every problem is a :class:`~cpc_seq.errors.DataError` naming the scp file and line (or
the npy file): an undecodable or malformed line and a duplicate key when the index is
opened, a missing or truncated ark entry or a wrong shape when the utterance is read.
Piped entries (``cmd |``), which kaldiio would run in a shell, are refused.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import torch

from cpc_seq.errors import CpcSeqError, DataError

__all__ = ["FeatureIndex", "open_features"]

# A binary Kaldi matrix at an ark offset: "\0B", a type token, then rows and cols, each
# an int32 preceded by its size byte (4).
_HEADER = struct.Struct("<2s3sBiBi")
_PLAIN_MATRIX = (b"FM ", b"DM ")


class FeatureIndex(Mapping[str, torch.Tensor]):
    """``utt -> (T, D) float32`` features read from disk on every lookup.

    Keys keep the order of the listing (scp lines, sorted npy file names). ``where(utt)``
    is the ``file:line`` (or npy path) of an utterance; :meth:`num_frames` reads only
    the header of a plain (uncompressed) Kaldi matrix or npy file.
    """

    def __init__(self, source: str, entries: dict[str, tuple[str, int]], kind: str) -> None:
        self.source = source  # the scp path or npy directory, for messages
        self.kind = kind  # "scp" or "npy"
        self._entries = entries  # utt -> (scp value or npy path, scp line or 0)

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __contains__(self, utt: object) -> bool:
        return utt in self._entries

    def where(self, utt: str) -> str:
        """``F.scp:LINE`` of an scp entry, or the npy file of ``utt``."""
        value, line = self._entries[utt]
        return f"{self.source}:{line}" if self.kind == "scp" else value

    def __getitem__(self, utt: str) -> torch.Tensor:
        value, _ = self._entries[utt]
        if self.kind == "npy":
            try:
                arr = np.load(value, allow_pickle=False).astype(np.float32)
            except (OSError, ValueError) as e:
                raise DataError(f"{value}: cannot read ({e})") from None
            if arr.ndim != 2:
                raise DataError(f"{value}: expected a (T, D) array, got shape {arr.shape}")
            return torch.from_numpy(arr)
        import kaldiio

        try:
            mat = np.array(kaldiio.load_mat(value), dtype=np.float32)
        except Exception as e:  # kaldiio raises many types for bad entries
            raise DataError(f"{self.where(utt)}: cannot load {value!r} "
                            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
                            ) from None
        if mat.ndim != 2:
            raise DataError(f"{self.where(utt)}: {utt} is not a matrix (shape {mat.shape})")
        return torch.from_numpy(mat)

    def num_frames(self, utt: str) -> int:
        """Rows ``T`` of ``utt``'s matrix, from its header where that is enough (a plain
        float or double matrix at ``ark:offset``, an npy file); otherwise by reading it."""
        value, _ = self._entries[utt]
        if self.kind == "npy":
            try:
                return int(np.load(value, mmap_mode="r", allow_pickle=False).shape[0])
            except (OSError, ValueError):
                return int(self[utt].shape[0])  # the read names the problem
        path, _, offset = value.rpartition(":")
        if path and offset.isdigit():
            try:
                with open(path, "rb") as f:
                    f.seek(int(offset))
                    head = f.read(_HEADER.size)
            except OSError:
                head = b""
            if len(head) == _HEADER.size:
                binary, token, s1, rows, s2, _cols = _HEADER.unpack(head)
                if binary == b"\0B" and token in _PLAIN_MATRIX and s1 == s2 == 4 and rows >= 0:
                    return int(rows)
        return int(self[utt].shape[0])


def _read_scp(path: Path) -> dict[str, tuple[str, int]]:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read feature scp ({e.strerror or e})") from None
    entries: dict[str, tuple[str, int]] = {}
    for n, line in enumerate(raw.split(b"\n"), start=1):
        try:
            text = line.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise DataError(f"{path}:{n}: not UTF-8 text") from None
        if n == 1:  # a UTF-8 byte-order mark is not part of the first key
            text = text.removeprefix("\ufeff")
        if not text:
            continue
        parts = text.split(maxsplit=1)
        if len(parts) != 2:
            raise DataError(f"{path}:{n}: expected 'utt ark:offset', got {text[:60]!r}")
        utt, value = parts
        if utt in entries:
            raise DataError(f"{path}:{n}: duplicate utterance {utt!r} "
                            f"(first on line {entries[utt][1]})")
        if "|" in value or value.split(":")[0].strip() == "-":
            # kaldiio would run "cmd |" (also "cmd |:offset") in a shell, or read stdin
            raise DataError(f"{path}:{n}: piped entry {value[:60]!r} refused in a feature "
                            "scp (it would run a shell); write the features to an ark")
        entries[utt] = (value, n)
    if not entries:
        raise DataError(f"{path}: no features listed")
    return entries


def open_features(rspec: str) -> FeatureIndex:
    """Index ``scp:F.scp`` (Kaldi matrices via kaldiio) or ``npy:DIR`` without reading
    any matrix; see :class:`FeatureIndex`.

    Raises:
        DataError: an unreadable, empty or malformed listing (naming ``file:line``).
        CpcSeqError: a specifier that is neither ``scp:`` nor ``npy:``.
    """
    if rspec.startswith("scp:"):
        path = Path(rspec[4:])
        return FeatureIndex(str(path), _read_scp(path), "scp")
    if rspec.startswith("npy:"):
        d = Path(rspec[4:])
        files = sorted(d.glob("*.npy")) if d.is_dir() else []
        if not files:
            raise DataError(f"{d}: no .npy feature files")
        return FeatureIndex(str(d), {p.stem: (str(p), 0) for p in files}, "npy")
    raise CpcSeqError(f"{rspec}: expected scp:FEATS.scp or npy:DIR")
