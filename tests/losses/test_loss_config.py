"""The ``loss`` config section: one builder, and options a loss cannot honour refused."""

from __future__ import annotations

import pytest
import torch

from cpc_seq.config import from_dict
from cpc_seq.errors import ConfigError
from cpc_seq.losses import LossConfig, build_loss, kstep_infonce
from cpc_seq.losses.acpc import acpc_loss


@pytest.mark.parametrize("data,match", [
    ({"kind": "acpc", "cross_rank": True}, "loss.cross_rank: not supported with loss.kind=acpc"),
    ({"kind": "acpc", "exclude_positive": True}, "loss.exclude_positive: not supported"),
    ({"kind": "acpc", "negatives": "mixed"}, "loss.negatives: one of"),
    ({"kind": "nce"}, "loss.kind: 'nce' is not one of"),
    ({"negatives": "some"}, "loss.negatives: 'some' is not one of"),
    ({"n_negatives": 0}, "loss.n_negatives: must be positive"),
])
def test_options_a_loss_cannot_honour_are_errors(data: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        from_dict(LossConfig, data, prefix="loss.")


def test_acpc_horizon_counts_as_frames_ahead() -> None:
    cfg = from_dict(LossConfig, {"kind": "acpc", "acpc_horizon": 8, "negatives": "cross_batch",
                                 "exclude_positive": False})
    assert cfg.frames_ahead(4) == 8 and LossConfig().frames_ahead(4) == 4
    with pytest.raises(ConfigError, match="loss.acpc_horizon: must be at least model.n_steps=9"):
        cfg.frames_ahead(9)


@pytest.mark.parametrize("kind", ["infonce", "acpc"])
def test_build_loss_is_the_configured_function(kind: str) -> None:
    torch.manual_seed(0)
    pred, z = torch.randn(2, 12, 3, 8), torch.randn(2, 12, 8)
    cfg = from_dict(LossConfig, {"kind": kind, "negatives": "cross_batch", "n_negatives": 5,
                                 "acpc_horizon": 4})
    got = build_loss(cfg)(pred, z, None, generator=torch.Generator().manual_seed(1))
    if kind == "acpc":
        want = acpc_loss(pred, z, None, horizon=4, negatives="cross_batch", n_negatives=5,
                         generator=torch.Generator().manual_seed(1))
    else:
        want = kstep_infonce(pred, z, None, negatives="cross_batch", n_negatives=5,
                             exclude_positive=True, generator=torch.Generator().manual_seed(1))
    assert torch.equal(got.step_loss, want.step_loss)


def test_acpc_recipe_config_still_loads() -> None:
    from cpc_seq.audio.train import load_config

    cfg = load_config("recipes/fsdd/conf/cpc.yaml", ["data.train=unused"])
    assert cfg.loss.kind == "acpc" and cfg.loss.frames_ahead(cfg.model.n_steps) == 8
