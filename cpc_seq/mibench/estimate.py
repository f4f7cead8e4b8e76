"""Every MI estimator of the toolkit on one fixed sample of pairs, by name.

``estimate_mi(name, x, y)`` with ``x (N, d_x)``, ``y (N, d_y)`` (rows paired) returns
nats. Every estimator sees the sample standardised per coordinate (an invertible map of
each variable: the MI is unchanged), as the "Beyond Normal" benchmark rescales its tasks.

- ``mienf``, ``tridiag-mienf``: normalizing-flow estimators (:mod:`~cpc_seq.mibench.mienf`);
- ``ksg``: Kraskov k-NN, ``k = 5`` (:func:`~cpc_seq.mibench.baselines.ksg_mi`);
- ``cca``: Gaussian closed form (:func:`~cpc_seq.mibench.baselines.cca_mi`);
- ``infonce``, ``dv``, ``nwj``, ``mine``, ``smile``, ``jsd``: variational bounds of the
  loss core with a separable critic (:mod:`~cpc_seq.mibench.critics`) trained on random
  minibatches of half of the sample; the estimate is the bound's mean over the other,
  held-out half cut into disjoint batches, taken every ``eval_every`` steps; the
  estimate is the highest held-out value (early stopping: training stops after
  ``patience`` evaluations without a higher one). A critic scored on its own training
  pairs overfits (on 1000 pairs of the 25 x 25 dense Gaussian, 1.29 nats, InfoNCE read
  3.2), and one trained 1000 steps on 500 pairs and scored on held-out pairs read
  below zero. ``jsd`` trains the critic with the Jensen-Shannon loss and reports
  the Donsker-Varadhan value of that critic (the JS loss is not an MI in nats);
  ``smile`` reports the clipped DV value (``tau = 5``) of a JS-trained critic; InfoNCE
  cannot exceed ``log(batch)``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from cpc_seq.losses.bounds import MineEstimator, smile
from cpc_seq.losses.estimators import EstimatorOutput, donsker_varadhan, jsd
from cpc_seq.losses.select import estimate
from cpc_seq.mibench.baselines import cca_mi, ksg_mi
from cpc_seq.mibench.critics import build_critic
from cpc_seq.mibench.mienf import MienfConfig, mienf_mi

__all__ = ["ESTIMATORS", "CRITIC_ESTIMATORS", "CriticConfig", "critic_mi", "estimate_mi",
           "standardise", "timed_estimate"]

CRITIC_ESTIMATORS = ("infonce", "dv", "nwj", "mine", "smile", "jsd")
ESTIMATORS = ("mienf", "tridiag-mienf", "ksg", "cca") + CRITIC_ESTIMATORS


@dataclass
class CriticConfig:
    """Settings of a critic-based estimate on a fixed sample."""

    steps: int = 1000
    batch_size: int = 128
    lr: float = 1e-3
    hidden: int = 64
    embed: int = 32
    smile_tau: float = 5.0
    mine_rate: float = 0.01
    test_fraction: float = 0.5  # held-out pairs the bound is evaluated on
    eval_every: int = 50  # steps between held-out evaluations
    patience: int = 5  # evaluations without a higher held-out value before stopping
    seed: int = 0


def standardise(a: np.ndarray) -> np.ndarray:
    """``(N, d)`` -> zero mean, unit variance per coordinate (constant columns centred)."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    sd = a.std(0)
    return (a - a.mean(0)) / np.where(sd > 0, sd, 1.0)


def _train_eval(name: str, cfg: CriticConfig) -> tuple[Callable, Callable]:
    """(training objective, reported value) on a score matrix."""
    if name == "mine":
        mine = MineEstimator(cfg.mine_rate)
        return mine, lambda s, p: donsker_varadhan(s, p)
    if name in ("jsd", "smile"):
        report = (lambda s, p: smile(s, p, tau=cfg.smile_tau)) if name == "smile" else \
            donsker_varadhan
        return jsd, report
    return (lambda s, p: estimate(name, s, p)), (lambda s, p: estimate(name, s, p))


def critic_mi(name: str, x: np.ndarray, y: np.ndarray, cfg: CriticConfig | None = None) -> float:
    """Train a separable critic with estimator ``name`` on ``x (N, d_x)``, ``y (N, d_y)``;
    the bound's value in nats, averaged over the sample in disjoint batches."""
    if name not in CRITIC_ESTIMATORS:
        raise ValueError(f"unknown critic estimator {name!r}; choose one of {CRITIC_ESTIMATORS}")
    cfg = cfg or CriticConfig()
    torch.manual_seed(cfg.seed)
    tx = torch.from_numpy(np.asarray(x, dtype=np.float32))
    ty = torch.from_numpy(np.asarray(y, dtype=np.float32))
    gen = torch.Generator().manual_seed(cfg.seed)
    perm = torch.randperm(tx.shape[0], generator=gen)
    n_test = max(2, int(round(cfg.test_fraction * tx.shape[0]))) if cfg.test_fraction else 0
    test = perm[:n_test] if n_test else perm
    train = perm[n_test:] if n_test else perm
    bs = min(cfg.batch_size, train.numel(), test.numel())
    critic = build_critic("separable", tx.shape[1], ty.shape[1], cfg.hidden, cfg.embed)
    opt = torch.optim.Adam(critic.parameters(), lr=cfg.lr)
    objective, report = _train_eval(name, cfg)
    pos = torch.eye(bs, dtype=torch.bool)

    @torch.no_grad()
    def held_out() -> float:
        values = [float(report(critic(tx[test[i:i + bs]], ty[test[i:i + bs]]), pos).mi)
                  for i in range(0, test.numel() - bs + 1, bs)]
        return float(np.mean(values))

    best, bad = -math.inf, 0
    for step in range(1, cfg.steps + 1):
        idx = train[torch.randperm(train.numel(), generator=gen)[:bs]]
        out: EstimatorOutput = objective(critic(tx[idx], ty[idx]), pos)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        if step % cfg.eval_every == 0 or step == cfg.steps:
            v = held_out()
            if v > best:
                best, bad = v, 0
            else:
                bad += 1
                if bad >= cfg.patience:
                    break
    return best


def estimate_mi(name: str, x: np.ndarray, y: np.ndarray, seed: int = 0,
                mienf: MienfConfig | None = None, critic: CriticConfig | None = None,
                ksg_k: int = 5) -> float:
    """MI in nats of paired ``x (N, d_x)``, ``y (N, d_y)`` by estimator ``name``."""
    if name not in ESTIMATORS:
        raise ValueError(f"unknown estimator {name!r}; choose from {', '.join(ESTIMATORS)}")
    x, y = standardise(x), standardise(y)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} rows, y {y.shape[0]}: the samples must be paired")
    if name in ("mienf", "tridiag-mienf"):
        base = mienf or MienfConfig()
        cfg = MienfConfig(**{**base.__dict__, "seed": seed,
                             "form": "tridiag" if name == "tridiag-mienf" else "full"})
        return mienf_mi(x, y, cfg)
    if name == "ksg":
        return ksg_mi(x, y, k=ksg_k)
    if name == "cca":
        return cca_mi(x, y)
    base_c = critic or CriticConfig()
    return critic_mi(name, x, y, CriticConfig(**{**base_c.__dict__, "seed": seed}))


def timed_estimate(name: str, x: np.ndarray, y: np.ndarray, **kwargs: object
                   ) -> tuple[float, float]:
    """``(estimate in nats, CPU seconds of this process)`` of :func:`estimate_mi`."""
    t0 = time.process_time()
    v = estimate_mi(name, x, y, **kwargs)  # type: ignore[arg-type]
    return v, time.process_time() - t0
