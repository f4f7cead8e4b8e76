"""Python API: load any cpc_seq checkpoint; the one loader, dispatching on its kind.

>>> import cpc_seq
>>> model = cpc_seq.load("exp/cpc/best.pt")             # doctest: +SKIP
>>> out = model.extract_features([wave1, wave2])         # 1-D float 16 kHz waveforms
>>> out["hidden_states"]      # [z (B, T, 256), c (B, T, 256)], zero-padded after lengths
>>> out["lengths"], out["downsample_rate"]               # (B,) frames, 160

Audio checkpoints give an :class:`~cpc_seq.audio.upstream.Upstream` (s3prl shape: a list
of 1-D waveforms in), text checkpoints a :class:`~cpc_seq.text.extract.TextUpstream` (a
list of strings in), DIM/AMDIM checkpoints the image model in eval mode.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from cpc_seq.io.checkpoint import load_checkpoint

#: Every checkpoint kind this toolkit writes, and the modality that reads it.
KINDS = {"audio_cpc": "audio", "text_token": "text", "text_sentence": "text", "dim": "images",
         "amdim": "images"}


def load(ckpt: str | Path, random_init: bool = False, device: str = "cpu", seed: int = 0
         ) -> nn.Module:
    """Load a cpc_seq checkpoint (``torch.load(weights_only=True)``) as the model of its
    kind; ``random_init``: the same architecture with weights drawn from ``seed``. The
    global RNG is left as it was."""
    state = load_checkpoint(ckpt, map_location=device, kinds=tuple(KINDS))
    modality = KINDS[state["kind"]]
    if modality == "audio":
        from cpc_seq.audio.model.load import audio_model_from_state
        from cpc_seq.audio.upstream import Upstream

        model = audio_model_from_state(state, ckpt, random_init=random_init, seed=seed)
        return Upstream(model.to(device), state["config"])
    if modality == "text":
        from cpc_seq.text.extract import TextUpstream, text_model_from_state

        tmodel, tok, cfg = text_model_from_state(state, ckpt, random_init=random_init, seed=seed)
        return TextUpstream(tmodel.to(device), tok, cfg)
    from cpc_seq.images.train import image_model_from_state

    imodel, _, _ = image_model_from_state(state, ckpt, random_init=random_init, seed=seed)
    return imodel.to(device)


def checkpoint_kind(ckpt: str | Path) -> str:
    """The kind of a checkpoint (``audio_cpc``, ``text_sentence``, ``dim``, ...)."""
    return str(load_checkpoint(ckpt, kinds=tuple(KINDS))["kind"])


__all__ = ["load", "checkpoint_kind", "KINDS"]
