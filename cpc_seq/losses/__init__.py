"""The contrastive loss core: MI estimators on score matrices (InfoNCE, JSD, DV, and the
NWJ/MINE/SMILE bounds of :mod:`cpc_seq.losses.bounds`, picked by name with
:func:`cpc_seq.losses.select.estimate`), k-step InfoNCE and ACPC's aligned loss, built
from the ``loss`` config section by :func:`build_loss`.

No model code lives here; CPC (audio, text), DIM and AMDIM all call into it.
"""

from cpc_seq.losses.bounds import BOUNDS, MineEstimator, MineState, mine, nwj, smile
from cpc_seq.losses.config import LossConfig, build_loss
from cpc_seq.losses.estimators import (
    ESTIMATORS,
    EstimatorOutput,
    donsker_varadhan,
    infonce,
    jsd,
)
from cpc_seq.losses.kstep import NEGATIVE_MODES, KStepOutput, kstep_infonce
from cpc_seq.losses.negatives import sample_negatives
from cpc_seq.losses.select import STATELESS, estimate

__all__ = [
    "ESTIMATORS",
    "EstimatorOutput",
    "infonce",
    "jsd",
    "donsker_varadhan",
    "estimate",
    "STATELESS",
    "BOUNDS",
    "nwj",
    "mine",
    "MineState",
    "MineEstimator",
    "smile",
    "NEGATIVE_MODES",
    "KStepOutput",
    "kstep_infonce",
    "sample_negatives",
    "LossConfig",
    "build_loss",
]
