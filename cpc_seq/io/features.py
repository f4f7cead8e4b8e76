"""Feature files: write them crash-safely, read them back, for every modality.

Outputs (``wspecifier``), as Kaldi's tools spell them:

- ``ark,scp:feats.ark,feats.scp``: Kaldi matrices via kaldiio; an interrupted run never
  leaves an scp pointing at a truncated entry: entries are appended to the ark and
  recorded in ``feats.scp.partial`` only after they are fully written; the final
  ``feats.scp`` appears (atomically) when every item is done. ``skip_existing`` resumes
  from the partial record (truncating any half-written tail of the ark).
- ``ark:feats.ark``: the same without scp.
- ``npy:DIR``: one ``DIR/<utt>.npy`` per item (written atomically).

Inputs (``rspecifier``) for probes and ABX: ``scp:feats.scp`` or ``npy:DIR``
(:func:`read_features`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import kaldiio
import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from cpc_seq.errors import CpcSeqError, DataError
from cpc_seq.io.atomic import atomic_write, os_error_message, prepare_dir


def length_batches(lengths: dict[str, int], max_samples: int) -> Iterator[list[str]]:
    """Group utterance ids, longest first, so that B * max_len <= ``max_samples``."""
    order = sorted(lengths, key=lambda u: (-lengths[u], u))
    batch: list[str] = []
    for utt in order:
        if batch and (len(batch) + 1) * lengths[batch[0]] > max_samples:
            yield batch
            batch = []
        batch.append(utt)
    if batch:
        yield batch


@dataclass
class Wspec:
    """A parsed output specifier: ``kind`` in {ark, ark_scp, npy}."""

    kind: str
    ark: Path | None = None
    scp: Path | None = None
    npy_dir: Path | None = None


def parse_wspecifier(spec: str) -> Wspec:
    """``ark,scp:A.ark,A.scp`` | ``ark:A.ark`` | ``npy:DIR`` (``,t`` text ark unsupported)."""
    if ":" not in spec:
        raise CpcSeqError(f"output {spec!r}: expected ark,scp:FEATS.ark,FEATS.scp, ark:F.ark or npy:DIR")
    head, rest = spec.split(":", 1)
    opts = set(head.split(","))
    if opts == {"npy"}:
        return Wspec("npy", npy_dir=Path(rest))
    if opts == {"ark", "scp"}:
        parts = rest.split(",")
        if len(parts) != 2 or not all(parts):
            raise CpcSeqError(f"output {spec!r}: ark,scp needs two paths: FEATS.ark,FEATS.scp")
        return Wspec("ark_scp", ark=Path(parts[0]), scp=Path(parts[1]))
    if opts == {"ark"}:
        return Wspec("ark", ark=Path(rest))
    raise CpcSeqError(f"output {spec!r}: unsupported options {head!r} (use ark,scp / ark / npy)")


def _strip_prefix(path: str | Path) -> Path:
    path = str(path)
    for prefix in ("ark,t:", "ark:"):
        if path.startswith(prefix):
            path = path[len(prefix) :]
    return Path(path)


def _probe_dir(d: Path, name: Path, what: str) -> None:
    """Create and remove a file in ``d``; an OSError names ``name``."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".cpc_seq.", suffix=".probe", dir=d)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise CpcSeqError(os_error_message(name, e, f"cannot write the {what}")) from None


def _check_file_target(path: Path, what: str) -> None:
    """Refuse, before any work, an output file that could not be written: a directory in
    its place, a file where its directory should be, a directory that cannot be created
    or written to. Creates the parent directory."""
    if path.is_dir():
        raise CpcSeqError(f"{path}: {what} is a directory, expected a file")
    prepare_dir(path.parent, f"directory of the {what}")
    _probe_dir(path.parent, path, what)
    if path.exists() and not os.access(path, os.W_OK):
        raise CpcSeqError(os_error_message(path, PermissionError(errno.EACCES, "Permission "
                                           "denied"), f"cannot write the {what}"))


#: Longest item id (UTF-8 bytes) in ``npy:`` output: ``<id>.npy`` and the temporary file
#: ``.<id>.npy.XXXXXXXX.tmp`` next to it must fit in a 255-byte file name.
MAX_NPY_ID_BYTES = 255 - len(".npy") - len("..12345678.tmp")


def item_id_problem(utt: object, kind: str) -> str | None:
    """Why ``utt`` cannot be an item id in output of ``kind`` (``ark``, ``ark_scp`` or
    ``npy``), or None when it can.

    Every output: a non-empty string without whitespace or control characters (an ark key
    or scp line would be split or torn). ``npy``: the id becomes the file name
    ``DIR/<id>.npy``, so it also may not contain ``/`` or ``\\``, be ``.`` or ``..``, or be
    longer than :data:`MAX_NPY_ID_BYTES` bytes (``../../x`` would write outside ``DIR``,
    ``sub/x`` into a subfolder that ``npy:`` reading ignores).
    """
    if not isinstance(utt, str) or not utt:
        return "an id must be a non-empty string"
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in utt):
        return "an id may not contain whitespace or control characters"
    try:
        size = len(utt.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate, e.g. from a JSON "\\ud800" escape
        return "an id must be valid Unicode (it holds a lone surrogate)"
    if kind == "npy":
        if "/" in utt or "\\" in utt:
            return "an id may not contain '/' or '\\' in npy: output (it names the file DIR/<id>.npy)"
        if utt in (".", ".."):
            return "an id may not be '.' or '..' in npy: output"
        if size > MAX_NPY_ID_BYTES:
            return (f"an id may not be longer than {MAX_NPY_ID_BYTES} bytes in npy: output "
                    "(file name limit)")
    return None


def check_item_ids(ids: Iterable[str], spec: Wspec, what: str = "utterance") -> None:
    """Refuse, before any work, ids that cannot be written to ``spec`` (see
    :func:`item_id_problem`); the message names the first such id.

    Raises:
        DataError: ``utterance '../../x': an id may not contain '/' ...``.
    """
    for utt in ids:
        problem = item_id_problem(utt, spec.kind)
        if problem is not None:
            dest = f" (output {spec.npy_dir or spec.ark})"
            raise DataError(f"{what} {utt!r}: {problem}{dest}; rename it")


def check_outputs(wspec: str | Wspec, num_frames_path: str | Path | None = None,
                  ids: Iterable[str] | None = None, what: str = "utterance") -> Wspec:
    """Check every output of an extraction before any work (see :func:`_check_file_target`):
    the ark, its ``.partial`` record, the scp or the npy directory, and the
    ``utt2num_frames`` target; with ``ids``, also that each can name an item there
    (:func:`check_item_ids`). Returns the parsed specifier.

    Raises:
        CpcSeqError: one line naming the path that cannot be written, or two outputs that
            are the same file.
        DataError: an id that cannot be written (naming it).
    """
    spec = parse_wspecifier(wspec) if isinstance(wspec, str) else wspec
    if ids is not None:
        check_item_ids(ids, spec, what)
    targets: list[tuple[Path, str]] = []
    if spec.kind == "npy":
        assert spec.npy_dir is not None
        prepare_dir(spec.npy_dir, "npy output directory")
        _probe_dir(spec.npy_dir, spec.npy_dir, "npy output directory")
    else:
        assert spec.ark is not None
        targets.append((spec.ark, "ark"))
        targets.append((Path(str(spec.scp or spec.ark) + ".partial"), "progress record"))
        if spec.scp is not None:
            targets.append((spec.scp, "scp"))
    if num_frames_path is not None:
        targets.append((_strip_prefix(num_frames_path), "utt2num_frames file"))
    seen: dict[Path, str] = {}
    for path, what in targets:
        key = Path(os.path.abspath(path))
        if key in seen:
            raise CpcSeqError(f"{path}: given as both the {seen[key]} and the {what}")
        seen[key] = what
        _check_file_target(path, what)
    return spec


class FeatureWriter:
    """Append-only, crash-safe writer for ark(/scp) or per-utterance npy outputs.

    An OS error (disk full, permission, a directory in the way) is a one-line
    :class:`~cpc_seq.errors.CpcSeqError` naming the path and saying what is left on disk
    and that ``--skip-existing`` continues from it.
    """

    def __init__(self, spec: Wspec, resume: bool) -> None:
        self.spec = spec
        self.done: dict[str, str] = {}  # utt -> scp value (ark path:offset) or npy path
        if spec.kind == "npy":
            assert spec.npy_dir is not None
            prepare_dir(spec.npy_dir, "npy output directory")
            if resume:
                for p in spec.npy_dir.glob("*.npy"):
                    self.done[p.stem] = str(p)
            return
        assert spec.ark is not None
        prepare_dir(spec.ark.parent, "directory of the ark")
        self.progress = Path(str(spec.scp or spec.ark) + ".partial")
        try:
            self._open(resume)
        except OSError as e:
            raise CpcSeqError(os_error_message(e.filename or spec.ark, e)) from None

    def _open(self, resume: bool) -> None:
        spec = self.spec
        assert spec.ark is not None
        valid_end = 0
        if resume and self.progress.exists() and spec.ark.exists():
            for line in self.progress.read_text(errors="replace").splitlines():
                parts = line.split()
                if len(parts) == 3 and parts[2].isdigit():  # complete only with its end
                    self.done[parts[0]] = parts[1]
                    valid_end = int(parts[2])
            # rewrite without a torn last line, so that new records start on a line
            with atomic_write(self.progress, "w") as f:
                for utt, val in self.done.items():
                    f.write(f"{utt} {val} {valid_end}\n")
        elif resume and spec.scp is not None and spec.scp.exists() and spec.ark.exists():
            for line in spec.scp.read_text().splitlines():
                parts = line.split(maxsplit=1)
                if len(parts) == 2:
                    self.done[parts[0]] = parts[1]
            valid_end = spec.ark.stat().st_size
            with open(self.progress, "w") as f:
                for utt, val in self.done.items():
                    f.write(f"{utt} {val} {valid_end}\n")
        mode = "r+b" if (self.done and spec.ark.exists()) else "wb"
        self.ark = open(spec.ark, mode)  # noqa: SIM115 - closed in close()
        self.ark.truncate(valid_end)
        self.ark.seek(valid_end)
        if not self.done:
            with contextlib.suppress(FileNotFoundError):
                self.progress.unlink()
        self.prog = open(self.progress, "a")  # noqa: SIM115

    def left_behind(self) -> str:
        """What an interrupted run leaves on disk, for error messages."""
        n = len(self.done)
        if self.spec.kind == "npy":
            return (f"{n} items are complete in {self.spec.npy_dir}; rerun with "
                    "--skip-existing to continue")
        if not n:
            return (f"{self.spec.ark} and {self.progress} hold no complete item yet; rerun "
                    "(with or without --skip-existing) once the cause is fixed")
        return (f"{n} items are complete in {self.spec.ark} (listed in {self.progress}); "
                "rerun with --skip-existing to continue")

    def write_batch(self, entries: list[tuple[str, np.ndarray]]) -> None:
        """Append ``(utt, (T, D) features)`` entries and make them durable with one fsync.

        The entries are recorded in the ``.partial`` progress file only after the ark is
        fsynced, so a recorded entry is always complete on disk; one fsync per batch
        rather than per utterance matters for many short items (FSDD digits, sentences).
        npy output writes one atomic file per entry.
        """
        check_item_ids([utt for utt, _ in entries], self.spec)
        if self.spec.kind == "npy":
            assert self.spec.npy_dir is not None
            for utt, feats in entries:
                path = self.spec.npy_dir / f"{utt}.npy"
                try:
                    with atomic_write(path) as f:
                        np.save(f, np.ascontiguousarray(feats, dtype=np.float32))
                except CpcSeqError as e:
                    raise CpcSeqError(f"{e}; {self.left_behind()}") from None
                self.done[utt] = str(path)
            return
        records = []
        try:
            for utt, feats in entries:
                start = self.ark.tell()
                kaldiio.save_ark(self.ark, {utt: np.ascontiguousarray(feats, dtype=np.float32)})
                records.append((utt, f"{self.spec.ark}:{start + len(utt.encode()) + 1}",
                                self.ark.tell()))
            self.ark.flush()
            os.fsync(self.ark.fileno())
        except OSError as e:
            raise CpcSeqError(f"{os_error_message(self.spec.ark, e)}; "
                              f"{self.left_behind()}") from None
        try:
            for utt, value, end in records:
                self.prog.write(f"{utt} {value} {end}\n")
                self.done[utt] = value
            self.prog.flush()
        except OSError as e:
            raise CpcSeqError(f"{os_error_message(self.progress, e)}; "
                              f"{self.left_behind()}") from None

    def close(self, complete: bool) -> None:
        """Close files; when ``complete``, write the final scp atomically."""
        if self.spec.kind == "npy":
            return
        for f in (self.ark, self.prog):
            with contextlib.suppress(OSError):  # a failed flush was reported by the write
                f.close()
        if complete:
            if self.spec.scp is not None:
                try:
                    with atomic_write(self.spec.scp, "w") as f:
                        for utt in sorted(self.done):
                            f.write(f"{utt} {self.done[utt]}\n")
                except CpcSeqError as e:
                    raise CpcSeqError(f"{e}; {self.left_behind()}") from None
            with contextlib.suppress(FileNotFoundError):
                self.progress.unlink()


Featurizer = Callable[[list[Tensor]], list[np.ndarray]]


def extract_to(
    featurize: Featurizer,
    load: Callable[[str], np.ndarray],
    utts: list[str],
    wspec: str,
    skip_existing: bool = False,
    max_batch_samples: int = 10 * 16000,
    num_frames_path: str | Path | None = None,
    progress: bool = True,
    skip_bad: bool = False,
    desc: str = "extract",
    min_samples: int = 1,
) -> dict[str, int]:
    """Extract features for ``utts`` (``load(utt) -> float32 (N,)``, e.g. samples at the
    model's rate) into ``wspec`` with ``featurize``, in length-sorted batches of at most
    ``max_batch_samples`` padded samples. An item shorter than ``min_samples`` (one frame)
    is an error, or skipped with ``skip_bad``. Returns ``{utt: num_frames}`` written by
    this call.
    """
    spec = check_outputs(wspec, num_frames_path, ids=utts)
    writer = FeatureWriter(spec, resume=skip_existing)
    todo = [u for u in utts if u not in writer.done]
    waves: dict[str, Tensor] = {}
    num_frames: dict[str, int] = {}
    bad: list[str] = []
    complete = False
    bar = tqdm(total=len(utts), initial=len(utts) - len(todo), desc=desc,
               unit="utt", disable=not progress)
    try:
        # Load lazily in chunks so memory stays bounded for large sets.
        chunk = 2000
        for c0 in range(0, len(todo), chunk):
            waves.clear()
            for utt in todo[c0 : c0 + chunk]:
                try:
                    w = torch.from_numpy(np.asarray(load(utt), dtype=np.float32))
                except DataError as e:
                    if not skip_bad:
                        raise
                    tqdm.write(f"warning: {e}; skipped")
                    bad.append(utt)
                    continue
                if len(w) < min_samples:
                    msg = (f"utterance {utt}: {len(w)} samples is shorter than one frame "
                           f"({min_samples} samples)")
                    if not skip_bad:
                        raise DataError(msg)
                    tqdm.write(f"warning: {msg}; skipped")
                    bad.append(utt)
                    continue
                waves[utt] = w
            lens = {u: len(w) for u, w in waves.items()}
            for batch in length_batches(lens, max_batch_samples):
                feats = featurize([waves[u] for u in batch])
                writer.write_batch(list(zip(batch, feats)))
                num_frames.update((utt, arr.shape[0]) for utt, arr in zip(batch, feats))
                bar.update(len(batch))
        complete = True
    finally:
        bar.close()
        writer.close(complete=complete)
    if bad:
        tqdm.write(f"skipped {len(bad)} bad utterances (first: {bad[0]})")
    if num_frames_path is not None and complete:
        write_num_frames(num_frames_path, writer, num_frames)
    return num_frames


def write_num_frames(path: str | Path, writer: FeatureWriter, now: dict[str, int]) -> None:
    """Write ``utt2num_frames`` (``ark,t:PATH`` or a plain path) atomically."""
    path = _strip_prefix(path)
    counts = dict(now)
    for utt, val in writer.done.items():
        if utt not in counts:
            if writer.spec.kind == "npy":
                counts[utt] = int(np.load(val, mmap_mode="r").shape[0])
            else:
                counts[utt] = int(kaldiio.load_mat(val).shape[0])
    with atomic_write(path, "w") as f:
        for utt in sorted(counts):
            f.write(f"{utt} {counts[utt]}\n")


def read_features(rspec: str) -> dict[str, torch.Tensor]:
    """``scp:F.scp`` (Kaldi matrices via kaldiio) or ``npy:DIR`` -> {utt: (T, D) float32},
    all read into memory (:func:`cpc_seq.io.feature_index.open_features` reads them one
    utterance at a time instead).

    Every problem (undecodable line, missing/truncated ark entry, wrong shape) is a
    DataError naming the scp file and line. Piped entries (``cmd |``), which kaldiio
    would run in a shell, are refused.
    """
    from cpc_seq.io.feature_index import open_features

    index = open_features(rspec)
    return {utt: index[utt] for utt in index}
