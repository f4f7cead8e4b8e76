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
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import kaldiio
import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from cpc_seq.errors import CpcSeqError, DataError
from cpc_seq.io.atomic import atomic_write


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


class FeatureWriter:
    """Append-only, crash-safe writer for ark(/scp) or per-utterance npy outputs."""

    def __init__(self, spec: Wspec, resume: bool) -> None:
        self.spec = spec
        self.done: dict[str, str] = {}  # utt -> scp value (ark path:offset) or npy path
        if spec.kind == "npy":
            assert spec.npy_dir is not None
            spec.npy_dir.mkdir(parents=True, exist_ok=True)
            if resume:
                for p in spec.npy_dir.glob("*.npy"):
                    self.done[p.stem] = str(p)
            return
        assert spec.ark is not None
        spec.ark.parent.mkdir(parents=True, exist_ok=True)
        self.progress = Path(str(spec.scp or spec.ark) + ".partial")
        valid_end = 0
        if resume and self.progress.exists() and spec.ark.exists():
            for line in self.progress.read_text().splitlines():
                parts = line.split()
                if len(parts) == 3:  # a line is complete only with its end offset
                    self.done[parts[0]] = parts[1]
                    valid_end = int(parts[2])
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

    def write(self, utt: str, feats: np.ndarray) -> None:
        """Write one utterance durably (see :meth:`write_batch`)."""
        self.write_batch([(utt, feats)])

    def write_batch(self, entries: list[tuple[str, np.ndarray]]) -> None:
        """Append ``(utt, (T, D) features)`` entries and make them durable with one fsync.

        The entries are recorded in the ``.partial`` progress file only after the ark is
        fsynced, so a recorded entry is always complete on disk; one fsync per batch
        rather than per utterance matters for many short items (FSDD digits, sentences).
        npy output writes one atomic file per entry.
        """
        if self.spec.kind == "npy":
            assert self.spec.npy_dir is not None
            for utt, feats in entries:
                path = self.spec.npy_dir / f"{utt}.npy"
                with atomic_write(path) as f:
                    np.save(f, np.ascontiguousarray(feats, dtype=np.float32))
                self.done[utt] = str(path)
            return
        records = []
        for utt, feats in entries:
            start = self.ark.tell()
            kaldiio.save_ark(self.ark, {utt: np.ascontiguousarray(feats, dtype=np.float32)})
            records.append((utt, f"{self.spec.ark}:{start + len(utt.encode()) + 1}",
                            self.ark.tell()))
        self.ark.flush()
        os.fsync(self.ark.fileno())
        for utt, value, end in records:
            self.prog.write(f"{utt} {value} {end}\n")
            self.done[utt] = value
        self.prog.flush()

    def close(self, complete: bool) -> None:
        """Close files; when ``complete``, write the final scp atomically."""
        if self.spec.kind == "npy":
            return
        self.ark.close()
        self.prog.close()
        if complete:
            if self.spec.scp is not None:
                with atomic_write(self.spec.scp, "w") as f:
                    for utt in sorted(self.done):
                        f.write(f"{utt} {self.done[utt]}\n")
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
    spec = parse_wspecifier(wspec)
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
    path = str(path)
    for prefix in ("ark,t:", "ark:"):
        if path.startswith(prefix):
            path = path[len(prefix) :]
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
    """``scp:F.scp`` (Kaldi matrices via kaldiio) or ``npy:DIR`` -> {utt: (T, D) float32}.

    Every problem (undecodable line, missing/truncated ark entry, wrong shape) is a
    DataError naming the scp file and line.
    """
    import kaldiio

    if rspec.startswith("scp:"):
        path = Path(rspec[4:])
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise DataError(f"{path}: cannot read feature scp ({e.strerror or e})") from None
        feats: dict[str, torch.Tensor] = {}
        for n, line in enumerate(raw.split(b"\n"), start=1):
            try:
                text = line.decode("utf-8").strip()
            except UnicodeDecodeError:
                raise DataError(f"{path}:{n}: not UTF-8 text") from None
            if not text:
                continue
            parts = text.split(maxsplit=1)
            if len(parts) != 2:
                raise DataError(f"{path}:{n}: expected 'utt ark:offset', got {text[:60]!r}")
            utt, value = parts
            if utt in feats:
                raise DataError(f"{path}:{n}: duplicate utterance {utt!r}")
            try:
                mat = np.array(kaldiio.load_mat(value), dtype=np.float32)
            except Exception as e:  # kaldiio raises many types for bad entries
                raise DataError(f"{path}:{n}: cannot load {value!r} "
                                f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
                                ) from None
            if mat.ndim != 2:
                raise DataError(f"{path}:{n}: {utt} is not a matrix (shape {mat.shape})")
            feats[utt] = torch.from_numpy(mat)
        if not feats:
            raise DataError(f"{path}: no features listed")
        return feats
    if rspec.startswith("npy:"):
        d = Path(rspec[4:])
        files = sorted(d.glob("*.npy")) if d.is_dir() else []
        if not files:
            raise DataError(f"{d}: no .npy feature files")
        out = {}
        for p in files:
            try:
                arr = np.load(p, allow_pickle=False).astype(np.float32)
            except (OSError, ValueError) as e:
                raise DataError(f"{p}: cannot read ({e})") from None
            if arr.ndim != 2:
                raise DataError(f"{p}: expected a (T, D) array, got shape {arr.shape}")
            out[p.stem] = torch.from_numpy(arr)
        return out
    raise CpcSeqError(f"{rspec}: expected scp:FEATS.scp or npy:DIR")
