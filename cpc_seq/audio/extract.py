"""Frame-level feature extraction from a trained (or random-init) CPC model.

Frame convention: for N samples at the model's rate, layers ``z`` and ``c`` have
``T = N // 160`` frames (160 = ``model.downsample_rate`` for the presets); frame t is
centred on samples [160 t, 160 (t+1)) (10 ms hop at 16 kHz). ``z`` is computed from a receptive field of 465 samples around that span;
``c`` summarises frames 0..t (causal). Label files with one label per 10 ms, label t
for the centre ``160 t + 80``, line up with the features by construction.

Each utterance is normalised to zero mean and unit variance (as the training windows
are), then utterances are batched by length with zero padding; padded batches give the
same features as one utterance at a time (the encoder masks padding layer by layer).

The files themselves (ark/scp, npy, crash-safe resume) are :mod:`cpc_seq.io.features`'s.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from cpc_seq.audio.model import CPCModel
from cpc_seq.errors import CpcSeqError
from cpc_seq.io.features import Featurizer


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
