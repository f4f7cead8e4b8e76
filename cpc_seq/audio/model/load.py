"""An ``audio_cpc`` checkpoint's state as a model: the one place audio checkpoints become
models (the API, extraction, the s3prl upstream and ``--init-from`` all come here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from cpc_seq.audio.model.cpc import CPCModel, ModelConfig, build_model
from cpc_seq.config import from_dict
from cpc_seq.errors import CheckpointError, ConfigError
from cpc_seq.losses.config import LossConfig

KINDS = ("audio_cpc",)


def audio_model_from_state(state: dict[str, Any], path: str | Path, random_init: bool = False,
                           seed: int = 0) -> CPCModel:
    """The CPC model of a loaded ``audio_cpc`` checkpoint (eval mode), or the same
    architecture with random weights drawn from ``seed`` (the caller's global RNG is
    left as it was)."""
    try:
        mcfg = from_dict(ModelConfig, state["config"]["model"], prefix="model.")
    except (ConfigError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: bad model config in checkpoint ({e})") from None
    loss = stored_loss(state, path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(mcfg, loss)
    if not random_init:
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as e:
            raise CheckpointError(f"{path}: weights do not fit the stored config ({e})") from None
    return model.eval()


def stored_loss(state: dict[str, Any], path: str | Path) -> LossConfig | None:
    """The checkpoint's loss config when it shapes the model (``loss.kind: cotrain``,
    whose code heads are weights of the model), else ``None``."""
    loss = (state.get("config") or {}).get("loss") or {}
    if not isinstance(loss, dict) or loss.get("kind") != "cotrain":
        return None
    try:
        return from_dict(LossConfig, loss, prefix="loss.")
    except (ConfigError, TypeError) as e:
        raise CheckpointError(f"{path}: bad loss config in checkpoint ({e})") from None
