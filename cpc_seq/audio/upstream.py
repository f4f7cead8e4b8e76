"""Audio CPC checkpoints as models with an s3prl-shaped ``extract_features``.

>>> import cpc_seq
>>> model = cpc_seq.load("exp/cpc/best.pt")             # doctest: +SKIP
>>> out = model.extract_features([wave1, wave2])         # 1-D float 16 kHz waveforms
>>> out["hidden_states"]      # [z (B, T, 256), c (B, T, 256)], zero-padded after lengths
>>> out["lengths"], out["downsample_rate"]               # (B,) frames, 160
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from cpc_seq.audio.extract_pipeline import check_waves, features_of_waves
from cpc_seq.audio.model.cpc import CPCModel


class Upstream(nn.Module):
    """A loaded CPC model with an s3prl-style ``extract_features``."""

    def __init__(self, model: CPCModel, config: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.model = model.eval()
        self.config = config or {}
        self.downsample_rate = model.downsample_rate
        self.sample_rate = model.sample_rate
        self.hidden_state_names = ["z", "c"]

    @torch.no_grad()
    def extract_features(self, wavs: list[Tensor | np.ndarray]) -> dict[str, Any]:
        """Features of 1-D waveforms at ``sample_rate`` (16 kHz for the presets), by
        :func:`cpc_seq.extract` (a waveform longer than 60 s is computed in spans).

        Returns ``{"hidden_states": [z (B, T, D_z), c (B, T, D_c)], "lengths": (B,) frames,
        "downsample_rate": 160, "names": ["z", "c"], "last_hidden_state": c}``. Frames past
        an utterance's length are zero. Each waveform is normalised like the training
        windows, so batching gives the same features as one at a time.

        Raises:
            DataError: naming the item index, for an item that is not 1-D (a (2, N)
                stereo array is refused, not flattened: downmix it first), holds NaN/Inf
                or non-numbers, or is shorter than one frame (``downsample_rate``
                samples); also for an empty list or a bare array instead of a list.
            CpcSeqError: non-finite features (naming the item).
        """
        feats = features_of_waves(self.model, wavs, self.hidden_state_names)
        lengths = torch.tensor([f["z"].shape[0] for f in feats], dtype=torch.long)
        t_max = int(lengths.max()) if len(lengths) else 0
        hidden = []
        for name in self.hidden_state_names:
            dim = feats[0][name].shape[1]
            h = torch.zeros(len(feats), t_max, dim)
            for i, f in enumerate(feats):
                h[i, : f[name].shape[0]] = torch.from_numpy(f[name])
            hidden.append(h)
        return {
            "hidden_states": hidden,
            "last_hidden_state": hidden[-1],
            "lengths": lengths,
            "downsample_rate": self.downsample_rate,
            "names": list(self.hidden_state_names),
        }

    def check_waves(self, wavs: list[Tensor | np.ndarray]) -> list[Tensor]:
        """The checks of :meth:`extract_features` (the command line's, for API input):
        ``wavs`` as float32 (N,) tensors."""
        return check_waves(wavs, self.downsample_rate)

    def forward(self, wavs: list[Tensor | np.ndarray]) -> dict[str, Any]:
        return self.extract_features(wavs)
