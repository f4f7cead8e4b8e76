"""Frame-level feature extraction from a trained (or random-init) CPC model.

Frame convention: for N samples at the model's rate, layers ``z`` and ``c`` have
``T = N // 160`` frames; frame t is centred on samples [160 t, 160 (t+1)) (10 ms hop at
16 kHz). ``z`` is computed from a receptive field of 465 samples around that span;
``c`` summarises frames 0..t (causal). Label files with one label per 10 ms, label t
for the centre ``160 t + 80``, line up with the features by construction.

Each utterance is normalised to zero mean and unit variance (as the training windows
are), then utterances are batched by length with zero padding; padded batches give the
same features as one utterance at a time (the encoder masks padding layer by layer).

Outputs (``wspecifier``):

- ``ark,scp:feats.ark,feats.scp``: Kaldi matrices via kaldiio; an interrupted run never
  leaves an scp pointing at a truncated entry: entries are appended to the ark and
  recorded in ``feats.scp.partial`` only after they are fully written; the final
  ``feats.scp`` appears (atomically) when every utterance is done. ``--skip-existing``
  resumes from the partial record (truncating any half-written tail of the ark).
- ``ark:feats.ark``: the same without scp.
- ``npy:DIR``: one ``DIR/<utt>.npy`` per utterance (written atomically).
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

from cpc_seq.audio.model import CPCModel
from cpc_seq.errors import CpcSeqError, DataError
from cpc_seq.io.checkpoint import atomic_write


def normalize_padded(x: Tensor, lengths: Tensor, eps: float = 1e-5) -> Tensor:
    """Per-utterance zero mean / unit variance over the valid samples; padding stays 0.

    x: (B, N), lengths: (B,) -> (B, N).
    """
    mask = (torch.arange(x.shape[1], device=x.device).unsqueeze(0) < lengths.unsqueeze(1)).to(x.dtype)
    n = lengths.to(x.dtype).clamp_min(1).unsqueeze(1)
    mean = (x * mask).sum(1, keepdim=True) / n
    var = (((x - mean) * mask) ** 2).sum(1, keepdim=True) / (n - 1).clamp_min(1)
    return (x - mean) / (var.sqrt() + eps) * mask


def layer_frame_lengths(model: CPCModel, lengths: Tensor, layer: str) -> Tensor:
    """Valid frames of ``layer`` for inputs of ``lengths`` samples."""
    if layer in ("z", "c"):
        return model.encoder.frame_lengths(lengths)
    idx = int(layer.removeprefix("conv")) - 1
    return model.encoder._layer_lengths(lengths)[idx]


@torch.no_grad()
def run_layers(
    model: CPCModel, waves: list[Tensor], layers: list[str], device: torch.device | None = None,
) -> list[dict[str, Tensor]]:
    """Features of a padded batch: for each wave, ``{layer: (T_layer, H)}`` (on CPU, fp32)."""
    device = device or next(model.parameters()).device
    lengths = torch.tensor([len(w) for w in waves], dtype=torch.long)
    x = torch.zeros(len(waves), int(lengths.max()))
    for i, w in enumerate(waves):
        x[i, : len(w)] = w
    x = normalize_padded(x, lengths).to(device)
    out = model.forward_layers(x, lengths.to(device))
    named = {"z": out.z, "c": out.c}
    for i, t in enumerate(out.layers):
        named[f"conv{i + 1}"] = t
    result = []
    for i in range(len(waves)):
        item = {}
        for name in layers:
            n = int(layer_frame_lengths(model, lengths[i : i + 1], name)[0])
            item[name] = named[name][i, :n].float().cpu()
        result.append(item)
    return result


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


def model_featurizer(model: CPCModel, layer: str = "c", device: torch.device | None = None,
                     bf16: bool = False) -> Featurizer:
    """Batch featurizer for one layer of a CPC model: waves -> [(T, H) float32]."""
    if layer not in model.layer_names:
        raise CpcSeqError(f"--layer {layer!r}: one of {', '.join(model.layer_names)}")
    model.eval()

    def featurize(waves: list[Tensor]) -> list[np.ndarray]:
        dev = device or next(model.parameters()).device
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            return [f[layer].numpy() for f in run_layers(model, waves, [layer], device)]

    return featurize


def mfcc_featurizer(sample_rate: int = 16000, cmvn: bool = True) -> Featurizer:
    """MFCC+delta+delta-delta (39-dim, per-utterance CMVN unless ``cmvn=False``),
    ``N // 160`` frames per utterance."""
    from cpc_seq.audio.mfcc import mfcc_deltas

    def featurize(waves: list[Tensor]) -> list[np.ndarray]:
        return [mfcc_deltas(w, sample_rate, cmvn=cmvn).numpy().astype(np.float32) for w in waves]

    return featurize


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
) -> dict[str, int]:
    """Extract features for ``utts`` (``load(utt) -> float32 (N,)`` at the model's rate)
    into ``wspec`` with ``featurize``. Returns ``{utt: num_frames}`` written by this call.
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
                if len(w) < 160:
                    msg = f"utterance {utt}: {len(w)} samples is shorter than one frame"
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
