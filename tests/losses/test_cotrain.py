"""The co-training objective: known answers for identical and independent codes."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cpc_seq.losses.cotrain import CoTraining, cotrain_terms, plugin_mi

K = 4


def _onehot_logits(codes: torch.Tensor, scale: float = 30.0) -> torch.Tensor:
    return nn.functional.one_hot(codes, K).float() * scale


def _fit_models(ct: CoTraining, lx: torch.Tensor, ly: torch.Tensor, steps: int = 400) -> float:
    opt = torch.optim.Adam(ct.parameters(), lr=0.1)
    for _ in range(steps):
        out = ct(lx, ly)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    return float(ct(lx, ly).mi)


def test_plugin_mi_known_answers() -> None:
    codes = torch.arange(64) % K  # deterministic, uniform over the K codes
    p = nn.functional.one_hot(codes, K).float()
    assert float(plugin_mi(p, p)) == pytest.approx(math.log(K), abs=1e-6)
    other = nn.functional.one_hot((torch.arange(64) // K) % K, K).float()  # independent
    assert float(plugin_mi(p, other)) == pytest.approx(0.0, abs=1e-6)


def test_models_reach_ln_k_for_identical_codes_and_zero_for_independent() -> None:
    torch.manual_seed(0)
    codes = torch.arange(64) % K
    lx = _onehot_logits(codes)
    assert _fit_models(CoTraining(K), lx, lx) == pytest.approx(math.log(K), abs=0.05)
    ly = _onehot_logits((torch.arange(64) // K) % K)
    assert _fit_models(CoTraining(K), lx, ly) == pytest.approx(0.0, abs=0.05)


def test_cross_entropies_bound_the_entropies() -> None:
    torch.manual_seed(1)
    px, py = torch.softmax(torch.randn(50, K), -1), torch.softmax(torch.randn(50, K), -1)
    h_x, h_c = cotrain_terms(px, py, torch.randn(K), torch.randn(K, K))
    pbar = px.mean(0)
    assert float(h_x) >= float(-(pbar * pbar.log()).sum()) - 1e-6
    h_x0, h_c0 = cotrain_terms(px, py, torch.zeros(K), torch.zeros(K, K))  # uniform models
    assert float(h_x0) == pytest.approx(math.log(K)) and float(h_c0) == pytest.approx(math.log(K))
    with pytest.raises(ValueError, match="one shape"):
        cotrain_terms(px, py[:, :2], torch.zeros(K), torch.zeros(K, K))
    with pytest.raises(ValueError, match="beta"):
        CoTraining(K, beta=1.0)


def test_coders_learn_the_shared_class() -> None:
    # two noisy views of one of K classes: linear coders + models trained together
    torch.manual_seed(0)
    n, d = 512, 8
    cls = torch.randint(K, (n,))
    means = torch.randn(K, d) * 3
    x = means[cls] + torch.randn(n, d)
    y = means[cls] + torch.randn(n, d)
    fx, fy, ct = nn.Linear(d, K), nn.Linear(d, K), CoTraining(K)
    opt = torch.optim.Adam([*fx.parameters(), *fy.parameters(), *ct.parameters()], lr=0.05)
    for _ in range(300):
        out = ct(fx(x), fy(y))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    assert float(out.mi) > math.log(2) + 0.2  # at least three of the four classes apart
    px, py = torch.softmax(fx(x), -1), torch.softmax(fy(y), -1)
    assert float(out.mi) == pytest.approx(float(plugin_mi(px, py)), abs=0.02)
    assert float(out.mi) <= ct.ceiling + 1e-3


def test_model_scale_multiplies_the_models_logits() -> None:
    torch.manual_seed(0)
    lx, ly = torch.randn(32, 5), torch.randn(32, 5)
    scaled, plain = CoTraining(5, 0.1, model_scale=10.0), CoTraining(5, 0.1)
    with torch.no_grad():
        scaled.marginal.copy_(torch.randn(5))
        scaled.conditional.copy_(torch.randn(5, 5))
        plain.marginal.copy_(10.0 * scaled.marginal)
        plain.conditional.copy_(10.0 * scaled.conditional)
    a, b = scaled(lx, ly), plain(lx, ly)
    assert torch.allclose(a.loss, b.loss) and torch.allclose(a.mi, b.mi)
    with pytest.raises(ValueError, match="model_scale"):
        CoTraining(5, model_scale=0.0)
