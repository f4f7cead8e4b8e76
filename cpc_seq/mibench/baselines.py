"""Non-neural MI estimators on a fixed sample: the Gaussian (CCA) closed form and KSG.

- :func:`gaussian_mi_from_cov`: ``I = 1/2 [log det S_xx + log det S_yy - log det S]`` of a
  joint Gaussian with covariance ``S`` (``x`` = the first ``dim_x`` coordinates).
- :func:`canonical_correlations` / :func:`cca_mi`: the same MI written through the
  canonical correlations ``rho_i`` of the sample, ``I = -1/2 sum log(1 - rho_i^2)``; exact
  for Gaussian data, a lower bound of the MI of non-Gaussian data with that covariance
  in the sense that it only sees linear dependence.
- :func:`ksg_mi`: the Kraskov-Stoegbauer-Grassberger k-nearest-neighbour estimator
  (algorithm 1, max-norm): ``psi(k) + psi(N) - < psi(n_x + 1) + psi(n_y + 1) >``, with
  ``n_x``, ``n_y`` the marginal neighbours strictly inside the distance to the ``k``-th
  joint neighbour; neighbour searches by :class:`scipy.spatial.cKDTree`.

All take ``x (N, d_x)`` and ``y (N, d_y)`` arrays (rows paired) and return nats.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree
from scipy.special import digamma

__all__ = ["gaussian_mi_from_cov", "canonical_correlations", "canonical_variates", "cca_mi",
           "ksg_mi", "rho_mi"]


def rho_mi(rho: float | np.ndarray) -> float:
    """``-1/2 sum log(1 - rho_i^2)``: MI in nats of Gaussian pairs with correlations
    ``rho`` (a scalar or ``(k,)``); ``rho = 0.75`` gives 0.4133."""
    r = np.asarray(rho, dtype=np.float64)
    return float(-0.5 * np.log1p(-r * r).sum())


def gaussian_mi_from_cov(cov: np.ndarray, dim_x: int) -> float:
    """MI in nats between the first ``dim_x`` and the remaining coordinates of a
    Gaussian with covariance ``cov (D, D)``."""
    c = np.asarray(cov, dtype=np.float64)
    if c.ndim != 2 or c.shape[0] != c.shape[1] or not 0 < dim_x < c.shape[0]:
        raise ValueError(f"need a square (D, D) covariance and 0 < dim_x < D, got "
                         f"{c.shape} and dim_x={dim_x}")

    def logdet(m: np.ndarray) -> float:
        sign, val = np.linalg.slogdet(m)
        if sign <= 0:
            raise ValueError("covariance is not positive definite")
        return float(val)

    return 0.5 * (logdet(c[:dim_x, :dim_x]) + logdet(c[dim_x:, dim_x:]) - logdet(c))


def _check_pair(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if y.ndim == 1:
        y = y[:, None]
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"need paired (N, d_x) and (N, d_y) arrays, got {x.shape} and {y.shape}")
    if x.shape[0] < 3:
        raise ValueError(f"need at least 3 pairs, got {x.shape[0]}")
    return x, y


def _cca(x: np.ndarray, y: np.ndarray, ridge: float
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Centred ``x, y``, the whitening-and-rotation maps ``A (d_x, d_x)``, ``B (d_y, d_y)``
    and the canonical correlations ``s (min(d_x, d_y),)``, descending."""
    from scipy.linalg import solve_triangular

    x, y = _check_pair(x, y)
    x = x - x.mean(0)
    y = y - y.mean(0)
    n = x.shape[0]
    sxx, syy, sxy = x.T @ x / n, y.T @ y / n, x.T @ y / n
    sxx += ridge * max(np.trace(sxx) / len(sxx), 1e-12) * np.eye(len(sxx))
    syy += ridge * max(np.trace(syy) / len(syy), 1e-12) * np.eye(len(syy))
    lx, ly = np.linalg.cholesky(sxx), np.linalg.cholesky(syy)
    m = solve_triangular(lx, sxy, lower=True)
    m = solve_triangular(ly, m.T, lower=True).T  # L_x^-1 S_xy L_y^-T
    u, s, vt = np.linalg.svd(m, full_matrices=True)
    a = solve_triangular(lx, u, lower=True, trans="T")  # L_x^-T U
    b = solve_triangular(ly, vt.T, lower=True, trans="T")  # L_y^-T V
    return x, y, a, b, np.clip(s, 0.0, 1.0 - 1e-12)


def canonical_correlations(x: np.ndarray, y: np.ndarray, ridge: float = 1e-6) -> np.ndarray:
    """Sample canonical correlations of ``x (N, d_x)`` and ``y (N, d_y)``, descending,
    ``(min(d_x, d_y),)``: singular values of ``L_x^-1 S_xy L_y^-T`` (``L`` = Cholesky
    factors of the within-set covariances, ``ridge`` x their mean variance added to
    the diagonals so that ``N <= d`` stays finite)."""
    return _cca(x, y, ridge)[4]


def canonical_variates(x: np.ndarray, y: np.ndarray, ridge: float = 1e-6
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(a (N, d_x), b (N, d_y), rho (k,))``: each variable centred, whitened and rotated
    (an invertible linear map per variable) so that the sample covariance of ``a`` and
    of ``b`` is the identity and ``cov(a_i, b_j) = rho_i [i = j]``."""
    x, y, a, b, s = _cca(x, y, ridge)
    return x @ a, y @ b, s


def cca_mi(x: np.ndarray, y: np.ndarray) -> float:
    """MI in nats of the Gaussian with the sample's covariance (CCA closed form)."""
    return rho_mi(canonical_correlations(x, y))


def ksg_mi(x: np.ndarray, y: np.ndarray, k: int = 5) -> float:
    """KSG estimate (algorithm 1, max-norm) in nats, ``k`` neighbours."""
    x, y = _check_pair(x, y)
    n = x.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"need 1 <= k < N, got k={k}, N={n}")
    xy = np.concatenate([x, y], axis=1)
    # distance to the k-th neighbour in the joint space (the point itself is at index 0)
    eps = cKDTree(xy).query(xy, k=k + 1, p=np.inf)[0][:, k]
    # marginal neighbours strictly closer than eps (the point itself counted, removed)
    r = np.nextafter(eps, 0)
    nx = cKDTree(x).query_ball_point(x, r, p=np.inf, return_length=True) - 1
    ny = cKDTree(y).query_ball_point(y, r, p=np.inf, return_length=True) - 1
    return float(digamma(k) + digamma(n) - np.mean(digamma(nx + 1) + digamma(ny + 1)))
