"""The ``loss`` config section of the k-step CPC tasks (audio and text)."""

from __future__ import annotations

from dataclasses import dataclass

from cpc_seq.config import check
from cpc_seq.losses.kstep import NEGATIVE_MODES


@dataclass
class LossConfig:
    """k-step InfoNCE options; see :mod:`cpc_seq.losses.kstep` for the negative modes.

    ``cross_rank``: under torchrun, draw candidates from the z of every process's
    shard (all-gather with gradients), so N processes compute the 1-process loss.
    """

    negatives: str = "all"
    n_negatives: int = 128
    exclude_positive: bool = True
    cross_rank: bool = False

    def validate(self) -> None:
        check(self.negatives in NEGATIVE_MODES, "loss.negatives", f"one of {NEGATIVE_MODES}")
        check(self.n_negatives > 0, "loss.n_negatives", "must be positive")
