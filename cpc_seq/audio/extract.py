"""Frame-level features of a CPC model: the model runners behind :func:`cpc_seq.extract`.

Frame convention: for N samples at the model's rate, layers ``z`` and ``c`` have
``T = N // 160`` frames (160 = ``model.downsample_rate`` for the presets); frame t is
centred on samples [160 t, 160 (t+1)) (10 ms hop at 16 kHz). ``z`` is computed from a
receptive field of 465 samples around that span; ``c`` summarises frames 0..t (causal).
Label files with one label per 10 ms, label t for the centre ``160 t + 80``, line up
with the features by construction.

Each utterance is normalised to zero mean and unit variance (as the training windows
are). The mean and standard deviation are accumulated in float64 over fixed blocks of
:data:`STAT_BLOCK` samples (:class:`WaveStats`), so they cannot overflow for any finite
float32 input (peaks near 3.4e38 included) and are the same numbers whether the
utterance is in memory or streamed from disk.

Two runners:

- :func:`run_layers`: a batch of utterances in memory, batched by length with zero
  padding; padded batches give the same features as one utterance at a time (the
  encoder masks padding layer by layer): in float32 on the CPU the same bits for z and
  the conv layers, c to float rounding.
- :func:`run_chunked`: one long utterance in bounded memory. The encoder runs on
  overlapping spans: frame t of the strided conv stack reads samples
  ``[D t - left, D (t+1) + right)`` (:class:`EncoderReach`, from the layers' kernels,
  strides and padding), so a span extended by that reach on both sides gives exactly
  the frames of the unchunked encoder (to float rounding: tiled convolutions and
  matmuls may round differently at other offsets). A GRU/LSTM context carries its
  hidden state from span to span. A Transformer context attends over the whole
  utterance at once (memory quadratic in its length), so it is not chunked: long
  utterances are refused for layer ``c`` (:func:`chunkable`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from cpc_seq.audio.model.cpc import CPCModel
from cpc_seq.errors import CpcSeqError
from cpc_seq.io.features import Featurizer, length_batches

#: Samples per block of the float64 statistics pass (about 65 s at 16 kHz). Streamed
#: reading uses the same blocks, so streamed and in-memory statistics are the same bits.
STAT_BLOCK = 1 << 20

#: Added to the standard deviation before dividing (as the training windows do).
NORM_EPS = 1e-5

#: Padded samples the encoder takes at once on the CPU (10 s at 16 kHz): larger batches
#: only add cache misses. The context network then runs once over the whole batch, where
#: a GRU's per-step cost is shared by all its rows.
CPU_ENCODER_SAMPLES = 10 * 16000


# --------------------------------------------------------------------------- normalisation


@dataclass(frozen=True)
class WaveStats:
    """Sample count, mean and unbiased standard deviation of one utterance (float64)."""

    n: int
    mean: float
    std: float


class StatsAccumulator:
    """Streaming :class:`WaveStats`: ``add`` blocks of :data:`STAT_BLOCK` samples in
    order (the last may be shorter), then ``result()``.

    Sums are taken in float64 around the first block's mean (shifted sums), so neither
    huge finite samples (squares of 1e38 are 1e76, far inside float64) nor a large DC
    offset lose the variance.
    """

    def __init__(self) -> None:
        self.n = 0
        self.shift: float | None = None
        self.s1 = 0.0
        self.s2 = 0.0

    def add(self, block: np.ndarray | Tensor) -> None:
        """Accumulate one block of samples ``(n,)``."""
        x = block.numpy() if isinstance(block, Tensor) else block
        x = np.asarray(x, dtype=np.float64)
        if not len(x):
            return
        if self.shift is None:
            self.shift = float(x.mean())
        d = x - self.shift
        self.s1 += float(d.sum())
        self.s2 += float(np.square(d).sum())
        self.n += len(x)

    def result(self) -> WaveStats:
        """The statistics of everything added."""
        if self.n == 0 or self.shift is None:
            return WaveStats(0, 0.0, 0.0)
        mean_d = self.s1 / self.n
        var = max(self.s2 - self.s1 * mean_d, 0.0) / max(self.n - 1, 1)
        return WaveStats(self.n, self.shift + mean_d, math.sqrt(var))


def wave_stats(wave: Tensor | np.ndarray) -> WaveStats:
    """:class:`WaveStats` of an in-memory ``(N,)`` waveform (same blocks as streaming)."""
    acc = StatsAccumulator()
    for i in range(0, len(wave), STAT_BLOCK):
        acc.add(wave[i : i + STAT_BLOCK])
    return acc.result()


def normalize_span(x: Tensor, stats: WaveStats) -> Tensor:
    """``(x - mean) / (std + eps)`` of samples ``(n,)`` in float64, returned as float32.

    Element-wise, so any span of an utterance normalises to the same bits as the same
    samples of the whole utterance.
    """
    return ((x.to(torch.float64) - stats.mean) / (stats.std + NORM_EPS)).to(torch.float32)


# --------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class EncoderReach:
    """Which samples the strided conv encoder's frames depend on.

    ``hop``: samples per output frame (D). ``strides[l]``: samples per output position
    of conv layer l (its cumulative stride). ``left`` / ``right``: frame t of any layer
    (position ``i`` of layer l covers samples ``[strides[l] i, strides[l] (i+1))``)
    reads at most ``left`` samples before its span and ``right`` after it.
    """

    hop: int
    strides: tuple[int, ...]
    left: int
    right: int
    layer_specs: tuple[tuple[int, int, int], ...]  # (kernel, stride, padding) per layer

    def layer_lengths(self, n_samples: int) -> list[int]:
        """Output positions of every conv layer for an input of ``n_samples``."""
        out, cur = [], n_samples
        for k, s, p in self.layer_specs:
            cur = max((cur + 2 * p - k) // s + 1, 0)
            out.append(cur)
        return out


def encoder_reach(model: CPCModel) -> EncoderReach:
    """The :class:`EncoderReach` of ``model.encoder`` from its convolutions' kernel
    sizes, strides and padding."""
    specs, strides = [], []
    jump, pad_reach, field = 1, 0, 1
    left = right = 0
    for conv in model.encoder.convs:
        k, s, p = int(conv.kernel_size[0]), int(conv.stride[0]), int(conv.padding[0])
        specs.append((k, s, p))
        # position i of this layer reads inputs [i s - p, i s - p + k) of the layer below
        pad_reach += p * jump
        field += (k - 1) * jump
        jump *= s
        strides.append(jump)
        left = max(left, pad_reach)
        right = max(right, field - pad_reach - jump)
    return EncoderReach(hop=int(model.downsample_rate), strides=tuple(strides), left=left,
                        right=right, layer_specs=tuple(specs))


def layer_frame_lengths(model: CPCModel, lengths: Tensor, layer: str) -> Tensor:
    """Valid frames of ``layer`` for inputs of ``lengths`` samples ``(B,)`` -> ``(B,)``."""
    if layer in ("z", "c", "codes"):
        return model.encoder.frame_lengths(lengths)
    idx = int(layer.removeprefix("conv")) - 1
    reach = encoder_reach(model)
    return torch.tensor([reach.layer_lengths(int(n))[idx] for n in lengths.tolist()],
                        dtype=torch.long)


def check_layer(model: CPCModel, layer: str) -> None:
    """Refuse a layer name the model does not have (one line listing the names)."""
    if layer not in model.layer_names:
        raise CpcSeqError(f"--layer {layer!r}: one of {', '.join(model.layer_names)}")


# --------------------------------------------------------------------------- batches


def normalizes_input(model: CPCModel) -> bool:
    """Whether ``model`` takes each utterance at zero mean and unit variance (its
    ``input_norm`` is ``utterance``, the default) rather than the samples as read."""
    config = getattr(model, "config", None)
    return getattr(config, "input_norm", "utterance") != "none"


def model_input(model: CPCModel, x: Tensor, stats: WaveStats | None = None) -> Tensor:
    """Samples ``(n,)`` as ``model`` takes them: :func:`normalize_span` with the utterance's
    ``stats`` (default: those of ``x``), or, for ``model.input_norm: none`` (checkpoints
    imported from CPC_audio), the samples themselves as float32."""
    if not normalizes_input(model):
        return x.to(torch.float32)
    return normalize_span(x, stats if stats is not None else wave_stats(x))


@torch.no_grad()
def run_layers(
    model: CPCModel, waves: list[Tensor], layers: list[str], device: torch.device | None = None,
    encoder_samples: int | None = -1,
) -> list[dict[str, Tensor]]:
    """Features of a batch: for each wave ``(N_i,)``, ``{layer: (T_layer, H)}`` (CPU, fp32).

    The encoder runs on groups of at most ``encoder_samples`` padded samples (-1: 10 s
    on the CPU, the whole batch elsewhere; ``None``: the whole batch), the context
    network once on the whole batch (padding after a sequence never changes its frames).
    Memory grows with the longest wave: :func:`run_chunked` takes long ones.
    """
    device = device or next(model.parameters()).device
    if encoder_samples == -1:
        encoder_samples = CPU_ENCODER_SAMPLES if device.type == "cpu" else None
    lengths = [len(w) for w in waves]
    result: list[dict[str, Tensor]] = [{} for _ in waves]
    zs: list[Tensor] = [torch.empty(0)] * len(waves)
    reach = encoder_reach(model)
    by_index = dict(enumerate(lengths))  # longest first, as extraction's own batches
    for group in length_batches(by_index, encoder_samples or max(lengths) * len(lengths)):
        g_len = torch.tensor([lengths[i] for i in group], dtype=torch.long)
        x = torch.zeros(len(group), int(g_len.max()))
        for j, i in enumerate(group):
            # each utterance on its own, unpadded: a sum over a zero-padded row rounds
            # differently, and the features would depend on the batch
            wave = waves[i].detach().cpu()
            x[j, : lengths[i]] = model_input(model, wave)
        x = x.to(device)
        z, frames, convs = model.encoder(x, g_len.to(device), return_layers=True)
        named = {"z": z, **{f"conv{k + 1}": t for k, t in enumerate(convs)}}
        for j, i in enumerate(group):
            zs[i] = z[j, : int(frames[j])]
            for name in layers:
                if name in ("c", "codes"):
                    continue
                n = int(frames[j]) if name == "z" else \
                    reach.layer_lengths(lengths[i])[int(name[4:]) - 1]
                result[i][name] = named[name][j, :n].float().cpu()
        del x, z, convs, named
    if "c" in layers or "codes" in layers:
        c = model.context(torch.nn.utils.rnn.pad_sequence(zs, batch_first=True))
        codes = _codes(model, c) if "codes" in layers else None
        for i, z_i in enumerate(zs):
            if "c" in layers:
                result[i]["c"] = c[i, : z_i.shape[0]].float().cpu()
            if codes is not None:
                result[i]["codes"] = codes[i, : z_i.shape[0]].cpu()
    return result


def _codes(model: CPCModel, c: Tensor) -> Tensor:
    """The co-training code distribution of ``c (B, T, D_c)`` -> ``(B, T, K)`` float32."""
    if model.cotrain is None:
        raise CpcSeqError("layer codes: the model has no co-training heads "
                          "(it was not trained with loss.kind=cotrain)")
    return model.cotrain.codes(c).float()


# --------------------------------------------------------------------------- long utterances


ContextStep = Callable[[Tensor, object], tuple[Tensor, object]]


def _context_step(model: CPCModel) -> ContextStep | None:
    """``(z (1, T, D), state) -> (c (1, T, H), state)`` continuing a recurrent context
    from ``state`` (``None``: the zero state), or ``None`` for a context that cannot
    carry a state (the Transformer). Runs the RNN as the context's own forward does in
    inference: a GRU on the CPU in its parameters' precision outside autocast."""
    rnn = getattr(model.context, "rnn", None)
    if not isinstance(rnn, (nn.GRU, nn.LSTM)):
        return None

    def step(z: Tensor, state: object) -> tuple[Tensor, object]:
        if isinstance(rnn, nn.GRU) and z.device.type == "cpu":
            with torch.autocast("cpu", enabled=False):
                return rnn(z.to(rnn.weight_hh_l0.dtype), state)
        return rnn(z, state)

    return step


def chunkable(model: CPCModel, layer: str) -> bool:
    """Whether ``layer`` of ``model`` can be computed span by span (:func:`run_chunked`):
    every conv layer and z; c (and codes) with a GRU or LSTM context, not with a
    Transformer."""
    return layer not in ("c", "codes") or _context_step(model) is not None


def chunked_rows(model: CPCModel, layer: str, n_samples: int) -> int:
    """Frames of ``layer`` for an utterance of ``n_samples`` (what the runners give)."""
    reach = encoder_reach(model)
    if layer in ("z", "c", "codes"):
        return n_samples // reach.hop
    return reach.layer_lengths(n_samples)[int(layer[4:]) - 1]


@torch.no_grad()
def run_chunked(
    model: CPCModel, read: Callable[[int, int], Tensor], n_samples: int,
    stats: WaveStats | None, layers: list[str], chunk_frames: int,
    device: torch.device | None = None,
) -> Iterator[dict[str, Tensor]]:
    """Features of one long utterance, span by span, in memory bounded by the span.

    Args:
        model: the CPC model (eval mode).
        read: ``read(start, stop) -> (stop - start,)`` float32 raw samples of the
            utterance (not normalised).
        n_samples: the utterance's length N.
        stats: its :class:`WaveStats` (a streaming first pass); ``None`` for a model
            that takes the samples as read (:func:`normalizes_input`).
        layers: names among ``z``, ``c`` and ``codes`` (GRU/LSTM context only) and
            ``convN``.
        chunk_frames: output frames (of z) per span; each span reads that many frames'
            samples plus the encoder's reach on both sides.
        device: where the model runs (default: its parameters' device).

    Yields:
        ``{layer: (rows, H)}`` float32 CPU blocks; each layer's blocks concatenate to
        the unchunked features (:func:`chunked_rows` rows in all).
    """
    device = device or next(model.parameters()).device
    reach = encoder_reach(model)
    hop = reach.hop
    n_frames = n_samples // hop
    if n_frames < 1:
        raise CpcSeqError(f"{n_samples} samples is shorter than one frame ({hop} samples)")
    if stats is None and normalizes_input(model):
        raise ValueError("run_chunked: this model normalises its input; pass the "
                         "utterance's WaveStats")
    wants_c = "c" in layers or "codes" in layers
    step = _context_step(model) if wants_c else None
    if wants_c and step is None:
        raise CpcSeqError("layer c of a Transformer context cannot be computed in spans")
    convs_wanted = {name: int(name[4:]) - 1 for name in layers if name.startswith("conv")}
    totals = reach.layer_lengths(n_samples)
    margin = -(-reach.left // hop)  # whole frames, so spans start on a frame boundary
    state: object = None
    chunk_frames = max(1, int(chunk_frames))
    for a in range(0, n_frames, chunk_frames):
        b = min(a + chunk_frames, n_frames)
        last = b == n_frames
        start = max(0, a - margin) * hop
        stop = n_samples if last else min(n_samples, b * hop + reach.right)
        x = model_input(model, read(start, stop), stats).unsqueeze(0).to(device)
        if convs_wanted:
            z, _, convs = model.encoder(x, return_layers=True)
        else:
            z, _ = model.encoder(x)
            convs = []
        del x
        zc = z[:, a - start // hop : b - start // hop]
        out: dict[str, Tensor] = {}
        if "z" in layers:
            out["z"] = zc[0].float().cpu()
        if step is not None:
            c, state = step(zc, state)
            if "c" in layers:
                out["c"] = c[0].float().cpu()
            if "codes" in layers:
                out["codes"] = _codes(model, c)[0].cpu()
        for name, idx in convs_wanted.items():
            per = hop // reach.strides[idx]  # positions of this layer per frame
            offset = start // reach.strides[idx]
            lo = min(a * per, totals[idx])
            hi = totals[idx] if last else min(b * per, totals[idx])
            out[name] = convs[idx][0, lo - offset : hi - offset].float().cpu()
        del z, zc, convs
        yield out


# --------------------------------------------------------------------------- featurizers


def model_featurizer(model: CPCModel, layer: str = "c", device: torch.device | None = None,
                     bf16: bool = False) -> Featurizer:
    """Batch featurizer for one layer of a CPC model: waves ``[(N_i,)]`` -> ``[(T_i, H)]``
    float32 arrays."""
    check_layer(model, layer)
    model.eval()

    def featurize(waves: list[Tensor]) -> list[np.ndarray]:
        dev = device or next(model.parameters()).device
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            return [f[layer].numpy() for f in run_layers(model, waves, [layer], device)]

    return featurize


def mfcc_featurizer(sample_rate: int = 16000, cmvn: bool = True) -> Featurizer:
    """MFCC+delta+delta-delta (39-dim, per-utterance CMVN unless ``cmvn=False``),
    ``N // 160`` frames per utterance."""
    from cpc_seq.audio.model.mfcc import mfcc_deltas

    def featurize(waves: list[Tensor]) -> list[np.ndarray]:
        return [mfcc_deltas(w, sample_rate, cmvn=cmvn).numpy().astype(np.float32) for w in waves]

    return featurize
