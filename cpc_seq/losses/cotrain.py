"""The co-training objective (McAllester, "Information Theoretic Co-Training", 2018).

Two views ``x`` (a past window) and ``y`` (a future window) are coded into K-way
distributions ``P(z | x)`` and ``P(z' | y)`` (softmax of code logits). Both entropies of
``I(z_x; z_y) = H(z_x) - H(z_x | z_y)`` are estimated as cross-entropies of two small
models that are trained to make them tight:

- marginal model ``Q(z)`` (``K`` logits): ``H^(z_x) = E_x[-sum_z P(z|x) log Q(z)]``;
- conditional model ``Q(z | z')`` (``K x K`` logits, row ``z'``):
  ``H^(z_x | z_y) = E_{x,y}[-sum_{z,z'} P(z|x) P(z'|y) log Q(z | z')]``.

Each cross-entropy is at least the entropy it estimates, equal when ``Q`` is the batch's
own distribution; there ``I^ = H^(z_x) - H^(z_x | z_y)`` is the MI of the codes, at most
``ln K``. The training signal:
the models descend their cross-entropies (codes held fixed), the coders ascend
``I^ - beta H^(z_x)`` (models held fixed); :meth:`CoTraining.forward` returns one loss
whose single backward pass does both.

:func:`plugin_mi` is the value at the optimal models: the MI of the batch's joint code
distribution ``mean_n P(z|x_n) P(z'|y_n)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["CoTraining", "CoTrainingOutput", "cotrain_terms", "plugin_mi"]


@dataclass
class CoTrainingOutput:
    """``loss``: scalar to minimise; ``mi``, ``h_x``, ``h_x_given_y``: detached nats."""

    loss: Tensor
    mi: Tensor
    h_x: Tensor
    h_x_given_y: Tensor


def _check(px: Tensor, py: Tensor) -> None:
    if px.ndim != 2 or px.shape != py.shape:
        raise ValueError(f"need code distributions px, py of one shape (N, K), got "
                         f"{tuple(px.shape)} and {tuple(py.shape)}")


def cotrain_terms(px: Tensor, py: Tensor, marginal_logits: Tensor, conditional_logits: Tensor
                  ) -> tuple[Tensor, Tensor]:
    """``(H^(z_x), H^(z_x | z_y))`` in nats: cross-entropies of the marginal model
    ``(K,)`` and the conditional model ``(K, K)`` (row ``z'`` = distribution of ``z``
    given ``z_y = z'``) on code distributions ``px, py (N, K)``."""
    _check(px, py)
    log_q = torch.log_softmax(marginal_logits, dim=-1)  # (K,)
    h_x = -(px * log_q).sum(-1).mean()
    log_qc = torch.log_softmax(conditional_logits, dim=-1)  # (K', K): [z', z]
    # sum_{z, z'} px[n, z] py[n, z'] log Q(z | z')
    h_cond = -torch.einsum("nz,nw,wz->n", px, py, log_qc).mean()
    return h_x, h_cond


def plugin_mi(px: Tensor, py: Tensor) -> Tensor:
    """MI in nats of the batch's joint code distribution ``mean_n px[n] py[n]^T``
    (``px, py (N, K)``): the co-training estimate at the optimal models."""
    _check(px, py)
    joint = torch.einsum("nz,nw->zw", px.double(), py.double()) / px.shape[0]
    mx, my = joint.sum(1, keepdim=True), joint.sum(0, keepdim=True)
    ratio = torch.where(joint > 0, joint / (mx * my).clamp_min(1e-300), torch.ones_like(joint))
    return (joint * torch.log(ratio)).sum().to(px.dtype)


class CoTraining(nn.Module):
    """The marginal and conditional models of ``K`` codes and the co-training loss.

    ``forward(logits_x (N, K), logits_y (N, K))`` -> :class:`CoTrainingOutput`;
    ``beta`` weighs the code-entropy penalty (``0 <= beta < 1``). ``model_scale``: the
    models' logits are ``model_scale`` x their parameters, so that under Adam (steps of
    about the learning rate per parameter) they follow the codes ``model_scale`` times
    faster than the coders move; with 1 the models of a network trained at lr 5e-4 stay
    near uniform for hundreds of steps, where the coders' gradient is zero.
    """

    def __init__(self, codes: int, beta: float = 0.0, model_scale: float = 1.0) -> None:
        super().__init__()
        if codes < 2:
            raise ValueError(f"need at least 2 codes, got {codes}")
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must be in [0, 1), got {beta}")
        if model_scale <= 0:
            raise ValueError(f"model_scale must be positive, got {model_scale}")
        self.codes, self.beta, self.model_scale = codes, beta, model_scale
        self.marginal = nn.Parameter(torch.zeros(codes))
        self.conditional = nn.Parameter(torch.zeros(codes, codes))

    @property
    def ceiling(self) -> float:
        """``ln K``: the most MI ``K`` codes can carry."""
        return math.log(self.codes)

    def forward(self, logits_x: Tensor, logits_y: Tensor) -> CoTrainingOutput:
        px, py = torch.softmax(logits_x.float(), -1), torch.softmax(logits_y.float(), -1)
        marginal = self.model_scale * self.marginal
        conditional = self.model_scale * self.conditional
        # models: descend the cross-entropies with the codes fixed
        hm_x, hm_c = cotrain_terms(px.detach(), py.detach(), marginal, conditional)
        # coders: ascend I^ - beta H^ with the models fixed
        hc_x, hc_c = cotrain_terms(px, py, marginal.detach(), conditional.detach())
        objective = (hc_x - hc_c) - self.beta * hc_x
        loss = hm_x + hm_c - objective
        return CoTrainingOutput(loss=loss, mi=(hm_x - hm_c).detach(), h_x=hm_x.detach(),
                                h_x_given_y=hm_c.detach())
