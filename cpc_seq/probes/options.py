"""The one set of probe-training options, shared by the audio, text and image probes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ProbeOptions:
    """How a probe is trained (see :func:`cpc_seq.probes.linear.train_linear_probe`).

    ``hidden``: 0 = linear, else one hidden layer of this size; ``train_subset``: train on
    a random subset of this many items (0 = all; image probes).
    """

    hidden: int = 0
    epochs: int = 20
    lr: float = 1e-3
    batch_size: int = 256
    weight_decay: float = 0.0
    seed: int = 0
    train_subset: int = 0
    progress: bool = False
