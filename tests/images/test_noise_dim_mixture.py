"""Noise-injected DIM, the prior-matching statistics, and AMDIM mixture representations."""

from __future__ import annotations

import pytest
import torch

from cpc_seq.errors import ConfigError
from cpc_seq.images.amdim import (
    AMDIMConfig,
    MixtureHead,
    MixtureNCEOutput,
    amdim_loss,
    build_amdim,
    mixture_nce,
)
from cpc_seq.images.dim import DIMConfig, build_dim, inject_noise
from cpc_seq.images.prior_match import ks_distance, mmd_to_prior, prior_match_stats
from cpc_seq.losses.amdim_nce import amdim_nce

pytestmark = pytest.mark.usefixtures("one_thread")  # torch on one thread

TINY_DIM = dict(ndf=4, local_channels=8, hidden=16, y_dim=4, mi_dim=8, global_hidden=16,
                disc_hidden=8)




# ------------------------------------------------------------ prior statistics


def test_ks_and_mmd_separate_matched_from_unmatched() -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2000, 8, generator=g)
    assert ks_distance(z, "gaussian").item() < 0.04
    assert ks_distance(z + 1.0, "gaussian").item() > 0.3
    assert ks_distance(z * 3.0, "gaussian").item() > 0.2
    assert ks_distance(z.sign(), "gaussian").item() > 0.3  # binary, right mean and variance
    u = torch.rand(2000, 8, generator=g)
    assert ks_distance(u, "uniform").item() < 0.04
    assert ks_distance(torch.sigmoid(3 * z), "uniform").item() > 0.1  # saturated, ~0.147
    assert abs(mmd_to_prior(z, "gaussian", seed=1).item()) < 0.01
    # (with its wide fixed bandwidth the MMD mostly sees location and scale: binary z.sign()
    # scores only ~0.001, so the shape is left to the KS distance)
    assert mmd_to_prior(z * 2.0, "gaussian", seed=1).item() > 0.05
    assert mmd_to_prior(z + 1.0, "gaussian", seed=1).item() > 0.1
    per = ks_distance(torch.cat([z[:, :4], z[:, 4:] + 2], 1), "gaussian", per_dim=True)
    assert per.shape == (8,) and per[:4].max() < 0.05 and per[4:].min() > 0.5
    s = prior_match_stats(z, "gaussian")
    assert set(s) == {"ks", "mmd2", "mean_abs_mean", "mean_std"}
    with pytest.raises(ConfigError, match="unknown prior"):
        ks_distance(z, "laplace")


# ------------------------------------------------------------ noise-injected DIM


def test_dim_noise_config_is_checked() -> None:
    DIMConfig(noise="gaussian", prior="gaussian").validate()
    DIMConfig(noise="uniform", prior="uniform").validate()
    with pytest.raises(ConfigError, match="dim.prior"):
        DIMConfig(noise="gaussian", prior="uniform").validate()
    with pytest.raises(ConfigError, match="dim.noise"):
        DIMConfig(noise="laplace").validate()
    with pytest.raises(ConfigError, match="dim.noise_scale"):
        DIMConfig(noise="gaussian", prior="gaussian", noise_scale=0.0).validate()
    with pytest.raises(ConfigError, match="y_activation"):
        DIMConfig(noise="gaussian", prior="gaussian", y_activation="tanh").validate()


def test_inject_noise_statistics() -> None:
    g = torch.Generator().manual_seed(0)
    y = torch.zeros(20000, 3)
    zg = inject_noise(y, "gaussian", 0.5, g)
    assert zg.std().item() == pytest.approx(0.5, rel=0.03)
    zu = inject_noise(y, "uniform", 0.2, g)
    assert zu.min().item() >= -0.2 and zu.max().item() <= 0.2
    assert zu.std().item() == pytest.approx(0.2 / 3**0.5, rel=0.03)
    assert inject_noise(y, "none", 1.0) is y


def test_dim_noise_goes_to_the_mi_heads_only() -> None:
    torch.manual_seed(0)
    x = torch.randn(16, 1, 8, 8)
    model = build_dim(DIMConfig(**TINY_DIM, prior="gaussian", noise="gaussian", noise_scale=1.0),
                      1, 8)
    a, b = model.encoder_loss(x), model.encoder_loss(x)
    assert not torch.allclose(a.loss, b.loss)  # fresh noise each call
    assert torch.allclose(a.y, b.y)  # the representation itself is clean
    assert a.y.mean(0).abs().max().item() < 1e-4  # and normalised per dimension
    assert a.y.std(0, unbiased=False).sub(1).abs().max().item() < 1e-3
    plain = build_dim(DIMConfig(**TINY_DIM, prior="gaussian"), 1, 8)
    assert torch.allclose(plain.encoder_loss(x).loss, plain.encoder_loss(x).loss)
    assert "encoder.norm.running_mean" in model.state_dict()
    assert not any(k.startswith("encoder.norm") for k in plain.state_dict())
    u = build_dim(DIMConfig(**TINY_DIM, prior="uniform", noise="uniform", noise_scale=0.1), 1, 8)
    y = u.encoder_loss(x).y
    assert y.min().item() >= 0.0 and y.max().item() <= 1.0


def _train_tiny_dim(cfg: DIMConfig, steps: int = 120) -> torch.Tensor:
    """Train a tiny DIM on 8x8 images rendered from 2 bimodal latents; Y of 1000 images."""
    torch.manual_seed(0)
    model = build_dim(cfg, 1, 8)
    opt = torch.optim.Adam(model.encoder_parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1)
    basis = torch.randn(2, 64, generator=torch.Generator().manual_seed(5))

    def batch(n: int) -> torch.Tensor:
        lat = 1.5 * (torch.randint(0, 2, (n, 2), generator=g) * 2 - 1)
        lat = lat + 0.3 * torch.randn(n, 2, generator=g)
        return torch.tanh(0.5 * lat @ basis).view(n, 1, 8, 8)

    for _ in range(steps):
        out = model.encoder_loss(batch(64))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        return model(batch(1000))[1]


def test_noise_injection_moves_y_toward_the_gaussian_prior() -> None:
    """Plain DIM (no prior term, Y unconstrained) vs noise-injected DIM (s = 0.3), the same
    tiny model and data (latents with two modes each, so nothing is Gaussian to begin
    with): the noise-injected Y is much closer to N(0, I) in KS and MMD (measured: KS 0.32
    -> 0.13, MMD^2 0.21 -> 0.05). At this size and step count the gain comes from the
    method's normalisation of Y; a negligible noise scale (1e-3) gives the same KS (0.12):
    the effect of the noise scale itself is measured on Fashion-MNIST (see the docs)."""
    common = dict(**TINY_DIM, prior="gaussian", gamma=0.0, alpha=1.0, beta=0.0,
                  global_estimator="infonce")
    plain = _train_tiny_dim(DIMConfig(**common))
    noisy = _train_tiny_dim(DIMConfig(**common, noise="gaussian", noise_scale=0.3))
    ks_plain, ks_noisy = ks_distance(plain, "gaussian").item(), ks_distance(noisy, "gaussian").item()
    assert ks_noisy < 0.15 and ks_noisy < 0.5 * ks_plain, (ks_plain, ks_noisy)
    assert mmd_to_prior(noisy, "gaussian").item() < mmd_to_prior(plain, "gaussian").item()


# ------------------------------------------------------------------ AMDIM mixture


def test_mixture_head_shapes_and_residual() -> None:
    head = MixtureHead(6, 3, 10)
    f = torch.randn(5, 6)
    out = head(f)
    assert out.shape == (5, 3, 6)
    torch.nn.init.zeros_(head.net[2].weight)
    torch.nn.init.zeros_(head.net[2].bias)
    assert torch.allclose(head(f), f[:, None, :].expand(5, 3, 6))  # the residual path


def test_mixture_nce_q_sums_to_one_and_k1_is_plain_nce() -> None:
    torch.manual_seed(0)
    src, trg = torch.randn(4, 3, 8), torch.randn(4, 25, 8)
    out = mixture_nce(src, trg, tau=0.5, alpha=0.1)
    assert out.q.shape == (4, 3, 25)
    assert torch.allclose(out.q.sum(1), torch.ones(4, 25), atol=1e-6)
    assert 0 <= out.entropy.item() <= torch.log(torch.tensor(3.0)).item() + 1e-6
    assert torch.allclose(out.loss, out.nce - 0.1 * out.entropy + out.penalty)
    for pen, clip in ((0.0, 0.0), (0.04, 10.0)):
        one = mixture_nce(src[:, :1], trg, penalty=pen, clip=clip, alpha=0.5)
        ref = amdim_nce(src[:, 0], trg, penalty=pen, clip=clip)
        assert torch.allclose(one.loss, ref.loss, atol=1e-6)
        assert torch.allclose(one.mi, ref.mi, atol=1e-6) and torch.allclose(one.acc, ref.acc)
        assert one.entropy.item() == 0.0
    # q follows the scores: a component aligned with the positives gets the mass
    trg = torch.randn(4, 1, 8)
    src = torch.cat([trg * 4, torch.randn(4, 1, 8) * 0.01], 1)  # component 0 = the positive
    q = mixture_nce(src, trg, penalty=0.0, clip=0.0, tau=0.1).q
    assert (q[:, 0] > 0.9).all()


def test_amdim_model_with_mixture_trains_and_k1_matches_today() -> None:
    torch.manual_seed(0)
    x1, x2 = torch.randn(4, 1, 28, 28), torch.randn(4, 1, 28, 28)
    base = build_amdim(AMDIMConfig(ndf=4, n_rkhs=16), 1, 28)
    assert base.mixture is None
    g = torch.Generator().manual_seed(0)
    loss, metrics, _ = base.loss(x1, x2, g)
    out = base.encoder(torch.cat([x1, x2]))
    terms = amdim_loss(out, 4, base.cfg, torch.Generator().manual_seed(0))
    assert torch.allclose(loss, sum(t.loss for t in terms.values()))
    assert not any(k.startswith("mix_entropy") for k in metrics)
    mix = build_amdim(AMDIMConfig(ndf=4, n_rkhs=16, n_mix=3, mix_alpha=0.1), 1, 28)
    loss, metrics, feats = mix.loss(x1, x2, torch.Generator().manual_seed(0))
    assert feats.shape == (4, 16) and torch.isfinite(loss)
    assert 0 < metrics["mix_entropy/1t5"] <= torch.log(torch.tensor(3.0)).item() + 1e-6
    terms = amdim_loss(mix.encoder(torch.cat([x1, x2])), 4, mix.cfg,
                       torch.Generator().manual_seed(0), mixture=mix.mixture)
    assert isinstance(terms["1t7"], MixtureNCEOutput) and not isinstance(terms["5t5"],
                                                                          MixtureNCEOutput)
    loss.backward()
    assert mix.mixture.net[0].weight.grad is not None
    with pytest.raises(ConfigError, match="amdim.n_mix"):
        AMDIMConfig(n_mix=0).validate()
