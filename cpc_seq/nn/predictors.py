"""k-step prediction networks for CPC (any modality): c (B, T, D_c) -> (B, T, K, D_z).

``PREDICTORS``:

``linear``
    K linear maps (the CPC paper's W_k), one matmul: :class:`cpc_seq.nn.layers.PredictionHeads`.
``transformer``
    CPC_audio's Transformer prediction network: one small causal Transformer layer per
    step k (K layers, no shared weights), each over the whole context sequence and
    followed by a linear map to D_z. Step k's prediction at t reads c[:, :t+1] only.
``transformer_shared``
    One causal Transformer layer shared by all steps, then the K linear maps of
    ``linear`` on its output: about 1/K of ``transformer``'s compute.
``relpos_transformer`` / ``relpos_transformer_shared``
    CPC_audio's own prediction network (post-norm, relative positions over a window of
    ``window`` frames; per step, or one layer for all steps as its ``--multihead_rnn``):
    :mod:`cpc_seq.nn.relpos`, for checkpoints imported from CPC_audio.

The Transformer layers are pre-norm (``norm_first``), causal by an upper-triangular
mask, and take no position encoding: c already carries order (it comes from a causal
recurrent or Transformer context), so no window length is baked in (CPC_audio's
predictor uses positions of a fixed window size, which locks the window length).
"""

from __future__ import annotations

import typing
from typing import Literal

import torch
from torch import Tensor, nn

from cpc_seq.nn.layers import PredictionHeads

PredictorKind = Literal["linear", "transformer", "transformer_shared", "relpos_transformer",
                        "relpos_transformer_shared"]
PREDICTORS = typing.get_args(PredictorKind)


def _causal_layer(dim: int, heads: int, ff: int, dropout: float) -> nn.TransformerEncoderLayer:
    return nn.TransformerEncoderLayer(dim, heads, dim_feedforward=ff, dropout=dropout,
                                      batch_first=True, norm_first=True)


def _causal_mask(t: int, like: Tensor) -> Tensor:
    return nn.Transformer.generate_square_subsequent_mask(t, device=like.device, dtype=like.dtype)


class LinearPredictor(PredictionHeads):
    """:class:`~cpc_seq.nn.layers.PredictionHeads` with dropout on its input (same
    parameter names). ``forward(c (B, T, D_c)) -> (B, T, K, D_z)``."""

    def __init__(self, dim_c: int, dim_z: int, n_steps: int, in_dropout: float = 0.0) -> None:
        super().__init__(dim_c, dim_z, n_steps)
        self.in_dropout = nn.Dropout(in_dropout)

    def forward(self, c: Tensor) -> Tensor:
        return super().forward(self.in_dropout(c))


class TransformerPredictor(nn.Module):
    """One causal Transformer layer per step, then a linear map to D_z (CPC_audio's
    prediction network). ``forward(c (B, T, D_c)) -> (B, T, K, D_z)``."""

    def __init__(self, dim_c: int, dim_z: int, n_steps: int, heads: int = 4,
                 ff: int | None = None, dropout: float = 0.0, in_dropout: float = 0.0) -> None:
        super().__init__()
        self.n_steps, self.dim_z = n_steps, dim_z
        self.in_dropout = nn.Dropout(in_dropout)
        ff = ff or 4 * dim_c
        self.layers = nn.ModuleList(_causal_layer(dim_c, heads, ff, dropout)
                                    for _ in range(n_steps))
        self.out = nn.ModuleList(nn.Linear(dim_c, dim_z, bias=False) for _ in range(n_steps))

    def forward(self, c: Tensor) -> Tensor:
        c = self.in_dropout(c)
        mask = _causal_mask(c.shape[1], c)
        preds = [out(layer(c, src_mask=mask, is_causal=True))
                 for layer, out in zip(self.layers, self.out)]
        return torch.stack(preds, dim=2)


class SharedTransformerPredictor(nn.Module):
    """One causal Transformer layer shared by the steps, then K linear maps.
    ``forward(c (B, T, D_c)) -> (B, T, K, D_z)``."""

    def __init__(self, dim_c: int, dim_z: int, n_steps: int, heads: int = 4,
                 ff: int | None = None, dropout: float = 0.0, in_dropout: float = 0.0) -> None:
        super().__init__()
        self.n_steps, self.dim_z = n_steps, dim_z
        self.in_dropout = nn.Dropout(in_dropout)
        self.layer = _causal_layer(dim_c, heads, ff or 4 * dim_c, dropout)
        self.heads = PredictionHeads(dim_c, dim_z, n_steps)

    def forward(self, c: Tensor) -> Tensor:
        c = self.in_dropout(c)
        h = self.layer(c, src_mask=_causal_mask(c.shape[1], c), is_causal=True)
        return self.heads(h)


def build_predictor(kind: str, dim_c: int, dim_z: int, n_steps: int, heads: int = 4,
                    ff: int | None = None, dropout: float = 0.0,
                    in_dropout: float = 0.0, window: int = 116) -> nn.Module:
    """Prediction network by name (``PREDICTORS``); every one maps (B, T, D_c) to
    (B, T, K, D_z) causally. ``dropout``: inside the Transformer layers; ``in_dropout``:
    on c where it enters (the ``relpos`` kinds: on their predictions, as CPC_audio's
    ``--dropout``); ``window``: the ``relpos`` kinds' position window (frames)."""
    if kind == "linear":
        if in_dropout == 0.0:
            return PredictionHeads(dim_c, dim_z, n_steps)
        return LinearPredictor(dim_c, dim_z, n_steps, in_dropout)
    if kind == "transformer":
        return TransformerPredictor(dim_c, dim_z, n_steps, heads, ff, dropout, in_dropout)
    if kind == "transformer_shared":
        return SharedTransformerPredictor(dim_c, dim_z, n_steps, heads, ff, dropout,
                                          in_dropout)
    if kind in ("relpos_transformer", "relpos_transformer_shared"):
        if dim_c != dim_z:
            raise ValueError(f"predictor {kind} needs dim_c == dim_z (got {dim_c}, {dim_z})")
        from cpc_seq.nn.relpos import RelPosTransformerPredictor

        return RelPosTransformerPredictor(dim_c, n_steps, heads, ff or 4 * dim_c, window,
                                          shared=kind.endswith("_shared"), dropout=dropout,
                                          out_dropout=in_dropout)
    raise ValueError(f"unknown predictor {kind!r}; one of {', '.join(PREDICTORS)}")
