"""How well a representation matches its prior: per-dimension KS distance and RBF MMD.

Used to compare DIM's two ways of matching a prior (the adversarial discriminator of
Hjelm et al. 2019 and noise injection of Butakov et al. 2024) on the same footing:

- :func:`ks_distance`: the Kolmogorov-Smirnov statistic ``sup_t |F_n(t) - F(t)|`` of each
  dimension of ``Y`` against the prior's marginal CDF (``N(0, 1)`` or ``U(0, 1)``),
  averaged over dimensions. 0 = identical marginals, 1 = disjoint. It sees marginals only.
- :func:`mmd_to_prior`: the unbiased squared MMD (Gretton et al. 2012) between ``Y`` and as
  many prior samples, Gaussian kernel ``exp(-|a - b|^2 / (2 h^2))`` with a *fixed*
  bandwidth ``h^2 = d * var(prior)`` (so numbers are comparable between runs); it sees the
  joint distribution (correlations between dimensions, too). About 0 when matched.

Command line (frozen ``Y`` of a checkpoint on the test split)::

    python -m cpc_seq.images.prior_match --ckpt exp/dim/last.pt [--n 2000] [--out m.json]
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import torch
from torch import Tensor

from cpc_seq.errors import ConfigError

__all__ = ["PRIORS", "prior_cdf", "ks_distance", "mmd_to_prior", "prior_match_stats", "main"]

PRIORS = ("gaussian", "uniform")


def _check(y: Tensor, prior: str) -> None:
    if prior not in PRIORS:
        raise ConfigError(f"unknown prior {prior!r}; choose one of {PRIORS}")
    if y.dim() != 2 or y.shape[0] < 2:
        raise ValueError(f"expected (N >= 2, d) samples, got {tuple(y.shape)}")


def prior_cdf(t: Tensor, prior: str) -> Tensor:
    """Marginal CDF of the prior: ``Phi(t)`` for ``gaussian``, ``clamp(t, 0, 1)`` for
    ``uniform`` (on [0, 1])."""
    if prior == "gaussian":
        return 0.5 * (1.0 + torch.erf(t / math.sqrt(2.0)))
    return t.clamp(0.0, 1.0)


def ks_distance(y: Tensor, prior: str, per_dim: bool = False) -> Tensor:
    """Mean (or, with ``per_dim``, each) KS statistic of the columns of ``y`` (N, d)
    against the prior's marginal: a scalar in [0, 1] (or (d,))."""
    _check(y, prior)
    n = y.shape[0]
    srt, _ = torch.sort(y.double(), dim=0)
    cdf = prior_cdf(srt, prior)
    i = torch.arange(1, n + 1, dtype=torch.float64, device=y.device)[:, None]
    d = torch.maximum((i / n - cdf).amax(0), (cdf - (i - 1) / n).amax(0))
    return d.float() if per_dim else d.mean().float()


def sample_prior(prior: str, n: int, d: int, generator: torch.Generator | None = None) -> Tensor:
    """``(n, d)`` prior samples on the CPU."""
    if prior == "gaussian":
        return torch.randn(n, d, generator=generator)
    return torch.rand(n, d, generator=generator)


def mmd_to_prior(y: Tensor, prior: str, seed: int = 0) -> Tensor:
    """Unbiased squared MMD between ``y`` (N, d) and N prior samples (seeded), Gaussian
    kernel with ``h^2 = d * var(prior)`` (var = 1 Gaussian, 1/12 uniform). Scalar."""
    _check(y, prior)
    n, d = y.shape
    g = torch.Generator().manual_seed(seed)
    z = sample_prior(prior, n, d, g).double()
    a = y.detach().double().cpu()
    h2 = d * (1.0 if prior == "gaussian" else 1.0 / 12.0)

    def k(u: Tensor, v: Tensor) -> Tensor:
        return torch.exp(-torch.cdist(u, v).pow(2) / (2.0 * h2))

    kaa, kzz, kaz = k(a, a), k(z, z), k(a, z)
    off = 1.0 - torch.eye(n, dtype=torch.float64)
    mmd2 = ((kaa * off).sum() + (kzz * off).sum()) / (n * (n - 1)) - 2.0 * kaz.mean()
    return mmd2.float()


def prior_match_stats(y: Tensor, prior: str, seed: int = 0) -> dict[str, float]:
    """``{"ks": mean KS, "mmd2": unbiased MMD^2, "mean_abs_mean": mean |column mean|,
    "mean_std": mean column std}`` of ``y`` (N, d) against ``prior``."""
    return {
        "ks": float(ks_distance(y, prior)),
        "mmd2": float(mmd_to_prior(y, prior, seed)),
        "mean_abs_mean": float(y.float().mean(0).abs().mean()),
        "mean_std": float(y.float().std(0).mean()),
    }


def checkpoint_stats(ckpt: str, n: int = 2000, split: str = "test", seed: int = 0,
                     data_root: str | None = None) -> dict[str, float | str | int]:
    """Frozen DIM ``Y`` (eval mode, no noise) of ``n`` images of ``split`` (the first
    ``n`` of a seeded random subset) -> :func:`prior_match_stats` against the
    checkpoint's ``dim.prior``, plus ``prior``, ``n`` and the model's noise settings."""
    from cpc_seq.images.data import load_dataset
    from cpc_seq.images.evaluate import extract_features
    from cpc_seq.images.train import load_image_model

    model, cfg, geo = load_image_model(ckpt)
    if cfg.kind != "dim":
        raise ConfigError(f"{ckpt}: a {cfg.kind} checkpoint; the prior statistic is for DIM's Y")
    data = load_dataset(str(geo["dataset"]), data_root or cfg.data.root or None, split)
    data = data.subset(min(n, len(data)), seed=seed)
    y = extract_features(model, data.images, str(geo["dataset"]), int(geo["image_size"]),
                         ["y"])["y"]
    out: dict[str, float | str | int] = dict(prior_match_stats(y, cfg.dim.prior, seed))
    out.update({"prior": cfg.dim.prior, "n": int(y.shape[0]), "noise": cfg.dim.noise,
                "noise_scale": cfg.dim.noise_scale, "gamma": cfg.dim.gamma})
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m cpc_seq.images.prior_match --ckpt CKPT``: print the statistics as JSON."""
    from cpc_seq.cliutil import run_command
    from cpc_seq.io.checkpoint import atomic_write

    p = argparse.ArgumentParser(
        prog="python -m cpc_seq.images.prior_match",
        description="KS distance and MMD between a DIM checkpoint's Y and its prior.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--ckpt", required=True, help="DIM checkpoint")
    p.add_argument("--n", type=int, default=2000, help="images to encode")
    p.add_argument("--split", default="test", help="data split")
    p.add_argument("--seed", type=int, default=0, help="subset and prior-sample seed")
    p.add_argument("--data-root", default=None, help="data set dir (default: the checkpoint's)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--out", default=None, help="also write the JSON here")
    args = p.parse_args(argv)

    def run(a: argparse.Namespace) -> int:
        torch.set_num_threads(a.threads)
        stats = checkpoint_stats(a.ckpt, a.n, a.split, a.seed, a.data_root)
        text = json.dumps(stats)
        print(text)
        if a.out:
            with atomic_write(a.out, "w") as f:
                f.write(text + "\n")
        return 0

    return run_command(run, args)


if __name__ == "__main__":
    sys.exit(main())
