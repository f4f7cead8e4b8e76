"""cpc_seq: Contrastive Predictive Coding for audio and text, DIM/AMDIM for images."""

from __future__ import annotations

__version__ = "0.1.0"

from typing import Any

from cpc_seq.errors import CheckpointError, ConfigError, CpcSeqError, DataError


def load(ckpt, random_init: bool = False, device: str = "cpu"):  # noqa: ANN001, ANN201
    """Load a checkpoint as an s3prl-style upstream; see :func:`cpc_seq.api.load`."""
    from cpc_seq.api import load as _load

    return _load(ckpt, random_init=random_init, device=device)


def extract(source: Any, model: Any = None, **options: Any) -> Any:
    """Features of a CPC model (or MFCCs): waveforms in, arrays out; or a data dir in,
    ark/scp or npy out. See :func:`cpc_seq.audio.extract_pipeline.extract`.

    >>> feats = cpc_seq.extract([wave], "exp/cpc/last.pt", layer="c")   # doctest: +SKIP
    >>> cpc_seq.extract("data/dev", "exp/cpc/last.pt",                  # doctest: +SKIP
    ...                 output="ark,scp:exp/f/c.ark,exp/f/c.scp")
    """
    from cpc_seq.audio.extract_pipeline import extract as _extract

    return _extract(source, model, **options)


__all__ = ["load", "extract", "CpcSeqError", "DataError", "ConfigError", "CheckpointError", "__version__"]
