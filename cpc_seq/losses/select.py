"""Estimators by name: :func:`estimate` picks one of the stateless MI estimators on a
score matrix (:mod:`cpc_seq.losses.estimators`, :mod:`cpc_seq.losses.bounds`)."""

from __future__ import annotations

from torch import Tensor

from cpc_seq.losses.bounds import nwj, smile
from cpc_seq.losses.estimators import (
    ESTIMATORS,
    EstimatorOutput,
    donsker_varadhan,
    infonce,
    jsd,
)

#: Every estimator :func:`estimate` knows (MINE needs state: :class:`~cpc_seq.losses.bounds.MineEstimator`).
STATELESS = ESTIMATORS + ("nwj", "smile")


def estimate(
    name: str, scores: Tensor, pos_mask: Tensor, valid_mask: Tensor | None = None
) -> EstimatorOutput:
    """Dispatch by name: ``infonce`` | ``jsd`` | ``dv`` | ``nwj`` | ``smile`` (default
    ``tau``); MINE needs its moving-average state: :func:`cpc_seq.losses.bounds.mine`."""
    if name == "nwj":
        return nwj(scores, pos_mask, valid_mask)
    if name == "smile":
        return smile(scores, pos_mask, valid_mask)
    if name == "infonce":
        return infonce(scores, pos_mask, valid_mask)
    if name == "jsd":
        return jsd(scores, pos_mask, valid_mask)
    if name == "dv":
        return donsker_varadhan(scores, pos_mask, valid_mask)
    raise ValueError(f"unknown estimator {name!r}; choose one of {', '.join(STATELESS)}")
