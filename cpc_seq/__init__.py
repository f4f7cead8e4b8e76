"""cpc_seq: Contrastive Predictive Coding for audio and text, DIM/AMDIM for images."""

from __future__ import annotations

__version__ = "0.1.0"

from cpc_seq.errors import CheckpointError, ConfigError, CpcSeqError, DataError

__all__ = ["CpcSeqError", "DataError", "ConfigError", "CheckpointError", "__version__"]
