"""Models: strided conv encoder, context networks, the audio CPC model and its presets."""

from cpc_seq.models.context import CONTEXTS, build_context
from cpc_seq.models.cpc import (
    CPCModel,
    ModelConfig,
    PredictionHeads,
    build_model,
    cpc_paper,
    cpc_small,
)
from cpc_seq.models.encoder import ConvEncoder, paper_layers

__all__ = [
    "CONTEXTS",
    "build_context",
    "CPCModel",
    "ModelConfig",
    "PredictionHeads",
    "build_model",
    "cpc_paper",
    "cpc_small",
    "ConvEncoder",
    "paper_layers",
]
