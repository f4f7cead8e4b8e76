"""cpc_seq: Contrastive Predictive Coding for audio and text, DIM/AMDIM for images."""

from __future__ import annotations

__version__ = "0.1.0"

from cpc_seq.errors import CheckpointError, ConfigError, CpcSeqError, DataError


def load(ckpt, random_init: bool = False, device: str = "cpu"):  # noqa: ANN001, ANN201
    """Load a checkpoint as an s3prl-style upstream; see :func:`cpc_seq.api.load`."""
    from cpc_seq.api import load as _load

    return _load(ckpt, random_init=random_init, device=device)


__all__ = ["load", "CpcSeqError", "DataError", "ConfigError", "CheckpointError", "__version__"]
