"""Tasks with MI known in closed form: correlated Gaussians and invertible transforms.

Gaussian task of dimension ``d`` and MI ``I`` (nats): ``X, Y`` in R^d, standard normal
marginals, coordinate ``i`` of ``X`` correlated with coordinate ``i`` of ``Y`` only, with
the same correlation ``rho``::

    I(X; Y) = -(d / 2) log(1 - rho^2)      so      rho = sqrt(1 - exp(-2 I / d)).

MI is invariant under invertible maps applied to ``X`` and ``Y`` separately, so
``(f(X), g(Y))`` has the same MI. As in the "Beyond Normal" benchmark (Czyz et al. 2023)
the transforms change the shape of the distribution, not the MI:

- ``gaussian``: none;
- ``halfcube``: ``sign(t) |t|^{3/2}`` on every coordinate (heavier tails);
- ``asinh``: ``asinh(t)`` on every coordinate (lighter tails, compressed);
- ``randmap``: a fixed random invertible linear map per variable (``Q diag(e^u)``,
  ``Q`` orthogonal, ``u`` uniform in [-1, 1], drawn from the task's seed): mixes the
  coordinates, so the correlation is no longer axis-aligned.

:meth:`Task.log_ratio` gives the optimal critic ``log p(x, y) / (p(x) p(y))`` on the
*untransformed* samples (for tests of the estimators at the optimum).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["TRANSFORMS", "Task", "rho_for_mi", "gaussian_mi"]

TRANSFORMS = ("gaussian", "halfcube", "asinh", "randmap")


def rho_for_mi(mi: float, dim: int) -> float:
    """Per-coordinate correlation giving total MI ``mi`` nats in ``dim`` dimensions."""
    if mi < 0 or dim < 1:
        raise ValueError(f"need mi >= 0 and dim >= 1, got mi={mi}, dim={dim}")
    return math.sqrt(-math.expm1(-2.0 * mi / dim))


def gaussian_mi(rho: float, dim: int) -> float:
    """``-(dim / 2) log(1 - rho^2)`` nats."""
    return -0.5 * dim * math.log1p(-rho * rho)


def _random_invertible(dim: int, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    u = 2.0 * torch.rand(dim, generator=g, dtype=torch.float64) - 1.0
    return (q * torch.exp(u)[None, :]).float()  # Q diag(e^u), condition number <= e^2


@dataclass(frozen=True)
class Task:
    """A benchmark task: ``dim``-dimensional ``X, Y`` with ``mi`` nats, then ``transform``.

    ``seed`` fixes the random map of ``randmap`` (the samples use the generator passed
    to :meth:`sample`).
    """

    mi: float
    dim: int = 2
    transform: str = "gaussian"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.transform not in TRANSFORMS:
            raise ValueError(f"unknown transform {self.transform!r}; choose one of {TRANSFORMS}")
        rho_for_mi(self.mi, self.dim)  # validates

    @property
    def name(self) -> str:
        return f"{self.transform}-d{self.dim}-mi{self.mi:g}"

    @property
    def rho(self) -> float:
        return rho_for_mi(self.mi, self.dim)

    def sample_gaussian(self, n: int, generator: torch.Generator | None = None
                        ) -> tuple[Tensor, Tensor]:
        """``n`` untransformed pairs: ``(x, y)``, each ``(n, dim)`` float32."""
        r = self.rho
        x = torch.randn(n, self.dim, generator=generator)
        e = torch.randn(n, self.dim, generator=generator)
        return x, r * x + math.sqrt(max(1.0 - r * r, 0.0)) * e

    def transform_pair(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Apply the task's invertible maps to ``x`` and ``y`` (each ``(n, dim)``)."""
        t = self.transform
        if t == "halfcube":
            return x.sign() * x.abs().pow(1.5), y.sign() * y.abs().pow(1.5)
        if t == "asinh":
            return torch.asinh(x), torch.asinh(y)
        if t == "randmap":
            a = _random_invertible(self.dim, 2 * self.seed + 1).to(x)
            b = _random_invertible(self.dim, 2 * self.seed + 2).to(y)
            return x @ a.t(), y @ b.t()
        return x, y

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``n`` pairs of the task: ``(x, y)``, each ``(n, dim)`` float32."""
        return self.transform_pair(*self.sample_gaussian(n, generator))

    def log_ratio(self, x: Tensor, y: Tensor) -> Tensor:
        """Optimal critic on *untransformed* samples: ``(n, dim), (m, dim) -> (n, m)``,
        entry ``(i, j) = log p(x_i, y_j) / (p(x_i) p(y_j))``."""
        r = self.rho
        v = 1.0 - r * r
        if v <= 0:
            raise ValueError("log_ratio: rho = 1 (infinite MI)")
        # log N(y; r x, v) - log N(y; 0, 1), summed over coordinates
        diff = y[None, :, :] - r * x[:, None, :]
        quad = -0.5 * diff.pow(2).sum(-1) / v + 0.5 * y.pow(2).sum(-1)[None, :]
        return quad - 0.5 * self.dim * math.log(v)
