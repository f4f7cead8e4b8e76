"""Deep InfoMax (Hjelm et al., 2019): global and local MI plus adversarial prior matching.

Encoder::

    x (B, C, S, S) -> 3x3 conv (ndf) -> 4x4/2 conv (2 ndf) -> 4x4/2 conv (local_channels)
                   = M (B, local_channels, S/4, S/4)            7x7 for 28x28, 8x8 for 32x32
    M -> flatten -> Linear(hidden) -> BN -> ReLU -> Linear(y_dim) -> activation = Y (B, y_dim)

The activation is a sigmoid when the prior is uniform on [0, 1]^y_dim (so Y can match it)
and the identity for a standard Gaussian prior (``y_activation`` overrides it).

Objective of the encoder (to minimise)::

    alpha * L_global + beta * L_local + gamma * L_prior_generator

- ``L_global``: estimator loss on the (B, B) score matrix ``T(M_j, Y_i)`` (diagonal =
  positives: the image's own feature map; off-diagonal = other images' maps). ``T`` is a
  small discriminator: a conv over M, flattened, added to a projection of Y
  ("concat-and-convolve", the concat done as a sum of two linear maps so all B^2 pairs
  cost one broadcast), then an MLP to a scalar.
- ``L_local``: estimator loss on the (B, B * L) matrix ``phi(Y_i) . psi(M_j)[l]``
  ("encode-and-dot-product"); row ``i`` has the ``L`` locations of its own map as
  positives and all locations of the other images as negatives, so the MI is averaged
  over locations.
- ``L_prior_generator``: the encoder plays the generator against a discriminator ``D``
  that tells prior samples from Y. ``D`` has its *own optimiser* and minimises the GAN
  (JSD) loss ``softplus(-D(z)) + softplus(D(Y))`` (prior = positive); the encoder
  minimises the same estimator with the labels flipped (non-saturating:
  ``softplus(-D(Y))``), i.e. a real adversarial game, not a fixed penalty.

Noise-injected DIM (Butakov et al. 2024, "Efficient Distribution Matching of
Representations via Noise-Injected Deep InfoMax"): with ``noise`` set, Y is *normalised*
and independent noise is added to it before the MI heads see it, while the objective stays
the same InfoMax::

    gaussian: Y = BN(fc(M)) (zero mean, unit variance per dimension, no affine),
              Y_mi = Y + s * N(0, I);   I(X; Y_mi) <= (d / 2) log(1 + 1 / s^2),
    uniform:  Y = sigmoid(fc(M)) in [0, 1]^d,
              Y_mi = Y + U([-s, s]^d);  I(X; Y_mi) <= d log(1 + 1 / (2 s)),

with equality exactly when Y is N(0, I) (resp. uniform on the cube, as s -> 0): the
entropy of ``Y + Z`` is largest for that Y under the normalisation (the paper's Gaussian
and uniform distribution-matching theorems), so maximising the MI pushes Y toward the
prior with no discriminator. ``s`` (``noise_scale``) trades MI (downstream accuracy)
against matching. The noise is used only inside :meth:`DIMModel.encoder_loss`; ``Y``
returned by the encoder/``features`` is the clean normalised vector. ``gamma`` (the
adversarial term) may be combined with it or set to 0.

Every term calls the loss core (:func:`cpc_seq.losses.select.estimate`); the global
and local terms use the configured estimator (``jsd`` default, ``dv``, ``infonce``), the
prior game uses ``jsd`` (the GAN objective). The core works in log-sum-exp/softplus form,
so no ``log(0)`` and no NaN for any score value.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cpc_seq.config import check, check_literals
from cpc_seq.losses.estimators import Estimator, EstimatorOutput, jsd
from cpc_seq.losses.select import estimate

__all__ = [
    "DIMConfig",
    "DIMEncoder",
    "DIMModel",
    "DIMOutput",
    "build_dim",
    "sample_prior",
    "global_scores",
    "local_scores",
    "inject_noise",
    "NOISES",
]

Noise = Literal["none", "gaussian", "uniform"]
NOISES = typing.get_args(Noise)


@dataclass
class DIMConfig:
    """DIM model and loss options.

    ``ndf``: width of the first conv layers; ``local_channels``: channels of M;
    ``hidden``: width of the fully connected layers; ``y_dim``: size of Y;
    ``mi_dim``: embedding size of the local dot-product scores; ``global_hidden``: width
    of the global discriminator (evaluated on all B^2 pairs); ``disc_hidden``: width of
    the prior discriminator;
    ``alpha``/``beta``/``gamma``: weights of the global, local and prior terms;
    ``global_estimator``/``local_estimator``: ``jsd`` | ``dv`` | ``infonce``;
    ``prior``: ``uniform`` ([0, 1]) | ``gaussian``; ``y_activation``: ``auto`` (sigmoid for
    the uniform prior, none for the Gaussian), ``sigmoid``, ``tanh`` or ``none``;
    ``noise``: ``none`` | ``gaussian`` | ``uniform`` (noise-injected DIM, see the module
    docstring; needs the matching ``prior`` and ``y_activation: auto``);
    ``noise_scale``: ``s``, the Gaussian noise's standard deviation or the uniform noise's
    half-width. ``batch_norm``: batch norm in the encoder (under DDP each process
    normalises over its share of the batch).
    """

    ndf: int = 64
    local_channels: int = 128
    hidden: int = 512
    y_dim: int = 64
    mi_dim: int = 256
    alpha: float = 0.5
    beta: float = 1.0
    gamma: float = 0.1
    global_estimator: Estimator = "jsd"
    local_estimator: Estimator = "jsd"
    prior: Literal["uniform", "gaussian"] = "uniform"
    y_activation: Literal["auto", "sigmoid", "tanh", "none"] = "auto"
    global_hidden: int = 128
    disc_hidden: int = 256
    noise: Noise = "none"
    noise_scale: float = 0.5
    batch_norm: bool = True

    def validate(self) -> None:
        check_literals(self, "dim.")
        for key in ("ndf", "local_channels", "hidden", "y_dim", "mi_dim", "global_hidden",
                    "disc_hidden"):
            check(getattr(self, key) > 0, f"dim.{key}", "must be positive")
        for key in ("alpha", "beta", "gamma"):
            check(getattr(self, key) >= 0, f"dim.{key}", "must be >= 0")
        check(self.alpha + self.beta > 0, "dim.alpha", "alpha + beta must be > 0 (no MI term)")
        check(self.noise_scale > 0, "dim.noise_scale", "must be positive")
        if self.noise != "none":
            check(self.prior == self.noise, "dim.prior",
                  f"noise={self.noise} matches the {self.noise} prior; set dim.prior={self.noise}")
            check(self.y_activation == "auto", "dim.y_activation",
                  "must be auto with noise (the normalisation is part of the method)")

    def activation(self) -> str:
        """The Y activation after resolving ``auto``."""
        if self.y_activation != "auto":
            return self.y_activation
        return "sigmoid" if self.prior == "uniform" else "none"


class DIMEncoder(nn.Module):
    """``x (B, C, S, S) -> (M (B, local_channels, S/4, S/4), Y (B, y_dim))``."""

    def __init__(self, in_channels: int, image_size: int, cfg: DIMConfig) -> None:
        super().__init__()
        if image_size % 4:
            from cpc_seq.errors import ConfigError

            raise ConfigError(f"DIM encoder: image size {image_size} must be a multiple of 4")
        ndf, c = cfg.ndf, cfg.local_channels
        bn2 = nn.BatchNorm2d if cfg.batch_norm else (lambda n: nn.Identity())
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, ndf, 3, 1, 1, bias=False), bn2(ndf), nn.ReLU(),
            nn.Conv2d(ndf, 2 * ndf, 4, 2, 1, bias=False), bn2(2 * ndf), nn.ReLU(),
            nn.Conv2d(2 * ndf, c, 4, 2, 1, bias=False), bn2(c), nn.ReLU(),
        )
        self.map_size = image_size // 4
        self.fc = nn.Sequential(
            nn.Flatten(), nn.Linear(c * self.map_size**2, cfg.hidden, bias=False),
            nn.BatchNorm1d(cfg.hidden) if cfg.batch_norm else nn.Identity(), nn.ReLU(),
            nn.Linear(cfg.hidden, cfg.y_dim),
        )
        self.act = cfg.activation()
        # noise-injected DIM, Gaussian: per-dimension standardisation of Y (no affine)
        self.norm = nn.BatchNorm1d(cfg.y_dim, affine=False) if cfg.noise == "gaussian" \
            else nn.Identity()

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        m = self.conv(x)
        y = self.norm(self.fc(m))
        if self.act == "sigmoid":
            y = torch.sigmoid(y)
        elif self.act == "tanh":
            y = torch.tanh(y)
        return m, y


class GlobalDiscriminator(nn.Module):
    """``T(M_j, Y_i)`` for every pair: ``M (B, C, H, W), Y (B, y) -> (B, B)`` (row i = Y_i)."""

    def __init__(self, c: int, map_size: int, y_dim: int, hidden: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(c, 64, 3), nn.ReLU(), nn.Conv2d(64, 32, 3))
        n = 32 * (map_size - 4) ** 2 if map_size > 4 else 0
        if n == 0:  # maps smaller than 5x5: skip the convs
            self.conv = nn.Identity()
            n = c * map_size**2
        self.from_m = nn.Linear(n, hidden)
        self.from_y = nn.Linear(y_dim, hidden, bias=False)
        self.mlp = nn.Sequential(nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 1))

    def forward(self, m: Tensor, y: Tensor) -> Tensor:
        a = self.from_m(self.conv(m).flatten(1))  # (B, H) per map j
        b = self.from_y(y)  # (B, H) per global i
        h = b[:, None, :] + a[None, :, :]  # (B_i, B_j, H) = first layer of concat(Y_i, M_j)
        return self.mlp(h).squeeze(-1)


class LocalEmbed(nn.Module):
    """Residual 1x1-conv MLP for M and MLP for Y into a common ``mi_dim`` space."""

    def __init__(self, c: int, y_dim: int, d: int) -> None:
        super().__init__()
        self.m_net = nn.Sequential(nn.Conv2d(c, d, 1), nn.ReLU(), nn.Conv2d(d, d, 1))
        self.m_short = nn.Conv2d(c, d, 1, bias=False)
        self.y_net = nn.Sequential(nn.Linear(y_dim, d), nn.ReLU(), nn.Linear(d, d))
        self.y_short = nn.Linear(y_dim, d, bias=False)

    def forward(self, m: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """``M (B, C, H, W), Y (B, y) -> (psi(M) (B, H*W, d), phi(Y) (B, d))``."""
        pm = self.m_net(m) + self.m_short(m)
        return pm.flatten(2).transpose(1, 2), self.y_net(y) + self.y_short(y)


class PriorDiscriminator(nn.Module):
    """``D``: ``(N, y_dim) -> (N,)`` logits, high for prior samples."""

    def __init__(self, y_dim: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(y_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden // 2), nn.ReLU(),
            nn.Linear(hidden // 2, 1),
        )

    def forward(self, y: Tensor) -> Tensor:
        return self.net(y).squeeze(-1)


@dataclass
class DIMOutput:
    """One forward pass: the encoder loss and its parts.

    ``loss``: ``alpha L_global + beta L_local + gamma L_gen`` (to minimise);
    ``global_``/``local``: estimator outputs (``.mi`` = MI estimate); ``gen``: the encoder's
    prior-matching loss; ``m`` (B, C, H, W), ``y`` (B, y_dim): the features.
    """

    loss: Tensor
    global_: EstimatorOutput
    local: EstimatorOutput
    gen: Tensor
    m: Tensor
    y: Tensor


def global_scores(disc: GlobalDiscriminator, m: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """``(B, B)`` scores ``T(M_j, Y_i)`` and the positive mask (the diagonal)."""
    s = disc(m, y)
    return s, torch.eye(s.shape[0], dtype=torch.bool, device=s.device)


def local_scores(embed: LocalEmbed, m: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """``(B, B*L)`` scores ``phi(Y_i) . psi(M_j)[l]`` and the positive mask (j == i)."""
    pm, py = embed(m, y)  # (B, L, d), (B, d)
    b, n_loc, d = pm.shape
    s = py @ pm.reshape(b * n_loc, d).t()
    owner = torch.arange(b, device=s.device).repeat_interleave(n_loc)
    return s, torch.arange(b, device=s.device)[:, None] == owner[None, :]


def inject_noise(y: Tensor, kind: str, scale: float,
                 generator: torch.Generator | None = None) -> Tensor:
    """``Y + Z`` with independent ``Z``: ``N(0, scale^2 I)`` (``gaussian``) or
    ``U([-scale, scale]^d)`` (``uniform``); ``none`` returns ``y``. ``y`` (B, d)."""
    if kind == "none":
        return y
    if kind == "gaussian":
        z = torch.randn(y.shape, generator=generator, device="cpu" if generator else y.device)
    elif kind == "uniform":
        z = 2.0 * torch.rand(y.shape, generator=generator,
                             device="cpu" if generator else y.device) - 1.0
    else:
        raise ValueError(f"unknown noise {kind!r}; choose one of {NOISES}")
    return y + scale * z.to(y.device, y.dtype)


def sample_prior(kind: str, n: int, dim: int, device: torch.device,
                 generator: torch.Generator | None = None) -> Tensor:
    """``(n, dim)`` samples: uniform on [0, 1) or standard normal."""
    if kind == "uniform":
        z = torch.rand(n, dim, generator=generator)
    else:
        z = torch.randn(n, dim, generator=generator)
    return z.to(device)


def _prior_game(d_real: Tensor, d_fake: Tensor) -> Tensor:
    """GAN loss through the core's JSD: prior scores positive, encoded scores negative.

    ``jsd`` loss = E_pos[softplus(-s)] + E_neg[softplus(s)] on a single (1, 2N) row.
    """
    scores = torch.cat([d_real, d_fake])[None, :]
    pos = torch.zeros_like(scores, dtype=torch.bool)
    pos[0, : d_real.shape[0]] = True
    return jsd(scores, pos).loss


class DIMModel(nn.Module):
    """Encoder, MI discriminators and the prior discriminator.

    ``encoder_parameters()`` (encoder + MI heads) and ``prior_parameters()`` (``D``) are
    trained by two optimisers; see :mod:`cpc_seq.images.train`.
    """

    def __init__(self, in_channels: int, image_size: int, cfg: DIMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = DIMEncoder(in_channels, image_size, cfg)
        ms = self.encoder.map_size
        self.global_disc = GlobalDiscriminator(cfg.local_channels, ms, cfg.y_dim,
                                               cfg.global_hidden)
        self.local_embed = LocalEmbed(cfg.local_channels, cfg.y_dim, cfg.mi_dim)
        self.prior_disc = PriorDiscriminator(cfg.y_dim, cfg.disc_hidden)
        self.in_channels = in_channels
        self.image_size = image_size

    def encoder_parameters(self) -> list[nn.Parameter]:
        """Parameters of the encoder player: encoder, global and local MI heads."""
        return [*self.encoder.parameters(), *self.global_disc.parameters(),
                *self.local_embed.parameters()]

    def prior_parameters(self) -> list[nn.Parameter]:
        """Parameters of the prior discriminator ``D``."""
        return list(self.prior_disc.parameters())

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x (B, C, S, S) -> (M (B, C', S/4, S/4), Y (B, y_dim))``."""
        return self.encoder(x)

    def encoder_loss(self, x: Tensor) -> DIMOutput:
        """The encoder's objective on a batch ``x (B, C, S, S)``, ``B >= 2``."""
        cfg = self.cfg
        m, y = self.encoder(x)
        y_mi = inject_noise(y, cfg.noise, cfg.noise_scale)  # = y without noise
        zero = y.new_zeros(())
        none = EstimatorOutput(loss=zero, mi=zero)
        g = estimate(cfg.global_estimator, *global_scores(self.global_disc, m, y_mi)) \
            if cfg.alpha > 0 else none
        loc = estimate(cfg.local_estimator, *local_scores(self.local_embed, m, y_mi)) \
            if cfg.beta > 0 else none
        if cfg.gamma > 0:
            # generator: the same GAN estimator with the labels flipped (Y "positive").
            d_fake = self.prior_disc(y)
            gen = _prior_game(d_fake, d_fake.new_zeros((0,)))
        else:
            gen = zero
        loss = cfg.alpha * g.loss + cfg.beta * loc.loss + cfg.gamma * gen
        return DIMOutput(loss=loss, global_=g, local=loc, gen=gen, m=m, y=y)

    def prior_loss(self, y: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The discriminator's GAN loss: prior samples vs detached encoder outputs ``y``."""
        z = sample_prior(self.cfg.prior, y.shape[0], y.shape[1], y.device, generator)
        return _prior_game(self.prior_disc(z), self.prior_disc(y.detach()))

    @torch.no_grad()
    def features(self, x: Tensor, grid: int = 2) -> dict[str, Tensor]:
        """Frozen features for probes: ``y`` (B, y_dim), ``local``: M average-pooled to
        ``grid x grid`` (B, local_channels * grid^2), ``fc``: the hidden FC layer
        (B, hidden, after ReLU)."""
        m, y = self.encoder(x)
        fc = self.encoder.fc[:4](m)
        return {"y": y, "local": F.adaptive_avg_pool2d(m, grid).flatten(1), "fc": fc}


def build_dim(cfg: DIMConfig, in_channels: int, image_size: int) -> DIMModel:
    """Factory: ``DIMModel`` for ``in_channels`` x ``image_size`` x ``image_size`` inputs."""
    return DIMModel(in_channels, image_size, cfg)
