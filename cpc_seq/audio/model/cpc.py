"""The audio CPC model: encoder -> context -> k-step linear prediction heads.

Composed of injected modules (encoder, context, heads) and built from a plain
:class:`ModelConfig` by :func:`build_model`, or by the preset factories
:func:`cpc_paper` and :func:`cpc_small`.

Shapes: waveforms (B, N) at ``sample_rate``; z (B, T, D_z); c (B, T, D_c);
predictions (B, T, K, D_z), with T = N // 160 for the paper's kernels.

A model trained with ``loss.kind: cotrain`` also has a ``cotrain`` submodule
(:class:`~cpc_seq.audio.model.cotrain_head.CoTrainHead`: the code heads and the
co-training models), built by ``build_model(config, loss)`` from the loss config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from torch import Tensor, nn

from cpc_seq.audio.data.windows import normalize_windows
from cpc_seq.audio.model.encoder import ConvEncoder, Norm, paper_layers
from cpc_seq.config import check, check_literals
from cpc_seq.kernels import KernelMode
from cpc_seq.nn.context import ContextKind, build_context
from cpc_seq.nn.predictors import PredictorKind, build_predictor

if TYPE_CHECKING:
    from cpc_seq.audio.model.cotrain_head import CoTrainHead
    from cpc_seq.losses.config import LossConfig

EncoderPreset = Literal["paper", "small", "tiny", "custom"]
InputNorm = Literal["utterance", "none"]


@dataclass
class ModelConfig:
    """Architecture, as plain data (stored in every checkpoint).

    ``encoder``: ``paper`` (512 channels), ``small`` (256), ``tiny`` (128), all with
    the paper's kernels/strides (160x), or ``custom`` with ``encoder_layers`` as
    [[kernel, stride, channels], ...]. ``encoder_channels`` overrides the channel count
    of a preset.

    ``predictor``: the k-step prediction network (:mod:`cpc_seq.nn.predictors`):
    ``linear`` (the CPC paper's), ``transformer`` (one causal Transformer layer per
    step, CPC_audio's), ``transformer_shared`` (one layer shared by the steps);
    ``predictor_ff`` its feed-forward width (default 4 * dim_c); its heads are
    ``transformer_heads`` and its dropout ``dropout``. ``predictor_dropout``: dropout
    on c where it enters the prediction network (CPC_audio's ``--dropout``, p = 0.5);
    the features extracted for probes never see it. ``predictor_window``: the position
    window (frames) of the ``relpos_transformer`` predictors (CPC_audio's, imported).

    ``input_norm``: ``utterance`` (each training window and each extracted utterance to
    zero mean, unit variance) | ``none`` (the samples as read, in [-1, 1): what CPC_audio
    feeds its models, so checkpoints imported from it use ``none``).

    ``kernels``: ``auto`` (the CPU speed kernels of :mod:`cpc_seq.kernels` where they
    apply: same results within float rounding, faster) | ``reference`` (the plain torch
    code everywhere; what a GPU runs either way).
    """

    encoder: EncoderPreset = "small"
    encoder_layers: list[list[int]] | None = None
    encoder_channels: int | None = None
    encoder_norm: Norm = "channel"
    context: ContextKind = "gru"
    dim_c: int = 256
    context_layers: int = 1
    transformer_heads: int = 4
    dropout: float = 0.0
    n_steps: int = 12
    sample_rate: int = 16000
    predictor: PredictorKind = "linear"
    predictor_ff: int | None = None
    predictor_dropout: float = 0.0
    predictor_window: int = 116
    input_norm: InputNorm = "utterance"
    kernels: KernelMode = "auto"

    def validate(self) -> None:
        check_literals(self, "model.")
        if self.encoder == "custom":
            check(bool(self.encoder_layers), "model.encoder_layers", "needed for encoder=custom")
        for i, spec in enumerate(self.encoder_layers or []):
            check(len(spec) == 3 and all(v > 0 for v in spec), f"model.encoder_layers[{i}]",
                  "expected [kernel, stride, channels], all positive")
        check(self.dim_c > 0, "model.dim_c", "must be positive")
        check(self.context_layers > 0, "model.context_layers", "must be positive")
        check(self.n_steps > 0, "model.n_steps", "must be positive")
        check(0.0 <= self.dropout < 1.0, "model.dropout", "must be in [0, 1)")
        check(self.sample_rate > 0, "model.sample_rate", "must be positive")
        if self.encoder_channels is not None:
            check(self.encoder_channels > 0, "model.encoder_channels", "must be positive")
        if self.context == "transformer":
            check(self.dim_c % self.transformer_heads == 0, "model.transformer_heads",
                  f"must divide dim_c={self.dim_c}")
        if self.predictor != "linear":
            check(self.dim_c % self.transformer_heads == 0, "model.transformer_heads",
                  f"must divide dim_c={self.dim_c} (the Transformer predictor's width)")
        check(0.0 <= self.predictor_dropout < 1.0, "model.predictor_dropout", "must be in [0, 1)")
        if self.predictor_ff is not None:
            check(self.predictor_ff > 0, "model.predictor_ff", "must be positive")
        check(self.predictor_window > 0, "model.predictor_window", "must be positive")
        if self.predictor.startswith("relpos_"):
            dim_z = self.layers()[-1][2]
            check(self.dim_c == dim_z, "model.dim_c",
                  f"must equal the encoder's {dim_z} channels for predictor={self.predictor}")

    def downsample_rate(self) -> int:
        """Input samples per output frame: the product of the encoder's strides."""
        rate = 1
        for _, stride, _ in self.layers():
            rate *= stride
        return rate

    def layers(self) -> list[tuple[int, int, int]]:
        """The encoder's (kernel, stride, channels) list."""
        if self.encoder == "custom":
            specs = [tuple(s) for s in self.encoder_layers or []]
        else:
            specs = paper_layers({"paper": 512, "small": 256, "tiny": 128}[self.encoder])
        if self.encoder_channels is not None:
            specs = [(k, s, self.encoder_channels) for k, s, _ in specs]
        return [tuple(int(v) for v in s) for s in specs]  # type: ignore[misc]


@dataclass
class CPCOutput:
    """``z`` (B, T, D_z), ``c`` (B, T, D_c), ``frame_lengths`` (B,), optional ``layers``."""

    z: Tensor
    c: Tensor
    frame_lengths: Tensor
    layers: list[Tensor] = field(default_factory=list)


class CPCModel(nn.Module):
    """Contrastive Predictive Coding model for waveforms.

    ``model(waveforms (B, N), lengths (B,)) -> (z (B, T, D_z), c (B, T, D_c),
    frame_lengths (B,))``. ``model.predict(c)`` gives the k-step predictions
    (B, T, K, D_z) for :func:`cpc_seq.losses.kstep_infonce`. ``cotrain``: the
    co-training code heads (``loss.kind: cotrain``) or ``None``.
    """

    def __init__(
        self, encoder: ConvEncoder, context: nn.Module, heads: nn.Module,
        config: ModelConfig | None = None, cotrain: CoTrainHead | None = None,
    ) -> None:
        super().__init__()
        self.encoder, self.context, self.heads = encoder, context, heads
        self.cotrain = cotrain
        self.config = config
        self.downsample_rate = encoder.downsample
        self.sample_rate = config.sample_rate if config is not None else 16000

    @property
    def layer_names(self) -> list[str]:
        """Layer names: ``conv1..convL``, ``z`` (= last conv), ``c``, and ``codes`` (the
        co-training code distribution of ``c``, (T, K)) when the model has code heads."""
        names = [f"conv{i + 1}" for i in range(len(self.encoder.convs))] + ["z", "c"]
        return names + (["codes"] if self.cotrain is not None else [])

    def forward(
        self, waveforms: Tensor, lengths: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        z, frame_lengths = self.encoder(waveforms, lengths)
        c = self.context(z)
        return z, c, frame_lengths

    def forward_layers(self, waveforms: Tensor, lengths: Tensor | None = None) -> CPCOutput:
        """Like ``forward`` but also returns every conv layer's output (B, T_l, C_l)."""
        z, frame_lengths, layers = self.encoder(waveforms, lengths, return_layers=True)
        c = self.context(z)
        return CPCOutput(z=z, c=c, frame_lengths=frame_lengths, layers=layers)

    def normalize_input(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Waveforms (B, N) as the model takes them (``config.input_norm``): per-row zero
        mean and unit variance over the first ``lengths`` samples, or unchanged."""
        if self.config is not None and self.config.input_norm == "none":
            return x
        return normalize_windows(x, lengths=lengths)

    def predict(self, c: Tensor) -> Tensor:
        """(B, T, D_c) -> (B, T, K, D_z)."""
        return self.heads(c)


def build_model(config: ModelConfig, loss: LossConfig | None = None) -> CPCModel:
    """Build a :class:`CPCModel` from its config; with a ``loss`` of kind ``cotrain``, with
    its co-training heads (``model.cotrain``)."""
    layers = config.layers()
    encoder = ConvEncoder(layers, norm=config.encoder_norm, kernels=config.kernels)
    context = build_context(
        config.context, encoder.out_channels, config.dim_c, config.context_layers,
        config.transformer_heads, config.dropout, kernels=config.kernels,
    )
    heads = build_predictor(config.predictor, config.dim_c, encoder.out_channels,
                            config.n_steps, config.transformer_heads, config.predictor_ff,
                            config.dropout, config.predictor_dropout, config.predictor_window)
    cotrain = None
    if loss is not None and loss.kind == "cotrain":
        from cpc_seq.audio.model.cotrain_head import CoTrainHead

        cotrain = CoTrainHead(encoder.out_channels, config.dim_c, loss.cotrain_codes,
                              loss.cotrain_beta, loss.cotrain_window,
                              loss.cotrain_model_scale)
    return CPCModel(encoder, context, heads, config, cotrain)


def cpc_paper(**overrides: object) -> CPCModel:
    """The CPC paper's audio model: 512-channel encoder, GRU 256, 12 steps."""
    return build_model(ModelConfig(encoder="paper", **overrides))  # type: ignore[arg-type]


def cpc_small(**overrides: object) -> CPCModel:
    """CPU-sized model: 256-channel encoder, GRU 256, 12 steps."""
    return build_model(ModelConfig(encoder="small", **overrides))  # type: ignore[arg-type]


#: Modified CPC (Riviere et al. 2020, CPC_audio's default) as in the ZeroSpeech 2021
#: CPC-small baseline: channel-wise layer norm in the 256-channel encoder, a 2-layer
#: LSTM context, one causal Transformer prediction layer per step, dropout. Train it with
#: ``data.batch_sampling=same_speaker`` and ``loss.negatives=cross_batch`` (the
#: baseline's sampling; recipes/librispeech/conf/cpc2.yaml).
CPC2: dict[str, object] = {
    "encoder": "small", "encoder_norm": "channel", "context": "lstm", "dim_c": 256,
    "context_layers": 2, "predictor": "transformer", "transformer_heads": 8,
    "predictor_ff": 2048, "predictor_dropout": 0.5, "n_steps": 12,
}

MODEL_PRESETS: dict[str, dict[str, object]] = {
    "paper": {"encoder": "paper"}, "small": {"encoder": "small"}, "cpc2": CPC2,
}


def preset_config(name: str, **overrides: object) -> ModelConfig:
    """The :class:`ModelConfig` of a preset (``paper``, ``small``, ``cpc2``) with overrides."""
    if name not in MODEL_PRESETS:
        raise ValueError(f"unknown model preset {name!r}; one of {', '.join(MODEL_PRESETS)}")
    return ModelConfig(**{**MODEL_PRESETS[name], **overrides})  # type: ignore[arg-type]


def cpc2(**overrides: object) -> CPCModel:
    """Modified CPC / CPC2 (ZeroSpeech 2021 CPC-small settings): see :data:`CPC2`."""
    return build_model(preset_config("cpc2", **overrides))

