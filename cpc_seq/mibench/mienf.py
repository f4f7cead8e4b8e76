"""MIENF: mutual information estimated through normalizing flows (Butakov et al.,
"Mutual Information Estimation via Normalizing Flows", NeurIPS 2024).

One flow per variable, ``xi = f(x)`` and ``eta = g(y)``. The pair of maps acts on the
Cartesian product, so it is invertible there and ``I(X; Y) = I(xi; eta)``. Both flows
are trained together by maximum likelihood so that the latent pair follows a Gaussian,
whose MI has a closed form::

    log p(x, y) = log N([f(x), g(y)]; base) + log|det df/dx| + log|det dg/dy|.

Two bases (``form``):

- ``full`` (N-MIENF): a joint Gaussian ``N(mu, S)`` over ``(xi, eta)`` with learnable mean
  and Cholesky factor. The estimate is ``1/2 [log det S_xixi + log det S_etaeta - log det S]``
  of the latents' sample covariance over all ``N`` pairs (the maximum-likelihood ``S`` for
  the trained flows).
- ``tridiag`` (tridiag-N-MIENF): standard normal marginals and only matched coordinates
  correlated, ``corr(xi_i, eta_j) = rho_i [i = j]`` for ``i < min(d_x, d_y)``,
  ``rho_i = tanh(a_i)`` learnable. The estimate is ``-1/2 sum_i log(1 - rho_i^2)``
  (``rho = 0.75`` gives 0.4133 nats per pair).

The flows are ``zuko`` flows (``nsf``: neural spline, ``maf``: affine autoregressive,
``realnvp``: affine coupling). Inputs are first mapped to their canonical variates
(``whiten``, default): each variable is centred, whitened and rotated by the sample's
CCA, an invertible linear map per variable, so the MI is unchanged, the linear part of
the dependence is already aligned coordinate by coordinate (what the tridiagonal base
needs), and the base starts at the canonical correlations; the flows then learn the
non-linear part. Without ``whiten`` the inputs are only standardised per coordinate.
A held-out ``val_fraction`` of the pairs picks the training step with the lowest
validation NLL (early stopping); the estimate uses the flows of that step.
"""

from __future__ import annotations

import copy
import math
import typing
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import zuko
from torch import Tensor, nn

from cpc_seq.config import check, check_literals
from cpc_seq.mibench.baselines import canonical_variates, gaussian_mi_from_cov

__all__ = ["FLOWS", "FORMS", "MienfConfig", "MienfModel", "mienf_mi", "build_flow"]

Flow = Literal["nsf", "maf", "realnvp"]
Form = Literal["full", "tridiag"]
FLOWS = typing.get_args(Flow)
FORMS = typing.get_args(Form)
LOG_2PI = math.log(2.0 * math.pi)


@dataclass
class MienfConfig:
    """Settings of one MIENF fit (plain data)."""

    form: Form = "full"
    flow: Flow = "nsf"
    transforms: int = 2
    hidden: int = 64  # width of the flows' MLPs (at least 2 x the variable's dim is used)
    bins: int = 8  # spline bins (nsf)
    steps: int = 1500
    batch_size: int = 256
    lr: float = 1e-3
    val_fraction: float = 0.1
    eval_every: int = 50
    patience: int = 6  # evaluations without a better validation NLL before stopping
    whiten: bool = True  # map each variable to its canonical variates first
    seed: int = 0

    def validate(self) -> None:
        check_literals(self)
        for key in ("transforms", "hidden", "bins", "steps", "batch_size", "eval_every",
                    "patience"):
            check(getattr(self, key) > 0, key, "must be positive")
        check(self.lr > 0, "lr", "must be positive")
        check(0 <= self.val_fraction < 1, "val_fraction", "must be in [0, 1)")


def build_flow(dim: int, cfg: MienfConfig) -> zuko.flows.Flow:
    """A ``zuko`` flow on ``dim`` features (``cfg.flow``, ``cfg.transforms`` layers) that
    starts as the identity map (the output layers of its networks are zeroed)."""
    hidden = (max(cfg.hidden, 2 * dim),) * 2
    if cfg.flow == "nsf":
        flow = zuko.flows.NSF(dim, transforms=cfg.transforms, bins=cfg.bins,
                              hidden_features=hidden)
    elif cfg.flow == "realnvp" and dim > 1:
        # coupling layers alternate halves: twice the layers of the autoregressive flows
        flow = zuko.flows.RealNVP(dim, transforms=2 * cfg.transforms, hidden_features=hidden)
    else:
        flow = zuko.flows.MAF(dim, transforms=cfg.transforms, hidden_features=hidden)
    with torch.no_grad():
        for m in flow.modules():
            if isinstance(getattr(m, "hyper", None), nn.Module):
                last = [p for p in m.hyper.modules() if isinstance(getattr(p, "weight", None),
                                                                    nn.Parameter)][-1]
                last.weight.zero_()
                if last.bias is not None:
                    last.bias.zero_()
            elif isinstance(getattr(m, "phi", None), nn.ParameterList):
                for p in m.phi:  # one-dimensional flows: the parameters themselves
                    p.zero_()
    return flow


class MienfModel(nn.Module):
    """Two flows and a Gaussian base over the latent pair.

    :meth:`log_prob` maps ``x (B, d_x), y (B, d_y)`` to ``(B,)`` joint log-densities.
    """

    def __init__(self, dim_x: int, dim_y: int, cfg: MienfConfig) -> None:
        super().__init__()
        self.dim_x, self.dim_y, self.form = dim_x, dim_y, cfg.form
        self.fx = build_flow(dim_x, cfg)
        self.fy = build_flow(dim_y, cfg)
        d = dim_x + dim_y
        if cfg.form == "full":
            self.loc = nn.Parameter(torch.zeros(d))
            self.tril = nn.Parameter(torch.zeros(d, d))  # strictly-lower part used
            self.log_diag = nn.Parameter(torch.zeros(d))
        else:
            self.atanh_rho = nn.Parameter(torch.zeros(min(dim_x, dim_y)))

    @torch.no_grad()
    def init_base(self, rho: Tensor) -> None:
        """Start the base at unit variances and cross-correlations ``rho`` between
        matched coordinates (``(min(d_x, d_y),)``, e.g. the canonical correlations)."""
        rho = rho.clamp(-0.999, 0.999)
        if self.form == "tridiag":
            self.atanh_rho.copy_(torch.atanh(rho))
            return
        d = self.dim_x + self.dim_y
        cov = torch.eye(d, dtype=torch.float64)
        k = torch.arange(rho.numel())
        cov[k, self.dim_x + k] = cov[self.dim_x + k, k] = rho.double()
        lo = torch.linalg.cholesky(cov).float()
        self.tril.copy_(torch.tril(lo, -1))
        self.log_diag.copy_(torch.diagonal(lo).log())

    def latents(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(xi (B, d_x), eta (B, d_y), log|det J| (B,))`` of both flows."""
        xi, lx = self.fx.transform().call_and_ladj(x)
        eta, ly = self.fy.transform().call_and_ladj(y)
        return xi, eta, lx + ly

    def scale_tril(self) -> Tensor:
        """Cholesky factor ``(D, D)`` of the full form's base covariance."""
        return torch.tril(self.tril, -1) + torch.diag(self.log_diag.exp())

    def base_log_prob(self, xi: Tensor, eta: Tensor) -> Tensor:
        """``(B,)`` log-density of the latent pair under the base Gaussian."""
        if self.form == "full":
            z = torch.cat([xi, eta], dim=1)
            dist = torch.distributions.MultivariateNormal(self.loc, scale_tril=self.scale_tril())
            return dist.log_prob(z)
        k = self.atanh_rho.numel()
        r = torch.tanh(self.atanh_rho)
        v = 1.0 - r * r
        a, b = xi[:, :k], eta[:, :k]
        pair = -LOG_2PI - 0.5 * torch.log(v) - (a * a - 2 * r * a * b + b * b) / (2 * v)
        rest = torch.cat([xi[:, k:], eta[:, k:]], dim=1)
        return pair.sum(1) - 0.5 * (rest * rest).sum(1) - 0.5 * LOG_2PI * rest.shape[1]

    def log_prob(self, x: Tensor, y: Tensor) -> Tensor:
        xi, eta, ladj = self.latents(x, y)
        return self.base_log_prob(xi, eta) + ladj

    @torch.no_grad()
    def estimate(self, x: Tensor, y: Tensor, batch_size: int = 4096) -> float:
        """MI in nats: the closed form of the fitted Gaussian (module docstring)."""
        if self.form == "tridiag":
            r = torch.tanh(self.atanh_rho).double()
            return float(-0.5 * torch.log1p(-r * r).sum())
        zs = [torch.cat(self.latents(x[i:i + batch_size], y[i:i + batch_size])[:2], 1)
              for i in range(0, x.shape[0], batch_size)]
        z = torch.cat(zs).double().numpy()
        return gaussian_mi_from_cov(np.cov(z, rowvar=False), self.dim_x)


def _standardise(a: np.ndarray) -> Tensor:
    a = np.asarray(a, dtype=np.float64)
    sd = a.std(0)
    return torch.from_numpy((a - a.mean(0)) / np.where(sd > 0, sd, 1.0)).float()


def mienf_mi(x: np.ndarray, y: np.ndarray, cfg: MienfConfig | None = None) -> float:
    """Fit MIENF to paired samples ``x (N, d_x)``, ``y (N, d_y)``; MI in nats."""
    cfg = cfg or MienfConfig()
    cfg.validate()
    if x.ndim == 1:
        x = x[:, None]
    if y.ndim == 1:
        y = y[:, None]
    if x.shape[0] != y.shape[0] or x.shape[0] < 4:
        raise ValueError(f"need paired samples (N >= 4), got {x.shape} and {y.shape}")
    torch.manual_seed(cfg.seed)
    if cfg.whiten:
        a, b, rho = canonical_variates(x, y)
        tx, ty = torch.from_numpy(a).float(), torch.from_numpy(b).float()
    else:
        tx, ty = _standardise(x), _standardise(y)
    n = tx.shape[0]
    gen = torch.Generator().manual_seed(cfg.seed)
    perm = torch.randperm(n, generator=gen)
    n_val = int(round(cfg.val_fraction * n)) if cfg.val_fraction > 0 else 0
    val, train = perm[:n_val], perm[n_val:]
    model = MienfModel(tx.shape[1], ty.shape[1], cfg)
    if cfg.whiten:
        model.init_base(torch.from_numpy(rho).float())
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    bs = min(cfg.batch_size, train.numel())
    best, best_state, bad = math.inf, None, 0
    for step in range(1, cfg.steps + 1):
        idx = train[torch.randint(train.numel(), (bs,), generator=gen)]
        loss = -model.log_prob(tx[idx], ty[idx]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        if n_val and (step % cfg.eval_every == 0 or step == cfg.steps):
            with torch.no_grad():
                v = float(-model.log_prob(tx[val], ty[val]).mean())
            if v < best:
                best, best_state, bad = v, copy.deepcopy(model.state_dict()), 0
            else:
                bad += 1
                if bad >= cfg.patience:
                    break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return model.estimate(tx, ty)
