"""The "Beyond Normal" tasks (Czyz et al., NeurIPS 2023): 40 distributions with known MI.

Sampled by this module from the paper's definitions (numpy, one ``Generator`` per
sample). Base distributions:

- bivariate normal, correlation 0.75 (``I = -1/2 log(1 - 0.75^2) = 0.413``);
- dense multinormal ``d x d``: every off-diagonal correlation 0.5 (0.294 ... 1.624 nats);
- 2-pair multinormal ``d x d``: ``corr(X_i, Y_i) = 0.8`` for ``i < 2``, all else independent
  (``I = -log(1 - 0.64) = 1.022``);
- Student-t ``d x d``, ``nu`` degrees of freedom, identity dispersion: ``(X, Y) = Z /
  sqrt(U / nu)`` with ``Z ~ N(0, I)``, ``U ~ chi2(nu)``; uncorrelated but dependent, with
  ``I = f(nu) + f(nu + d_x + d_y) - f(nu + d_x) - f(nu + d_y)``, ``f(a) = log Gamma(a/2) -
  (a/2) psi(a/2)`` (2 x 2, ``nu = 1``: 0.432);
- additive noise: ``X ~ U(0, 1)``, ``Y = X + U(-e, e)``; ``I = 1/(4e)`` for ``e >= 1/2``,
  ``e - log(2e)`` below.

Transforms (invertible per variable, so the MI is the base's): ``normal-cdf`` (Phi on
every coordinate: uniform margins), ``half-cube`` (``sign(t)|t|^1.5``), ``asinh``,
``wiggly`` (``t + sum a_k sin(b_k t + c_k)`` with the paper's coefficients, increasing),
``bimodal`` (the inverse CDF of a two-component Gaussian mixture applied to the uniform
margins: ``0.3 N(0,1) + 0.7 N(5,1)`` for X, ``0.5 N(-1,1) + 0.5 N(3,1)`` for Y),
``spiral`` (a rotation by ``||x||^2 / d`` radians, ``d`` the variable's dimension, in the
plane of coordinates 0, 1 of X and 1, 2 of Y: it keeps the norm, so it is invertible), ``swiss roll`` (the uniform X in
(0, 1) embedded in R^2 as ``t (cos t, sin t)``, ``t = 1.5 pi (1 + 2u)``: injective, so
``I`` is kept).

The task list is the package's benchmark list (39 tasks) plus the additive-noise task
with ``e = 0.1`` that the paper's figure shows. Scoring as in the paper: an estimate
``I_hat`` solves a task when ``|log(I_hat / I)| < log 1.5``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy.special import digamma, gammaln, ndtr

from cpc_seq.mibench.baselines import gaussian_mi_from_cov, rho_mi

__all__ = ["BNTask", "beyond_normal_tasks", "package_ids", "solved", "student_mi",
           "additive_mi", "SOLVED_FACTOR"]

SOLVED_FACTOR = 1.5

Pair = tuple[np.ndarray, np.ndarray]
Sampler = Callable[[int, np.random.Generator], Pair]


def solved(estimate: float, truth: float, factor: float = SOLVED_FACTOR) -> bool:
    """``|log(estimate / truth)| < log(factor)`` (a non-positive estimate never solves)."""
    if not (estimate > 0 and truth > 0 and math.isfinite(estimate)):
        return False
    return abs(math.log(estimate / truth)) < math.log(factor)


def student_mi(dim_x: int, dim_y: int, nu: float) -> float:
    """MI in nats of the split Student-t with identity dispersion (module docstring)."""
    def f(a: float) -> float:
        return float(gammaln(a / 2) - a / 2 * digamma(a / 2))

    return f(nu) + f(nu + dim_x + dim_y) - f(nu + dim_x) - f(nu + dim_y)


def additive_mi(eps: float) -> float:
    """MI in nats of ``X ~ U(0, 1)``, ``Y = X + U(-eps, eps)``."""
    return 1.0 / (4.0 * eps) if eps >= 0.5 else eps - math.log(2.0 * eps)


@dataclass(frozen=True)
class BNTask:
    """One task: ``name``, dimensions, true ``mi`` (nats) and a sampler
    ``(n, rng) -> (x (n, dim_x), y (n, dim_y))``."""

    name: str
    dim_x: int
    dim_y: int
    mi: float
    sampler: Sampler = field(repr=False, compare=False)

    def sample(self, n: int, seed: int) -> Pair:
        return self.sampler(n, np.random.default_rng(seed))


# ----------------------------------------------------------------- base samplers


def _gaussian(cov: np.ndarray, dim_x: int) -> Sampler:
    chol = np.linalg.cholesky(cov)

    def sample(n: int, rng: np.random.Generator) -> Pair:
        z = rng.standard_normal((n, cov.shape[0])) @ chol.T
        return z[:, :dim_x], z[:, dim_x:]

    return sample


def _dense_cov(dim_x: int, dim_y: int, off: float = 0.5) -> np.ndarray:
    d = dim_x + dim_y
    return np.full((d, d), off) + (1 - off) * np.eye(d)


def _two_pair_cov(dim_x: int, dim_y: int, rho: float = 0.8) -> np.ndarray:
    cov = np.eye(dim_x + dim_y)
    for i in range(2):
        cov[i, dim_x + i] = cov[dim_x + i, i] = rho
    return cov


def _student(dim_x: int, dim_y: int, nu: float) -> Sampler:
    def sample(n: int, rng: np.random.Generator) -> Pair:
        z = rng.standard_normal((n, dim_x + dim_y))
        t = z / np.sqrt(rng.chisquare(nu, size=(n, 1)) / nu)
        return t[:, :dim_x], t[:, dim_x:]

    return sample


def _additive(eps: float) -> Sampler:
    def sample(n: int, rng: np.random.Generator) -> Pair:
        x = rng.uniform(0.0, 1.0, size=(n, 1))
        return x, x + rng.uniform(-eps, eps, size=(n, 1))

    return sample


# ----------------------------------------------------------------- transforms

Transform = Callable[[np.ndarray], np.ndarray]


def _half_cube(t: np.ndarray) -> np.ndarray:
    return np.sign(t) * np.abs(t) ** 1.5


def _wiggly_x(t: np.ndarray) -> np.ndarray:
    return t + 0.4 * np.sin(t) + 0.2 * np.sin(1.7 * t + 1) + 0.03 * np.sin(3.3 * t - 2.5)


def _wiggly_y(t: np.ndarray) -> np.ndarray:
    return t - 0.4 * np.sin(0.4 * t) + 0.17 * np.sin(1.3 * t + 3.5) + 0.02 * np.sin(4.3 * t - 2.5)


def _mixture_icdf(weights: tuple[float, ...], means: tuple[float, ...]) -> Transform:
    """Inverse CDF of a unit-variance Gaussian mixture, by interpolation on a fine grid."""
    grid = np.linspace(min(means) - 9.0, max(means) + 9.0, 40001)
    cdf = sum(w * ndtr(grid - m) for w, m in zip(weights, means))

    def icdf(u: np.ndarray) -> np.ndarray:
        return np.interp(u, cdf, grid)

    return icdf


def _spiral(plane: tuple[int, int], speed: float) -> Transform:
    i, j = plane

    def rotate(t: np.ndarray) -> np.ndarray:
        angle = speed * (t * t).sum(1)
        c, s = np.cos(angle), np.sin(angle)
        out = t.copy()
        out[:, i] = c * t[:, i] - s * t[:, j]
        out[:, j] = s * t[:, i] + c * t[:, j]
        return out

    return rotate


def _swiss_roll(u: np.ndarray) -> np.ndarray:
    t = 1.5 * np.pi * (1.0 + 2.0 * u[:, 0])
    return np.stack([t * np.cos(t), t * np.sin(t)], axis=1) / 21.0


def _then(base: Sampler, fx: Transform, fy: Transform) -> Sampler:
    def sample(n: int, rng: np.random.Generator) -> Pair:
        x, y = base(n, rng)
        return fx(x), fy(y)

    return sample


def _same(f: Transform) -> tuple[Transform, Transform]:
    return f, f


# ----------------------------------------------------------------- the list


def beyond_normal_tasks() -> list[BNTask]:
    """The 40 tasks, in the paper's groups (1 x 1, embeddings, multinormal, Student-t,
    transformed multinormal, asinh Student-t)."""
    tasks: list[BNTask] = []

    def add(name: str, dx: int, dy: int, mi: float, sampler: Sampler) -> None:
        tasks.append(BNTask(name, dx, dy, mi, sampler))

    bivar = _gaussian(np.array([[1.0, 0.75], [0.75, 1.0]]), 1)
    mi_bivar = rho_mi(0.75)
    add("Bivariate normal 1x1", 1, 1, mi_bivar, bivar)
    add("Uniform margins 1x1", 1, 1, mi_bivar, _then(bivar, *_same(ndtr)))
    add("Additive noise 1x1 (e=0.1)", 1, 1, additive_mi(0.1), _additive(0.1))
    add("Additive noise 1x1 (e=0.75)", 1, 1, additive_mi(0.75), _additive(0.75))
    bimodal_x = _mixture_icdf((0.3, 0.7), (0.0, 5.0))
    bimodal_y = _mixture_icdf((0.5, 0.5), (-1.0, 3.0))
    add("Bimodal 1x1", 1, 1, mi_bivar,
        _then(bivar, lambda t: bimodal_x(ndtr(t)), lambda t: bimodal_y(ndtr(t))))
    add("Wiggly 1x1", 1, 1, mi_bivar, _then(bivar, _wiggly_x, _wiggly_y))
    add("Half-cube 1x1", 1, 1, mi_bivar, _then(bivar, *_same(_half_cube)))
    add("Student-t 1x1 (dof=1)", 1, 1, student_mi(1, 1, 1), _student(1, 1, 1))
    add("Asinh @ Student-t 1x1 (dof=1)", 1, 1, student_mi(1, 1, 1),
        _then(_student(1, 1, 1), *_same(np.arcsinh)))
    add("Swiss roll 2x1", 2, 1, mi_bivar,
        _then(bivar, lambda t: _swiss_roll(ndtr(t)), ndtr))
    for d in (2, 3, 5, 25, 50):
        cov = _dense_cov(d, d)
        add(f"Multinormal {d}x{d} (dense)", d, d, gaussian_mi_from_cov(cov, d),
            _gaussian(cov, d))
    mi_pair = rho_mi([0.8, 0.8])
    for d in (2, 3, 5, 25):
        add(f"Multinormal {d}x{d} (2-pair)", d, d, mi_pair, _gaussian(_two_pair_cov(d, d), d))
    for d, nu in ((2, 1), (2, 2), (3, 2), (3, 3), (5, 2), (5, 3)):
        add(f"Student-t {d}x{d} (dof={nu})", d, d, student_mi(d, d, nu), _student(d, d, nu))
    for d in (3, 5, 25):
        pair = _gaussian(_two_pair_cov(d, d), d)
        add(f"Normal CDF @ Multinormal {d}x{d} (2-pair)", d, d, mi_pair,
            _then(pair, *_same(ndtr)))
        add(f"Half-cube @ Multinormal {d}x{d} (2-pair)", d, d, mi_pair,
            _then(pair, *_same(_half_cube)))
        sx, sy = _spiral((0, 1), 1.0 / d), _spiral((1, 2), 1.0 / d)
        add(f"Spiral @ Multinormal {d}x{d} (2-pair)", d, d, mi_pair, _then(pair, sx, sy))
        add(f"Spiral @ Normal CDF @ Multinormal {d}x{d} (2-pair)", d, d, mi_pair,
            _then(pair, lambda t, f=sx: f(ndtr(t)), lambda t, f=sy: f(ndtr(t))))
    for d, nu in ((2, 1), (3, 2), (5, 2)):
        add(f"Asinh @ Student-t {d}x{d} (dof={nu})", d, d, student_mi(d, d, nu),
            _then(_student(d, d, nu), *_same(np.arcsinh)))
    return tasks


def package_ids() -> dict[str, str]:
    """Each task's id in the ``benchmark-mi`` package (``bmi.benchmark.BENCHMARK_TASKS``),
    by task name: what the reference test compares the samples against."""
    ids = {"Bivariate normal 1x1": "1v1-normal-0.75",
           "Uniform margins 1x1": "normal_cdf-1v1-normal-0.75",
           "Additive noise 1x1 (e=0.1)": "1v1-additive-0.1",
           "Additive noise 1x1 (e=0.75)": "1v1-additive-0.75",
           "Bimodal 1x1": "1v1-bimodal-0.75",
           "Wiggly 1x1": "wiggly-1v1-normal-0.75",
           "Half-cube 1x1": "half_cube-1v1-normal-0.75",
           "Student-t 1x1 (dof=1)": "student-identity-1-1-1",
           "Asinh @ Student-t 1x1 (dof=1)": "asinh-student-identity-1-1-1",
           "Swiss roll 2x1": "swissroll_x-normal_cdf-1v1-normal-0.75"}
    for d in (2, 3, 5, 25, 50):
        ids[f"Multinormal {d}x{d} (dense)"] = f"multinormal-dense-{d}-{d}-0.5"
    for d in (2, 3, 5, 25):
        ids[f"Multinormal {d}x{d} (2-pair)"] = f"multinormal-sparse-{d}-{d}-2-2.0"
    for d, nu in ((2, 1), (2, 2), (3, 2), (3, 3), (5, 2), (5, 3)):
        ids[f"Student-t {d}x{d} (dof={nu})"] = f"student-identity-{d}-{d}-{nu}"
    for d in (3, 5, 25):
        base = f"multinormal-sparse-{d}-{d}-2-2.0"
        for ours, theirs in (("Normal CDF", "normal_cdf"), ("Half-cube", "half_cube"),
                             ("Spiral", "spiral"), ("Spiral @ Normal CDF", "spiral-normal_cdf")):
            ids[f"{ours} @ Multinormal {d}x{d} (2-pair)"] = f"{theirs}-{base}"
    for d, nu in ((2, 1), (3, 2), (5, 2)):
        ids[f"Asinh @ Student-t {d}x{d} (dof={nu})"] = f"asinh-student-identity-{d}-{d}-{nu}"
    return ids
