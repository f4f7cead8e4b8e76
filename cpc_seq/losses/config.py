"""The ``loss`` config section of the k-step CPC tasks (audio and text), and
:func:`build_loss`, the one place a loss is made from it."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from cpc_seq.config import check
from cpc_seq.errors import ConfigError
from cpc_seq.losses.acpc import ACPC_NEGATIVES, acpc_loss
from cpc_seq.losses.kstep import KStepOutput, kstep_infonce

#: ``loss(pred (B, T, K, D), z (B, T, D), lengths (B,), generator=..., [candidates=...,
#: candidate_lengths=..., query_offset=...]) -> KStepOutput``
LossFn = Callable[..., KStepOutput]


@dataclass
class LossConfig:
    """The contrastive loss over the model's k-step predictions.

    ``kind``: ``infonce`` (CPC's k-step InfoNCE, :mod:`cpc_seq.losses.kstep`) | ``acpc``
    (Chorowski et al. 2021: the ``model.n_steps`` predictions aligned to the next
    ``acpc_horizon`` frames, :mod:`cpc_seq.losses.acpc`; negatives ``all`` or
    ``cross_batch``).
    ``negatives``, ``n_negatives``: the candidates (:mod:`cpc_seq.losses.kstep`).
    ``exclude_positive``: never draw the positive among its own negatives (default: yes
    for ``infonce``; ``acpc`` shares its negatives between the frames it aligns, so it
    cannot, and ``true`` is an error there).
    ``cross_rank``: under torchrun, draw candidates from the z of every process's shard
    (all-gather with gradients), so N processes compute the 1-process loss
    (``infonce`` only).

    ``cotrain`` (audio only; McAllester 2018, :mod:`cpc_seq.losses.cotrain`,
    :mod:`cpc_seq.audio.model.cotrain_head`): ``K = cotrain_codes``-way codes of the past
    window ``c_t`` and of the future window ``mean(z_{t+1} .. z_{t+W})``,
    ``W = cotrain_window`` frames; maximises ``I(codes) - cotrain_beta H(past code)``;
    ``cotrain_model_scale``: the marginal and conditional models learn that many times
    faster than the rest (:class:`~cpc_seq.losses.cotrain.CoTraining`). It
    has no negatives and no prediction heads: ``negatives``, ``n_negatives``,
    ``exclude_positive``, ``cross_rank`` and ``acpc_horizon`` must stay at their defaults
    (and the ``cotrain_*`` keys at theirs under the other kinds).
    """

    kind: Literal["infonce", "acpc", "cotrain"] = "infonce"
    negatives: Literal["all", "other_sequences", "same_sequence", "cross_batch", "mixed"] = "all"
    n_negatives: int = 128
    exclude_positive: bool | None = None
    cross_rank: bool = False
    acpc_horizon: int = 12
    cotrain_codes: int = 64
    cotrain_beta: float = 0.0
    cotrain_window: int = 8
    cotrain_model_scale: float = 100.0

    def validate(self) -> None:
        check(self.n_negatives > 0, "loss.n_negatives", "must be positive")
        defaults = LossConfig()
        if self.kind == "cotrain":
            check(self.cotrain_codes >= 2, "loss.cotrain_codes", "must be at least 2")
            check(0.0 <= self.cotrain_beta < 1.0, "loss.cotrain_beta", "must be in [0, 1)")
            check(self.cotrain_window >= 1, "loss.cotrain_window", "must be at least 1 frame")
            check(self.cotrain_model_scale > 0, "loss.cotrain_model_scale", "must be positive")
            for key in ("negatives", "n_negatives", "exclude_positive", "cross_rank",
                        "acpc_horizon"):
                check(getattr(self, key) == getattr(defaults, key), f"loss.{key}",
                      f"not used by loss.kind=cotrain (it has no negatives or prediction "
                      f"heads); leave it at {getattr(defaults, key)!r}")
        else:
            for key in ("cotrain_codes", "cotrain_beta", "cotrain_window",
                        "cotrain_model_scale"):
                check(getattr(self, key) == getattr(defaults, key), f"loss.{key}",
                      f"only used by loss.kind=cotrain (this is {self.kind})")
        if self.kind == "acpc":
            check(self.negatives in ACPC_NEGATIVES, "loss.negatives",
                  f"one of {ACPC_NEGATIVES} with loss.kind=acpc")
            check(not self.cross_rank, "loss.cross_rank",
                  "not supported with loss.kind=acpc (its candidates are the process's own)")
            check(not self.exclude_positive, "loss.exclude_positive",
                  "not supported with loss.kind=acpc (its negatives are shared by the "
                  "frames a prediction aligns to; a draw may be any of them)")

    def frames_ahead(self, n_steps: int) -> int:
        """Frames past t the loss reads for ``n_steps`` predictions: ``n_steps``,
        ``acpc_horizon`` for ``acpc`` (which must be at least ``n_steps``), or
        ``cotrain_window`` for ``cotrain``."""
        if self.kind == "cotrain":
            return self.cotrain_window
        if self.kind != "acpc":
            return n_steps
        check(self.acpc_horizon >= n_steps, "loss.acpc_horizon",
              f"must be at least model.n_steps={n_steps} (the predictions it aligns)")
        return self.acpc_horizon


def build_loss(cfg: LossConfig, kernels: str = "auto") -> LossFn:
    """The loss ``cfg`` describes (see :data:`LossFn`); ``kernels``: ``auto`` |
    ``reference`` (:mod:`cpc_seq.kernels`, the k-step InfoNCE's cross-entropy)."""
    if cfg.kind == "acpc":
        return functools.partial(acpc_loss, horizon=cfg.acpc_horizon, negatives=cfg.negatives,
                                 n_negatives=cfg.n_negatives)
    if cfg.kind == "infonce":
        return functools.partial(kstep_infonce, negatives=cfg.negatives,
                                 n_negatives=cfg.n_negatives,
                                 exclude_positive=cfg.exclude_positive is not False,
                                 kernels=kernels)
    if cfg.kind == "cotrain":
        raise ConfigError("loss.kind: cotrain is trained by the audio task (its code heads "
                          "are part of the model), not by a k-step loss function")
    raise ConfigError(f"loss.kind: unknown {cfg.kind!r}")
