"""``cpc-seq audio train --init-from CKPT``: fine-tune from a cpc_seq checkpoint's weights
(one imported from CPC_audio, or any audio one), on new data, with a new optimiser.

The run's ``model`` and ``loss`` sections start from the checkpoint's and the YAML file
and ``key=value`` overrides apply on top (``--resume`` instead continues a run exactly).
The encoder and context must keep the checkpoint's architecture (input normalisation
included); changing one of their keys is refused, naming it. The prediction heads are
the checkpoint's when their config and the loss kind are unchanged, and fresh (drawn
from ``train.seed``) when they differ or with ``--fresh-heads``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor

from cpc_seq.audio.model.cpc import ModelConfig, build_model
from cpc_seq.config import apply_overrides, from_dict, load_yaml, to_dict
from cpc_seq.errors import CheckpointError, ConfigError

#: ModelConfig keys of the prediction network; all others shape encoder and context.
HEAD_KEYS = ("predictor", "predictor_ff", "predictor_dropout", "predictor_window", "n_steps",
             "transformer_heads", "dropout")


def init_config(ckpt: str | Path, config: str | Path | None, overrides: list[str],
                fresh_heads: bool = False) -> tuple[Any, dict[str, Tensor], str]:
    """The run config for ``--init-from ckpt`` and the weights to start from.

    Returns ``(ExperimentConfig, weights, note)``: ``weights`` holds the encoder and
    context tensors (and the heads' when they are kept), for
    ``model.load_state_dict(weights, strict=False)``; ``note`` says which heads.

    Raises:
        CheckpointError: not an audio cpc_seq checkpoint.
        ConfigError: the run changes an encoder or context key of the checkpoint.
    """
    from cpc_seq.audio.model.load import KINDS
    from cpc_seq.audio.train import ExperimentConfig
    from cpc_seq.io.checkpoint import load_checkpoint

    state = load_checkpoint(ckpt, kinds=KINDS, purpose="train --init-from")
    stored = state["config"]
    try:
        old = from_dict(ModelConfig, stored["model"], prefix="model.")
    except (ConfigError, KeyError, TypeError) as e:
        raise CheckpointError(f"{ckpt}: bad model config in checkpoint ({e})") from None
    data = load_yaml(config) if config is not None else {}
    for section in ("model", "loss"):
        base = stored.get(section) if section == "loss" else to_dict(old)
        if isinstance(base, dict):
            data[section] = {**base, **(data.get(section) or {})}
    data = apply_overrides(data, overrides)
    cfg = from_dict(ExperimentConfig, data)
    old_d, new_d = to_dict(old), to_dict(cfg.model)
    changed = [k for k in old_d if k not in HEAD_KEYS and old_d[k] != new_d[k]]
    if changed:
        k = changed[0]
        raise ConfigError(f"--init-from {ckpt}: model.{k} is {old_d[k]!r} there, the run sets "
                          f"{new_d[k]!r}; fine-tuning keeps the encoder and context")
    same_heads = all(old_d[k] == new_d[k] for k in HEAD_KEYS)
    same_loss = (stored.get("loss") or {}).get("kind", "infonce") == cfg.loss.kind
    keep = same_heads and same_loss and not fresh_heads
    from cpc_seq.audio.model.load import stored_loss

    try:
        build_model(old, stored_loss(state, ckpt)).load_state_dict(state["model"])
    except RuntimeError as e:
        raise CheckpointError(f"{ckpt}: weights do not fit the stored config ({e})") from None
    old_loss = stored_loss(state, ckpt)
    # the co-training heads carry over when their shapes do (same K; W is no weight)
    keep_codes = keep and old_loss is not None and \
        old_loss.cotrain_codes == cfg.loss.cotrain_codes
    weights = {k: v for k, v in state["model"].items()
               if (keep or not k.startswith("heads.")) and
               (keep_codes or not k.startswith("cotrain."))}
    if keep:
        note = "prediction heads from the checkpoint"
    else:
        why = ("--fresh-heads" if fresh_heads else "the loss kind differs" if not same_loss
               else "the prediction network's config differs")
        note = f"fresh prediction heads ({why})"
    return cfg, weights, note
