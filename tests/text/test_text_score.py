"""model.score: how the text models' predictions meet the candidates in the loss."""

from __future__ import annotations

import math

import pytest
import torch

from cpc_seq.errors import ConfigError
from cpc_seq.text.models import MAX_COSINE_SCALE, TextModelConfig, build_text_model

pytestmark = pytest.mark.usefixtures("one_thread")


def _model(score: str, level: str = "sentence") -> torch.nn.Module:
    torch.manual_seed(0)
    layers = [[3, 1, 16]] if level == "sentence" else [[2, 2, 16]]
    return build_text_model(TextModelConfig(level=level, vocab_size=50, embed_dim=8,
                                            encoder_layers=layers, dim_c=16, n_steps=2,
                                            score=score))


@pytest.mark.parametrize("level", ["sentence", "token"])
def test_scores_dot_scaled_cosine(level: str) -> None:
    dot, scaled, cos = (_model(s, level) for s in ("dot", "scaled", "cosine"))
    c = torch.randn(2, 5, 16)
    z = torch.randn(2, 5, 16) * 7
    p = dot.heads(c)
    assert torch.equal(dot.predict(c), p) and torch.equal(dot.loss_targets(z), z)
    torch.testing.assert_close(scaled.predict(c), p / 4.0)  # sqrt(16)
    assert torch.equal(scaled.loss_targets(z), z)
    torch.testing.assert_close(cos.loss_targets(z).norm(dim=-1), torch.ones(2, 5))
    torch.testing.assert_close(cos.predict(c).norm(dim=-1), torch.full((2, 5, 2), 10.0))
    # the scale is learned and clamped at MAX_COSINE_SCALE
    assert "score.log_scale" in dict(cos.named_parameters())
    # dot and scaled add nothing to the checkpoint (older checkpoints load as before)
    assert not any(k.startswith("score") for m in (dot, scaled) for k in m.state_dict())
    with torch.no_grad():
        cos.score.log_scale.fill_(math.log(1e4))
    torch.testing.assert_close(cos.predict(c).norm(dim=-1),
                               torch.full((2, 5, 2), MAX_COSINE_SCALE))


def test_extracted_z_is_the_same_for_every_score() -> None:
    tokens = torch.randint(1, 50, (2, 3, 6))
    tl = torch.full((2, 3), 6)
    zs = [_model(s)(tokens, tl).z for s in ("dot", "scaled", "cosine")]
    assert torch.equal(zs[0], zs[1]) and torch.equal(zs[0], zs[2])


def test_score_config_is_checked() -> None:
    from cpc_seq.config import from_dict

    with pytest.raises(ConfigError, match="model.score"):
        from_dict(TextModelConfig, {"score": "l2"}, prefix="model.")
    with pytest.raises(ConfigError, match="score_temperature"):
        from_dict(TextModelConfig, {"score": "cosine", "score_temperature": 0.0},
                  prefix="model.")
