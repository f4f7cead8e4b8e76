"""The audio CPC model: encoder -> context -> k-step linear prediction heads.

Composed of injected modules (encoder, context, heads) and built from a plain
:class:`ModelConfig` by :func:`build_model`, or by the preset factories
:func:`cpc_paper` and :func:`cpc_small`.

Shapes: waveforms (B, N) at ``sample_rate``; z (B, T, D_z); c (B, T, D_c);
predictions (B, T, K, D_z), with T = N // 160 for the paper's kernels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor, nn

from cpc_seq.audio.encoder import NORMS, ConvEncoder, paper_layers
from cpc_seq.config import check
from cpc_seq.nn.context import CONTEXTS, build_context
from cpc_seq.nn.layers import PredictionHeads

ENCODER_PRESETS = ("paper", "small", "tiny", "custom")


@dataclass
class ModelConfig:
    """Architecture, as plain data (stored in every checkpoint).

    ``encoder``: ``paper`` (512 channels), ``small`` (256), ``tiny`` (128), all with
    the paper's kernels/strides (160x), or ``custom`` with ``encoder_layers`` as
    [[kernel, stride, channels], ...]. ``encoder_channels`` overrides the channel count
    of a preset.
    """

    encoder: str = "small"
    encoder_layers: list[list[int]] | None = None
    encoder_channels: int | None = None
    encoder_norm: str = "channel"
    context: str = "gru"
    dim_c: int = 256
    context_layers: int = 1
    transformer_heads: int = 4
    dropout: float = 0.0
    n_steps: int = 12
    sample_rate: int = 16000

    def validate(self) -> None:
        check(self.encoder in ENCODER_PRESETS, "model.encoder", f"one of {ENCODER_PRESETS}")
        if self.encoder == "custom":
            check(bool(self.encoder_layers), "model.encoder_layers", "needed for encoder=custom")
        for i, spec in enumerate(self.encoder_layers or []):
            check(len(spec) == 3 and all(v > 0 for v in spec), f"model.encoder_layers[{i}]",
                  "expected [kernel, stride, channels], all positive")
        check(self.encoder_norm in NORMS, "model.encoder_norm", f"one of {NORMS}")
        check(self.context in CONTEXTS, "model.context", f"one of {CONTEXTS}")
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
    (B, T, K, D_z) for :func:`cpc_seq.losses.kstep_infonce`.
    """

    def __init__(
        self, encoder: ConvEncoder, context: nn.Module, heads: PredictionHeads,
        config: ModelConfig | None = None,
    ) -> None:
        super().__init__()
        self.encoder, self.context, self.heads = encoder, context, heads
        self.config = config
        self.downsample_rate = encoder.downsample
        self.sample_rate = config.sample_rate if config is not None else 16000

    @property
    def layer_names(self) -> list[str]:
        """Names accepted by ``forward_layers``: ``conv1..convL``, ``z`` (= last conv), ``c``."""
        return [f"conv{i + 1}" for i in range(len(self.encoder.convs))] + ["z", "c"]

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

    def predict(self, c: Tensor) -> Tensor:
        """(B, T, D_c) -> (B, T, K, D_z)."""
        return self.heads(c)


def build_model(config: ModelConfig) -> CPCModel:
    """Build a :class:`CPCModel` from its config."""
    layers = config.layers()
    encoder = ConvEncoder(layers, norm=config.encoder_norm)
    context = build_context(
        config.context, encoder.out_channels, config.dim_c, config.context_layers,
        config.transformer_heads, config.dropout,
    )
    heads = PredictionHeads(config.dim_c, encoder.out_channels, config.n_steps)
    return CPCModel(encoder, context, heads, config)


def cpc_paper(**overrides: object) -> CPCModel:
    """The CPC paper's audio model: 512-channel encoder, GRU 256, 12 steps."""
    return build_model(ModelConfig(encoder="paper", **overrides))  # type: ignore[arg-type]


def cpc_small(**overrides: object) -> CPCModel:
    """CPU-sized model: 256-channel encoder, GRU 256, 12 steps."""
    return build_model(ModelConfig(encoder="small", **overrides))  # type: ignore[arg-type]

