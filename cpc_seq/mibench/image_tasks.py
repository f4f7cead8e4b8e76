"""Image tasks with known MI for ``cpc-seq mi bench --suite images`` (after Butakov et al.,
ICLR 2024 and NeurIPS 2024).

A pair of latents ``(xi, eta)`` is drawn from a Gaussian whose MI is known: ``d`` matched
coordinate pairs, each with correlation ``rho = sqrt(1 - exp(-2 I / d))`` so that the
total is ``I`` nats; every coordinate is mapped to ``(0, 1)`` by the normal CDF. Each
latent is then drawn as an image by an injective map, so the images' MI is the latents':

- **Gaussian bumps** (``d = 2``, 16 x 16): a bump of width 2 pixels centred at
  ``(3 + 10 u_0, 3 + 10 u_1)``;
- **rectangles** (``d = 4``, 32 x 32): an axis-aligned rectangle with corner
  ``(2 + 12 u_0, 2 + 12 u_1)`` and sides ``4 + 12 u_2``, ``4 + 12 u_3`` pixels, each
  pixel's value the fraction of it that the rectangle covers (edges at sub-pixel
  positions stay visible, so the map is injective).

As in the papers the estimators then see the images compressed to ``d`` dimensions per
variable (:func:`cpc_seq.mibench.info_plane.compress`: whitened PCA, or a small
autoencoder), fitted on the sample itself. A linear map cannot flatten these curved
image manifolds, so PCA loses information that the autoencoder can keep.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.special import ndtr

from cpc_seq.errors import ConfigError
from cpc_seq.mibench.beyond_normal import BNTask

__all__ = ["IMAGE_MIS", "bump_images", "rectangle_images", "image_tasks", "latent_pairs"]

#: the MI grid (nats) of the scored tasks; 0 is allowed but cannot be scored by the
#: relative criterion |log(I_hat / I)| < log 1.5
IMAGE_MIS = (1.0, 2.0, 4.0, 6.0, 8.0, 10.0)


def latent_pairs(n: int, d: int, mi: float, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray]:
    """``(u, v)``, each ``(n, d)`` in ``(0, 1)``: normal CDFs of ``d`` Gaussian pairs with
    correlation ``sqrt(1 - exp(-2 mi / d))`` each (``I(u; v) = mi`` nats)."""
    if mi < 0 or d < 1:
        raise ConfigError(f"latent pairs: need mi >= 0 and d >= 1, got {mi}, {d}")
    rho = math.sqrt(-math.expm1(-2.0 * mi / d))
    x = rng.standard_normal((n, d))
    y = rho * x + math.sqrt(max(1.0 - rho * rho, 0.0)) * rng.standard_normal((n, d))
    return ndtr(x), ndtr(y)


def bump_images(u: np.ndarray, size: int = 16, width: float = 2.0) -> np.ndarray:
    """``(n, size, size)`` Gaussian bumps centred at ``3 + (size - 6) u`` (``u (n, 2)``)."""
    c = 3.0 + (size - 6.0) * np.asarray(u, dtype=np.float64)
    grid = np.arange(size, dtype=np.float64) + 0.5
    gx = np.exp(-((grid[None, :] - c[:, :1]) ** 2) / (2 * width**2))  # (n, size)
    gy = np.exp(-((grid[None, :] - c[:, 1:2]) ** 2) / (2 * width**2))
    return gy[:, :, None] * gx[:, None, :]


def rectangle_images(u: np.ndarray, size: int = 32) -> np.ndarray:
    """``(n, size, size)`` rectangles from ``u (n, 4)``: corner ``2 + s u_{0,1}``, sides
    ``4 + s u_{2,3}`` (``s = (size - 8) / 2``), anti-aliased by pixel coverage."""
    u = np.asarray(u, dtype=np.float64)
    s = (size - 8) / 2.0
    lo = 2.0 + s * u[:, :2]
    hi = lo + 4.0 + s * u[:, 2:4]
    edges = np.arange(size, dtype=np.float64)

    def cover(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.clip(np.minimum(edges[None, :] + 1, b[:, None])
                       - np.maximum(edges[None, :], a[:, None]), 0.0, 1.0)

    cx, cy = cover(lo[:, 0], hi[:, 0]), cover(lo[:, 1], hi[:, 1])
    return cy[:, :, None] * cx[:, None, :]


def _sampler(kind: str, mi: float, compression: str):
    from cpc_seq.mibench.info_plane import compress

    d, draw = (2, bump_images) if kind == "bumps" else (4, rectangle_images)

    def sample(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        u, v = latent_pairs(n, d, mi, rng)
        seed = int(rng.integers(2**31))
        xs = draw(u).reshape(n, -1)
        ys = draw(v).reshape(n, -1)
        return compress(xs, d, compression, seed), compress(ys, d, compression, seed + 1)

    return d, sample


def image_tasks(mis: Sequence[float] = IMAGE_MIS, compression: str = "pca") -> list[BNTask]:
    """The Gaussian-bump (16 x 16, 2-D latent) and rectangle (32 x 32, 4-D latent) tasks at
    every MI in ``mis``, each variable compressed to its latent dimension."""
    tasks = []
    for kind, label in (("bumps", "Gaussian bumps 16x16"), ("rects", "Rectangles 32x32")):
        for mi in mis:
            d, sampler = _sampler(kind, float(mi), compression)
            tasks.append(BNTask(f"{label} [{compression}] I={mi:g}", d, d, float(mi), sampler))
    return tasks
