"""More variational MI lower bounds on the score-matrix interface: NWJ, MINE, SMILE.

Same interface as :mod:`cpc_seq.losses.estimators`: ``scores`` (R, C) critic values
``T(x_r, y_c)``, ``pos_mask`` (R, C) bool (True = a pair drawn from the joint ``P``),
``valid_mask`` optional (R, C) bool (False = ignore). Every valid pair that is not positive
is a sample of the product of marginals ``Q = P_X (x) P_Y``. Expectations are averages over
*all* positive (resp. negative) entries of the matrix, as in
:func:`~cpc_seq.losses.estimators.donsker_varadhan`. Each returns an
:class:`~cpc_seq.losses.estimators.EstimatorOutput`: ``loss`` to minimise, ``mi`` the
estimate in **nats** (detached).

Summary (``N`` = batch size, ``I`` = true MI; Poole et al. 2019, Song & Ermon 2020):

========  ===========================================  ==========================  ============================
name      estimate                                     bias                        variance
========  ===========================================  ==========================  ============================
infonce   ``log N - CE``  (in estimators.py)           capped at ``log N``         low
dv        ``E_P[T] - log E_Q[e^T]`` (estimators.py)    batch log: biased gradient  grows like ``e^I / N``
nwj       ``E_P[T] - E_Q[e^(T-1)]``                    unbiased (a true bound)     grows like ``e^I / N``
mine      DV value, moving-average gradient            DV value, less biased grad  as DV
smile     ``E_P[T] - log E_Q[clip(e^T, e^-t, e^t)]``   biased, bounded by ``t``    bounded (via ``t``)
========  ===========================================  ==========================  ============================

The optimal critics: ``T* = log p(x, y) / (p(x) p(y)) + c`` for DV/MINE/SMILE (any
constant ``c``), ``T* = 1 + log p(x, y) / (p(x) p(y))`` for NWJ. At ``T*`` every bound
equals ``I`` in expectation over batches (SMILE only when ``t`` exceeds every
``|log ratio|``); how far a single batch is from ``I`` is the variance column.

Numerics: every expectation of ``e^T`` goes through log-sum-exp, so there is no overflow
inside the sums; NWJ's final ``exp(logmeanexp(T) - 1)`` is ``inf`` only when the
scores themselves exceed ~88 (an infinitely bad bound, reported as such, not hidden).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from cpc_seq.losses.estimators import EstimatorOutput, _masks, jsd

__all__ = ["BOUNDS", "MineState", "MineEstimator", "nwj", "mine", "smile", "log_mean_exp_neg"]

BOUNDS = ("nwj", "mine", "smile")


def _pos_mean(s: Tensor, pos: Tensor) -> Tensor:
    """``E_P[T]``: mean of the positive entries (R, C) -> scalar."""
    return (s * pos).sum() / pos.sum().clamp_min(1)


def log_mean_exp_neg(s: Tensor, neg: Tensor) -> Tensor:
    """``log E_Q[e^T]`` over the negative entries of ``s`` (R, C), in log-sum-exp form."""
    neg_inf = torch.finfo(s.dtype).min
    lse = torch.logsumexp(s.masked_fill(~neg, neg_inf).flatten(), dim=0)
    return lse - torch.log(neg.sum().clamp_min(1).to(s.dtype))


def nwj(scores: Tensor, pos_mask: Tensor, valid_mask: Tensor | None = None) -> EstimatorOutput:
    """NWJ / f-divergence bound (Nguyen, Wainwright & Jordan 2010; "MINE-f" of Belghazi
    et al. 2018, Sec. 3.1; ``I_NWJ`` of Poole et al. 2019, Sec. 2.2)::

        I >= I_NWJ = E_P[T] - e^{-1} E_Q[e^T] = E_P[T] - E_Q[e^{T - 1}]

    It follows from ``log u <= u / e`` applied to the partition function of the DV bound,
    so ``I_NWJ <= I_DV`` for the same critic, with equality at ``T* = 1 + log(p / q)``.

    Bias/variance: the estimate is an unbiased Monte-Carlo average of a true lower bound
    (no log outside an expectation), so its *gradient* is unbiased too; but the
    ``E_Q[e^T]`` term is a mean of exponentials whose variance at the optimal critic is
    of order ``(e^I - 1) / N_neg`` (Song & Ermon 2020, Theorem 1): exponential in the
    true MI.

    Returns the loss ``-I_NWJ`` and the estimate in nats.
    """
    s = scores.float()
    pos, neg = _masks(s, pos_mask, valid_mask)
    mi = _pos_mean(s, pos) - torch.exp(log_mean_exp_neg(s, neg) - 1.0)
    return EstimatorOutput(loss=-mi, mi=mi.detach())


@dataclass
class MineState:
    """The moving average of MINE's partition function ``E_Q[e^T]``, kept in log space.

    ``log_ema``: ``log`` of the average (a 0-dim detached tensor), ``None`` before the
    first batch; ``steps``: batches seen. Pass it to :func:`mine` and keep what it
    returns; nothing is stored anywhere else.
    """

    log_ema: Tensor | None = None
    steps: int = 0


def mine(
    scores: Tensor, pos_mask: Tensor, valid_mask: Tensor | None = None, *,
    state: MineState | None = None, rate: float = 0.01,
) -> tuple[EstimatorOutput, MineState]:
    """MINE (Belghazi et al. 2018): the DV bound with a moving-average gradient correction.

    Estimate (Sec. 3.1, the DV representation, Theorem 1)::

        I >= I_DV = E_P[T] - log E_Q[e^T]

    The minibatch gradient of ``log E_Q[e^T]`` is ``E_B[e^T grad T] / E_B[e^T]``, a ratio
    of batch means and therefore biased. MINE (Sec. 3.2, "Correcting the bias from the
    stochastic gradients") replaces the denominator by an exponential moving average
    ``m_t = (1 - rate) m_{t-1} + rate E_B[e^T]`` over batches. The loss returned here has
    the *value* ``-I_DV`` of this batch and the *gradient*
    ``-(E_P[grad T] - E_B[e^T grad T] / m_t)``. ``m_t`` includes the current batch, so
    the ratio ``E_B[e^T] / m_t`` never exceeds ``1 / rate`` (no blow-up); on the first
    batch ``m_1 = E_B[e^T]`` and the gradient is exactly DV's.

    Bias/variance: the estimate is DV's (biased by the log of a batch mean, variance
    growing like ``e^I / N``, Song & Ermon 2020, Theorem 2); the correction reduces the
    gradient bias, not the estimate's variance.

    Args:
        state: the previous :class:`MineState` (``None`` = start).
        rate: weight of the new batch in the average, in (0, 1].

    Returns:
        (:class:`EstimatorOutput` with ``mi`` in nats, the updated :class:`MineState`).
    """
    if not 0.0 < rate <= 1.0:
        raise ValueError(f"mine: rate must be in (0, 1], got {rate}")
    s = scores.float()
    pos, neg = _masks(s, pos_mask, valid_mask)
    e_pos = _pos_mean(s, pos)
    lme = log_mean_exp_neg(s, neg)  # log E_B[e^T], with graph
    cur = lme.detach()
    if state is None or state.log_ema is None:
        log_ema = cur
    else:
        prev = state.log_ema.to(cur)
        log_ema = torch.logaddexp(prev + math.log1p(-rate), cur + math.log(rate)) \
            if rate < 1.0 else cur
    mi = e_pos - lme
    # gradient surrogate: d/dtheta [E_P T - E_B[e^T] / m_t]; value replaced by -I_DV
    surrogate = e_pos - torch.exp(lme - log_ema)
    loss = -(mi.detach() + surrogate - surrogate.detach())
    steps = (state.steps if state is not None else 0) + 1
    return EstimatorOutput(loss=loss, mi=mi.detach()), MineState(log_ema=log_ema, steps=steps)


class MineEstimator:
    """A small holder of :class:`MineState` with the stateless call signature
    ``(scores, pos_mask, valid_mask=None) -> EstimatorOutput``; ``reset()`` forgets the
    average. The state is the public attribute ``state`` (save/restore it as you like)."""

    def __init__(self, rate: float = 0.01) -> None:
        if not 0.0 < rate <= 1.0:
            raise ValueError(f"mine: rate must be in (0, 1], got {rate}")
        self.rate = rate
        self.state = MineState()

    def __call__(self, scores: Tensor, pos_mask: Tensor,
                 valid_mask: Tensor | None = None) -> EstimatorOutput:
        out, self.state = mine(scores, pos_mask, valid_mask, state=self.state, rate=self.rate)
        return out

    def reset(self) -> None:
        self.state = MineState()


def smile(
    scores: Tensor, pos_mask: Tensor, valid_mask: Tensor | None = None, *,
    tau: float = 5.0, train: str = "jsd",
) -> EstimatorOutput:
    """SMILE (Song & Ermon 2020, Sec. 5): DV with the density ratio clipped in the
    partition function::

        I_SMILE = E_P[T] - log E_Q[clip(e^T, e^{-tau}, e^{tau})]
                = E_P[T] - log E_Q[e^{clamp(T, -tau, tau)}]

    Bias/variance: clipping bounds every term of the partition-function average, so the
    variance of ``log E_Q[.]`` is bounded by a function of ``tau`` instead of growing
    like ``e^I`` (the paper's Theorem 3); the price is a bias, and the estimate is no
    longer a guaranteed lower bound. ``tau -> inf`` recovers DV; the paper uses
    ``tau`` in {1, 5}.

    Training: with ``train="jsd"`` (default) the loss is the Jensen-Shannon (GAN
    discriminator) loss of :func:`~cpc_seq.losses.estimators.jsd`, whose optimal critic
    is ``log p / q`` -- the critic SMILE then plugs into the clipped DV, as in the
    paper's experiments; ``train="dv"`` minimises ``-I_SMILE`` itself (the clipped
    negatives then get no gradient, which lets the positive scores grow; use with care).

    Returns the loss and the estimate in nats.
    """
    if tau <= 0:
        raise ValueError(f"smile: tau must be positive, got {tau}")
    if train not in ("jsd", "dv"):
        raise ValueError(f"smile: train must be 'jsd' or 'dv', got {train!r}")
    s = scores.float()
    pos, neg = _masks(s, pos_mask, valid_mask)
    mi = _pos_mean(s, pos) - log_mean_exp_neg(s.clamp(-tau, tau), neg)
    loss = jsd(s, pos_mask, valid_mask).loss if train == "jsd" else -mi
    return EstimatorOutput(loss=loss, mi=mi.detach())
