"""Text CPC models: token level and sentence level.

**Token level** (``level: token``): token embedding -> strided 1-D conv encoder over the
token sequence -> context (GRU, LSTM or causal Transformer, from
:func:`cpc_seq.nn.context.build_context`) -> k-step linear heads. The encoder pads on
the left only (causal): with total stride S, frame t is computed from tokens
``[S t - R + S, S (t+1))`` where R is the receptive field, so c_t never sees a token of a
later frame. With the default kernel == stride the frames do not overlap at all: z_{t+k}
for k >= 1 shares no token with what c_t has seen, so the InfoNCE task cannot be solved by
matching tokens the context already knows. An input of N tokens gives
``T = ceil(N / S)`` frames (the last one zero-padded).

**Sentence level** (``level: sentence``, the CPC paper's NLP model): a sentence encoder
gives one z per sentence (``sentence_encoder``): ``conv`` (token embedding -> 1-D convs
with "same" padding -> max or mean over the valid tokens),
``gru`` (a bidirectional GRU over the token embeddings, pooled), ``transformer`` (a small
Transformer encoder over the token embeddings with learned positions, pooled) or ``bag``
(the pooled token embeddings; ``pool: weighted`` pools them with a softmax over learned
per-token scores, which can learn to ignore uninformative tokens as idf weights do;
``token_dropout`` leaves each token out with that probability while training, against
memorising the training sentences);
``sentence_dim`` sets the size of z for the gru and transformer encoders.
Then a GRU (or any context) over consecutive sentences gives c; the
heads predict the next k sentences' z, scored against the other sentences of the batch
by :func:`cpc_seq.losses.kstep_infonce`.

**Scores** (``score``, both levels): the loss scores a prediction against a candidate z
by a dot product. ``dot`` (the default) uses them as they are; ``scaled`` divides the
predictions by sqrt(D_z); ``cosine`` scores the cosine of prediction and z times a
learned scale (``1 / score_temperature`` at the start, at most 100). The extracted z is
the same either way (``loss_targets`` only normalises what the loss sees). See
docs/text.md, "At chance", for the measurements.

Shapes: token ids (B, N) int64, 0 = padding; token level z (B, T, D_z), c (B, T, D_c);
sentence level tokens (B, S, L), z (B, S, D_z), c (B, S, D_c); predictions
(B, T or S, K, D_z). Padded batches give the same valid outputs as one item at a time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from cpc_seq.config import check, check_literals
from cpc_seq.nn.context import ContextKind, build_context
from cpc_seq.nn.layers import ChannelNorm, PredictionHeads, receptive_field

Level = Literal["token", "sentence"]
Pool = Literal["max", "mean", "weighted"]
SentenceEncoderKind = Literal["conv", "gru", "transformer", "bag"]
#: Longest sentence (tokens) the ``transformer`` sentence encoder has positions for.
MAX_POSITIONS = 512
TextNorm = Literal["none", "channel"]
Score = Literal["dot", "scaled", "cosine"]
#: Largest scale of ``score: cosine`` (the learned inverse temperature is clamped to it).
MAX_COSINE_SCALE = 100.0


@dataclass
class TextModelConfig:
    """Architecture of a text CPC model, as plain data (stored in the checkpoint).

    ``encoder_layers``: [[kernel, stride, channels], ...]. Token level: causal, total
    stride = tokens per frame (default 4 tokens with two kernel==stride layers); sentence
    level: "same" padding, usually stride 1, then pooled (``pool``). ``vocab_size`` is set
    from the tokeniser when training starts (0 = not yet known).
    """

    level: Level = "token"
    vocab_size: int = 0
    embed_dim: int = 64
    encoder_layers: list[list[int]] = field(default_factory=lambda: [[2, 2, 256], [2, 2, 256]])
    encoder_norm: TextNorm = "channel"
    pool: Pool = "max"
    context: ContextKind = "gru"
    dim_c: int = 256
    context_layers: int = 1
    transformer_heads: int = 4
    dropout: float = 0.0
    n_steps: int = 6
    sentence_encoder: SentenceEncoderKind = "conv"
    sentence_dim: int = 0
    sentence_layers: int = 1
    sentence_heads: int = 4
    token_dropout: float = 0.0
    score: Score = "dot"
    score_temperature: float = 0.1
    #: std of the bag encoder's N(0, std) word vectors at initialisation (1 = torch's
    #: default). With Adam a step moves a weight by about the learning rate whatever its
    #: size, so a smaller start lets training move z further from its random start.
    embed_init_std: float = 1.0

    def validate(self) -> None:
        check_literals(self, "model.")
        check(self.vocab_size >= 0, "model.vocab_size", "must be >= 0 (0 = from the tokenizer)")
        check(self.embed_dim > 0, "model.embed_dim", "must be positive")
        check(bool(self.encoder_layers), "model.encoder_layers", "needs at least one layer")
        for i, spec in enumerate(self.encoder_layers):
            check(len(spec) == 3 and all(int(v) > 0 for v in spec), f"model.encoder_layers[{i}]",
                  "expected [kernel, stride, channels], all positive")
            check(spec[0] >= spec[1], f"model.encoder_layers[{i}]",
                  "kernel must be >= stride (no token may be skipped)")
        check(self.dim_c > 0, "model.dim_c", "must be positive")
        check(self.context_layers > 0, "model.context_layers", "must be positive")
        check(self.n_steps > 0, "model.n_steps", "must be positive")
        check(0.0 <= self.dropout < 1.0, "model.dropout", "must be in [0, 1)")
        if self.context == "transformer":
            check(self.dim_c % self.transformer_heads == 0, "model.transformer_heads",
                  f"must divide dim_c={self.dim_c}")
        check(self.sentence_dim >= 0, "model.sentence_dim", "must be >= 0")
        check(self.sentence_layers > 0, "model.sentence_layers", "must be positive")
        if self.level == "sentence" and self.sentence_encoder == "gru":
            check(self.sentence_dim % 2 == 0, "model.sentence_dim",
                  "must be even for the bidirectional gru encoder (0 = 2 * embed_dim)")
        if self.level == "sentence" and self.sentence_encoder == "transformer":
            check(self.sentence_heads > 0 and self.embed_dim % self.sentence_heads == 0,
                  "model.sentence_heads", f"must divide embed_dim={self.embed_dim}")
        if self.level == "sentence" and self.sentence_encoder == "bag":
            check(self.sentence_dim in (0, self.embed_dim), "model.sentence_dim",
                  "must be 0 or embed_dim for the bag encoder (set embed_dim instead)")
        if self.pool == "weighted":
            check(self.level == "sentence" and self.sentence_encoder == "bag", "model.pool",
                  "weighted needs level: sentence and sentence_encoder: bag (max or mean otherwise)")
        check(1.0 / MAX_COSINE_SCALE <= self.score_temperature <= 1.0, "model.score_temperature",
              f"must be in [{1.0 / MAX_COSINE_SCALE:g}, 1]")
        check(0.0 <= self.token_dropout < 1.0, "model.token_dropout", "must be in [0, 1)")
        check(self.embed_init_std > 0.0, "model.embed_init_std", "must be positive")
        if self.embed_init_std != 1.0:
            check(self.level == "sentence" and self.sentence_encoder == "bag",
                  "model.embed_init_std", "needs level: sentence and sentence_encoder: bag")
        if self.token_dropout:
            check(self.level == "sentence" and self.sentence_encoder == "bag",
                  "model.token_dropout", "needs level: sentence and sentence_encoder: bag")

    @property
    def stride(self) -> int:
        """Tokens per output frame of the encoder."""
        return math.prod(int(s[1]) for s in self.encoder_layers)


class TokenConvEncoder(nn.Module):
    """Token embedding + 1-D conv stack (Conv -> norm -> ReLU per layer).

    ``causal=True`` pads each layer on the left by ``kernel - stride`` (token level);
    ``causal=False`` splits the padding ``kernel - stride`` around ("same"-like; sentence
    level). Inputs are padded to a multiple of the total stride, so N tokens give exactly
    ``ceil(N / stride)`` frames. Frames past each layer's valid length are zeroed, so a
    padded batch gives the same valid frames as each item alone.

    ``forward(tokens (B, N), lengths (B,)) -> (z (B, T, C), frame_lengths (B,))``.
    """

    def __init__(
        self, vocab_size: int, embed_dim: int, layers: Sequence[Sequence[int]],
        norm: str = "channel", causal: bool = True,
    ) -> None:
        super().__init__()
        if vocab_size < 2:
            raise ValueError(f"vocab_size must be at least 2, got {vocab_size}")
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.specs = [tuple(int(v) for v in s) for s in layers]
        self.causal = causal
        convs, norms = [], []
        c_in = embed_dim
        for kernel, stride, channels in self.specs:
            convs.append(nn.Conv1d(c_in, channels, kernel, stride=stride))
            norms.append(ChannelNorm(channels) if norm == "channel" else nn.Identity())
            c_in = channels
        self.convs = nn.ModuleList(convs)
        self.norms = nn.ModuleList(norms)
        self.out_channels = c_in
        self.stride = math.prod(s for _, s, _ in self.specs)

    @property
    def receptive_field(self) -> int:
        """Tokens that one output frame depends on."""

        return receptive_field(self.specs)

    def frame_lengths(self, lengths: Tensor) -> Tensor:
        """Valid frames for ``lengths`` tokens: ``ceil(lengths / stride)``."""
        return torch.div(lengths + self.stride - 1, self.stride, rounding_mode="floor")

    def forward(self, tokens: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        bsz, n = tokens.shape
        if lengths is None:
            lengths = torch.full((bsz,), n, dtype=torch.long, device=tokens.device)
        n_pad = -n % self.stride
        if n_pad:
            tokens = nn.functional.pad(tokens, (0, n_pad))
        x = self.embed(tokens).transpose(1, 2)  # (B, E, N)
        valid = lengths
        for (kernel, stride, _), conv, norm in zip(self.specs, self.convs, self.norms):
            extra = kernel - stride
            left = extra if self.causal else extra // 2
            x = nn.functional.pad(x, (left, extra - left))
            x = torch.relu(norm(conv(x)))
            valid = torch.div(valid + stride - 1, stride, rounding_mode="floor")
            mask = torch.arange(x.shape[-1], device=x.device).unsqueeze(0) < valid.unsqueeze(1)
            x = x * mask.unsqueeze(1).to(x.dtype)
        return x.transpose(1, 2), valid


class ScoreScale(nn.Module):
    """How predictions and candidates meet in the loss's dot product (``config.score``):
    ``predictions(p (..., D))`` and ``targets(z (..., D))`` (see the module docstring)."""

    def __init__(self, kind: str, dim_z: int, temperature: float = 0.1) -> None:
        super().__init__()
        self.kind, self.dim_z = kind, dim_z
        if kind == "cosine":
            self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))

    def scale(self) -> Tensor | float:
        """The factor the (normalised) scores are multiplied by."""
        if self.kind == "cosine":
            return self.log_scale.clamp(max=math.log(MAX_COSINE_SCALE)).exp()
        return 1.0 / math.sqrt(self.dim_z) if self.kind == "scaled" else 1.0

    def predictions(self, p: Tensor) -> Tensor:
        if self.kind == "cosine":
            return nn.functional.normalize(p, dim=-1) * self.scale()
        return p * self.scale() if self.kind == "scaled" else p

    def targets(self, z: Tensor) -> Tensor:
        return nn.functional.normalize(z, dim=-1) if self.kind == "cosine" else z


@dataclass
class TextCPCOutput:
    """``z`` (B, T, D_z), ``c`` (B, T, D_c), ``lengths`` (B,) valid frames or sentences."""

    z: Tensor
    c: Tensor
    lengths: Tensor


class TokenCPC(nn.Module):
    """Token-level CPC. ``model(tokens (B, N), lengths (B,)) -> TextCPCOutput`` (frames);
    ``model.predict(c)`` -> (B, T, K, D_z)."""

    level = "token"

    def __init__(self, config: TextModelConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = TokenConvEncoder(config.vocab_size, config.embed_dim,
                                        config.encoder_layers, config.encoder_norm, causal=True)
        self.context = build_context(config.context, self.encoder.out_channels, config.dim_c,
                                     config.context_layers, config.transformer_heads,
                                     config.dropout)
        self.heads = PredictionHeads(config.dim_c, self.encoder.out_channels, config.n_steps)
        self.score = ScoreScale(config.score, self.encoder.out_channels, config.score_temperature)
        self.downsample_rate = self.encoder.stride

    def forward(self, tokens: Tensor, lengths: Tensor | None = None) -> TextCPCOutput:
        z, frames = self.encoder(tokens, lengths)
        return TextCPCOutput(z=z, c=self.context(z), lengths=frames)

    def predict(self, c: Tensor) -> Tensor:
        return self.score.predictions(self.heads(c))

    def loss_targets(self, z: Tensor) -> Tensor:
        """The candidates the loss scores ``predict(c)`` against (z, or z normalised)."""
        return self.score.targets(z)


def _pool_valid(h: Tensor, lengths: Tensor, how: str) -> Tensor:
    """(N, L, C) rows, (N,) valid counts -> (N, C) mean or max over the valid rows
    (0 for an item with no valid row)."""
    mask = (torch.arange(h.shape[1], device=h.device).unsqueeze(0)
            < lengths.unsqueeze(1)).unsqueeze(-1)
    if how == "mean":
        return (h * mask).sum(1) / lengths.clamp_min(1).unsqueeze(1).to(h.dtype)
    out = h.masked_fill(~mask, float("-inf")).amax(1)
    return torch.where(lengths.unsqueeze(1) > 0, out, torch.zeros_like(out))


def _drop_tokens(valid: Tensor, p: float) -> Tensor:
    """Training-time token dropout for the bag encoder: each valid token of ``valid``
    (N, L) bool is left out with probability ``p`` (torch's global RNG, which the
    checkpoint carries), except that a non-empty sentence keeps at least its first
    remaining token. Returns the new (N, L) mask."""
    keep = valid & (torch.rand(valid.shape, device=valid.device) >= p)
    lost = valid.any(dim=1) & ~keep.any(dim=1)
    if bool(lost.any()):  # keep the first valid token of sentences that lost them all
        first = torch.zeros_like(valid)
        first[lost, valid[lost].int().argmax(dim=1)] = True
        keep |= first
    return keep


class SentenceEncoder(nn.Module):
    """Sentences -> one vector each (``config.sentence_encoder``), pooled over valid tokens.

    ``forward(tokens (N, L), lengths (N,)) -> (N, D_z)``; a sentence of 0 tokens gives 0.
    A batch gives the same vector for a sentence as the sentence alone.
    """

    def __init__(self, config: TextModelConfig) -> None:
        super().__init__()
        self.kind = config.sentence_encoder
        self.pool = config.pool
        self.token_dropout = config.token_dropout
        if self.kind == "conv":
            self.conv = TokenConvEncoder(config.vocab_size, config.embed_dim,
                                         config.encoder_layers, config.encoder_norm,
                                         causal=False)
            self.out_channels = self.conv.out_channels
            return
        if config.vocab_size < 2:
            raise ValueError(f"vocab_size must be at least 2, got {config.vocab_size}")
        self.embed = nn.Embedding(config.vocab_size, config.embed_dim, padding_idx=0)
        if self.kind == "gru":
            dim = config.sentence_dim or 2 * config.embed_dim
            self.rnn = nn.GRU(config.embed_dim, dim // 2, num_layers=config.sentence_layers,
                              batch_first=True, bidirectional=True)
            self.out_channels = dim
        elif self.kind == "transformer":
            e = config.embed_dim
            self.pos = nn.Embedding(MAX_POSITIONS, e)
            layer = nn.TransformerEncoderLayer(e, config.sentence_heads, 2 * e,
                                               dropout=config.dropout, batch_first=True,
                                               norm_first=True)
            self.transformer = nn.TransformerEncoder(layer, config.sentence_layers,
                                                     enable_nested_tensor=False)
            self.norm = nn.LayerNorm(e)
            dim = config.sentence_dim or e
            self.proj: nn.Module = nn.Linear(e, dim) if dim != e else nn.Identity()
            self.out_channels = dim
        else:  # bag
            self.out_channels = config.embed_dim
            with torch.no_grad():  # torch's N(0, 1) draw, scaled (the padding row stays 0)
                self.embed.weight.mul_(config.embed_init_std)
            if self.pool == "weighted":  # one learned score per token; 0 = the plain mean
                self.token_score = nn.Embedding(config.vocab_size, 1, padding_idx=0)
                nn.init.zeros_(self.token_score.weight)

    def _token_weights(self, flat: Tensor, lengths: Tensor) -> Tensor:
        """``pool: weighted``: softmax of the learned token scores within each sentence.
        ``flat`` (M,) tokens of the N sentences of ``lengths`` (N,) in a row -> (M,)."""
        seg = torch.repeat_interleave(torch.arange(len(lengths), device=flat.device), lengths)
        score = self.token_score(flat).squeeze(1)  # (M,)
        top = torch.full(lengths.shape, -torch.inf, device=flat.device, dtype=score.dtype)
        top = top.scatter_reduce(0, seg, score.detach(), "amax")
        e = torch.exp(score - top[seg])
        total = torch.zeros(lengths.shape, device=flat.device, dtype=e.dtype).index_add(0, seg, e)
        return e / total[seg]

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        if self.kind == "conv":
            h, frames = self.conv(tokens, lengths)  # (N, T, C)
            # ReLU outputs are >= 0, so zeros at padded frames never win the max.
            return _pool_valid(h, frames, self.pool).clamp_min(0)
        width = tokens.shape[1]
        lengths = lengths.clamp_max(width)
        if self.kind == "bag":  # pooled embeddings without materialising (N, L, E)
            valid = torch.arange(width, device=tokens.device).unsqueeze(0) < lengths.unsqueeze(1)
            if self.training and self.token_dropout:
                valid = _drop_tokens(valid, self.token_dropout)
                lengths = valid.sum(dim=1)
            offsets = torch.cumsum(lengths, 0) - lengths
            flat = tokens[valid]  # (M,) the kept tokens, sentence after sentence
            if self.pool != "weighted":
                return nn.functional.embedding_bag(flat, self.embed.weight, offsets,
                                                   mode=self.pool, padding_idx=0)
            return nn.functional.embedding_bag(flat, self.embed.weight, offsets, mode="sum",
                                               per_sample_weights=self._token_weights(flat, lengths))
        x = self.embed(tokens)  # (N, L, E)
        if self.kind == "gru":
            if tokens.shape[0] == 0:
                return x.new_zeros(0, self.out_channels)
            packed = nn.utils.rnn.pack_padded_sequence(x, lengths.clamp_min(1).cpu(),
                                                       batch_first=True, enforce_sorted=False)
            h, _ = self.rnn(packed)
            x, _ = nn.utils.rnn.pad_packed_sequence(h, batch_first=True, total_length=width)
        elif self.kind == "transformer":
            if width > MAX_POSITIONS:
                raise ValueError(f"sentences of {width} tokens: the transformer sentence "
                                 f"encoder has {MAX_POSITIONS} positions")
            x = x + self.pos(torch.arange(width, device=x.device)).unsqueeze(0)
            pad = torch.arange(width, device=x.device).unsqueeze(0) >= lengths.unsqueeze(1)
            pad = pad & (lengths.unsqueeze(1) > 0)  # an empty sentence attends to its padding
            x = self.proj(self.norm(self.transformer(x, src_key_padding_mask=pad)))
        return _pool_valid(x, lengths, self.pool)


class SentenceCPC(nn.Module):
    """Sentence-level CPC.

    ``model(tokens (B, S, L), token_lengths (B, S), sent_lengths (B,)) -> TextCPCOutput``
    with z (B, S, D_z) (zero for padded sentences), c (B, S, D_c), lengths = sentence
    counts. ``model.predict(c)`` -> (B, S, K, D_z); ``model.embed(tokens (N, L),
    lengths (N,))`` -> (N, D_z) sentence embeddings.
    """

    level = "sentence"
    downsample_rate = 1

    def __init__(self, config: TextModelConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = SentenceEncoder(config)
        self.context = build_context(config.context, self.encoder.out_channels, config.dim_c,
                                     config.context_layers, config.transformer_heads,
                                     config.dropout)
        self.heads = PredictionHeads(config.dim_c, self.encoder.out_channels, config.n_steps)
        self.score = ScoreScale(config.score, self.encoder.out_channels, config.score_temperature)

    def embed(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        return self.encoder(tokens, lengths)

    def forward(
        self, tokens: Tensor, token_lengths: Tensor, sent_lengths: Tensor | None = None
    ) -> TextCPCOutput:
        bsz, n_sent, width = tokens.shape
        if sent_lengths is None:
            sent_lengths = torch.full((bsz,), n_sent, dtype=torch.long, device=tokens.device)
        valid = (torch.arange(n_sent, device=tokens.device).unsqueeze(0)
                 < sent_lengths.unsqueeze(1))  # (B, S)
        flat_tok = tokens.reshape(bsz * n_sent, width)[valid.reshape(-1)]
        flat_len = token_lengths.reshape(-1)[valid.reshape(-1)]
        zv = self.encoder(flat_tok, flat_len)
        z = zv.new_zeros(bsz * n_sent, zv.shape[1])
        z[valid.reshape(-1)] = zv
        z = z.view(bsz, n_sent, -1)
        return TextCPCOutput(z=z, c=self.context(z), lengths=sent_lengths)

    def predict(self, c: Tensor) -> Tensor:
        return self.score.predictions(self.heads(c))

    def loss_targets(self, z: Tensor) -> Tensor:
        """The candidates the loss scores ``predict(c)`` against (z, or z normalised)."""
        return self.score.targets(z)


TextCPC = TokenCPC | SentenceCPC


def build_text_model(config: TextModelConfig) -> TokenCPC | SentenceCPC:
    """Build the model of ``config.level`` (``config.vocab_size`` must be set)."""
    if config.vocab_size < 2:
        raise ValueError("model.vocab_size must be set (from the tokenizer) before building")
    if config.level == "token":
        return TokenCPC(config)
    return SentenceCPC(config)
