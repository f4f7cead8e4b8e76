"""Frame-level feature extraction from a trained (or random-init) CPC model.

Frame convention: for N samples at the model's rate, layers ``z`` and ``c`` have
``T = N // 160`` frames (160 = ``model.downsample_rate`` for the presets); frame t is
centred on samples [160 t, 160 (t+1)) (10 ms hop at 16 kHz). ``z`` is computed from a receptive field of 465 samples around that span;
``c`` summarises frames 0..t (causal). Label files with one label per 10 ms, label t
for the centre ``160 t + 80``, line up with the features by construction.

Each utterance is normalised to zero mean and unit variance (as the training windows
are; not for models with ``input_norm: none``, e.g. imported CPC_audio ones), then utterances are batched by length with zero padding; padded batches give the
same features as one utterance at a time (the encoder masks padding layer by layer): in
float32 on the CPU the same bits for z and the conv layers, c to float rounding.

The files themselves (ark/scp, npy, crash-safe resume) are :mod:`cpc_seq.io.features`'s.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from cpc_seq.audio.model import CPCModel
from cpc_seq.errors import CpcSeqError
from cpc_seq.io.features import Featurizer, length_batches


def layer_frame_lengths(model: CPCModel, lengths: Tensor, layer: str) -> Tensor:
    """Valid frames of ``layer`` for inputs of ``lengths`` samples."""
    if layer in ("z", "c"):
        return model.encoder.frame_lengths(lengths)
    idx = int(layer.removeprefix("conv")) - 1
    return model.encoder._layer_lengths(lengths)[idx]


#: Padded samples the encoder takes at once on the CPU (10 s at 16 kHz): larger batches
#: only add cache misses. The context network then runs once over the whole batch, where
#: a GRU's per-step cost is shared by all its rows.
CPU_ENCODER_SAMPLES = 10 * 16000


@torch.no_grad()
def run_layers(
    model: CPCModel, waves: list[Tensor], layers: list[str], device: torch.device | None = None,
    encoder_samples: int | None = -1,
) -> list[dict[str, Tensor]]:
    """Features of a batch: for each wave, ``{layer: (T_layer, H)}`` (on CPU, fp32).

    The encoder runs on groups of at most ``encoder_samples`` padded samples (-1: 10 s
    on the CPU, the whole batch elsewhere; ``None``: the whole batch), the context
    network once on the whole batch (padding after a sequence never changes its frames).
    """
    device = device or next(model.parameters()).device
    if encoder_samples == -1:
        encoder_samples = CPU_ENCODER_SAMPLES if device.type == "cpu" else None
    lengths = [len(w) for w in waves]
    result: list[dict[str, Tensor]] = [{} for _ in waves]
    zs: list[Tensor] = [torch.empty(0)] * len(waves)
    by_index = dict(enumerate(lengths))  # longest first, as extraction's own batches
    for group in length_batches(by_index, encoder_samples or max(lengths) * len(lengths)):
        g_len = torch.tensor([lengths[i] for i in group], dtype=torch.long)
        x = torch.zeros(len(group), int(g_len.max()))
        for j, i in enumerate(group):
            # each utterance on its own, unpadded: a sum over a zero-padded row rounds
            # differently, and the features would depend on the batch
            x[j, : lengths[i]] = model.normalize_input(waves[i].float().unsqueeze(0))[0]
        x = x.to(device)
        z, frames, convs = model.encoder(x, g_len.to(device), return_layers=True)
        named = {"z": z, **{f"conv{k + 1}": t for k, t in enumerate(convs)}}
        for j, i in enumerate(group):
            zs[i] = z[j, : int(frames[j])]
            for name in layers:
                if name != "c":
                    n = int(layer_frame_lengths(model, g_len[j : j + 1], name)[0])
                    result[i][name] = named[name][j, :n].float().cpu()
    if "c" in layers:
        c = model.context(torch.nn.utils.rnn.pad_sequence(zs, batch_first=True))
        for i, z_i in enumerate(zs):
            result[i]["c"] = c[i, : z_i.shape[0]].float().cpu()
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
