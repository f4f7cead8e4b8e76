"""A cpc_seq audio checkpoint as an s3prl upstream (the "expert" interface that s3prl's
downstream tasks call).  See ``docs/s3prl.md`` for wiring it into s3prl.

Contract (s3prl's upstream interface):

* ``UpstreamExpert(ckpt, model_config=None, **kwargs)``: ``ckpt`` is the checkpoint
  (``run_downstream.py -k``); ``model_config`` (``-g``) is accepted and ignored, since a
  cpc_seq checkpoint carries its own config.
* ``forward(wavs)``: ``wavs`` is a list of unpadded 1-D float tensors at 16 kHz (on any
  device); returns a dict with ``hidden_states``: a list of padded ``(B, T, H)``
  tensors, all of one shape (so s3prl's featurizer can take a weighted sum), on the
  device of the input, with ``T = max_len // 160`` and zeros after each utterance's
  ``len // 160`` frames; ``last_hidden_state`` = the last of them; and one entry per
  layer name (``"z"``, ``"c"``).
* ``get_downsample_rates(key)`` -> 160 for every key (one frame per 10 ms).

Built on :func:`cpc_seq.load` (``extract_features``, which runs the library's
extraction, :func:`cpc_seq.extract`: a waveform longer than 60 s is computed in spans in
bounded memory, and non-finite features are an error); features are computed without
gradients (frozen-upstream use, as in SUPERB); fine-tuning through this expert is not
supported.  ``hidden_states`` holds ``z`` and ``c`` when they have the same width,
otherwise only ``c``; choose with ``layers="c"`` or ``layers="z,c"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from cpc_seq.errors import CheckpointError, ConfigError

__all__ = ["UpstreamExpert", "cpc_seq_local"]


class UpstreamExpert(nn.Module):
    """s3prl upstream expert around a cpc_seq audio CPC checkpoint.

    Args:
        ckpt: path of a cpc_seq audio checkpoint.
        model_config: ignored (the checkpoint carries its config); s3prl passes it.
        layers: hidden states to return, ``"z,c"``-style string or a sequence of names
            (default: ``z`` and ``c`` when equally wide, else ``c``).
        random_init: the same architecture with random weights (a baseline).
        **kwargs: other s3prl options, ignored.

    Raises:
        CheckpointError: not an audio CPC checkpoint (or unreadable).
        ConfigError: unknown layer names, or layers of different widths.
    """

    def __init__(self, ckpt: str, model_config: str | None = None,
                 layers: str | Sequence[str] | None = None, random_init: bool = False,
                 **kwargs: Any) -> None:
        super().__init__()
        import cpc_seq

        upstream = cpc_seq.load(ckpt, random_init=random_init)
        if not hasattr(upstream, "downsample_rate") or not hasattr(upstream, "extract_features"):
            raise CheckpointError(f"{ckpt}: not an audio CPC checkpoint (s3prl upstreams take "
                                  "waveforms)")
        self.upstream = upstream
        names = list(upstream.hidden_state_names)
        widths = self._widths(upstream)
        if layers is None:
            chosen = names if len({widths[n] for n in names}) == 1 else [names[-1]]
        else:
            chosen = [s.strip() for s in layers.split(",")] if isinstance(layers, str) \
                else list(layers)
            unknown = [n for n in chosen if n not in names]
            if unknown or not chosen:
                raise ConfigError(f"layers {layers!r}: choose from {', '.join(names)}")
            if len({widths[n] for n in chosen}) != 1:
                raise ConfigError(f"layers {', '.join(chosen)} have widths "
                                  f"{', '.join(str(widths[n]) for n in chosen)}; s3prl needs "
                                  "hidden states of one shape")
        self.layers = chosen
        self._index = [names.index(n) for n in chosen]

    @staticmethod
    def _widths(upstream: nn.Module) -> dict[str, int]:
        probe = upstream.extract_features([torch.zeros(int(upstream.downsample_rate) * 8)])
        return {n: int(h.shape[-1]) for n, h in zip(upstream.hidden_state_names,
                                                    probe["hidden_states"])}

    def get_downsample_rates(self, key: str) -> int:
        """Input samples per output frame for output ``key``: 160 (10 ms at 16 kHz)."""
        return int(self.upstream.downsample_rate)

    def forward(self, wavs: list[Tensor]) -> dict[str, Any]:
        """``wavs``: list of ``(samples,)`` float tensors -> ``hidden_states`` list of
        ``(B, T, H)`` on the input's device (see the module doc)."""
        if not wavs:
            raise ValueError("UpstreamExpert.forward needs at least one waveform")
        device = wavs[0].device
        cpu = [w.detach().to("cpu", torch.float32).reshape(-1) for w in wavs]
        out = self.upstream.extract_features(cpu)
        hidden = [out["hidden_states"][k].to(device) for k in self._index]
        result: dict[str, Any] = {"hidden_states": hidden, "last_hidden_state": hidden[-1]}
        for name, h in zip(self.layers, hidden):
            result[name] = h
        return result


def cpc_seq_local(ckpt: str, *args: Any, **kwargs: Any) -> UpstreamExpert:
    """s3prl hub entry (``run_downstream.py -u cpc_seq_local -k CKPT``); see docs/s3prl.md."""
    return UpstreamExpert(ckpt, *args, **kwargs)
