"""AMDIM (Bachman et al., 2019): multiscale mutual information between two augmented views.

Pipeline for a batch of images::

    x (B, C, S, S) uint8 --two_views--> x1, x2 (B, C, S, S) float, independently augmented
    encoder(x1) -> r1 (B, d), r5 (B, d, 5, 5), r7 (B, d, 7, 7)     d = n_rkhs
    encoder(x2) -> the same for view 2
    loss = sum over pairs (1->5, 1->7, 5->5) of the mean over directions (view1->view2,
           view2->view1) of amdim_nce(source, target)       (see cpc_seq.losses.amdim_nce)

``1->5``: the 1x1 global vector of one view predicts every location of the other view's
5x5 map; ``1->7`` likewise for the 7x7 map; ``5->5``: one random location of one view's 5x5
map predicts every location of the other view's 5x5 map (``src5: all`` uses every
location as a source instead). Negatives are all locations of the other images of the
batch, shared by all positives of an image.

Mixture-based representations (Bachman et al. 2019, Sec. 3.5), ``n_mix = k > 1``
-----------------------------------------------------------------------------------
Each global vector ``f1 = r1`` is turned into ``k`` mixture features ``f1^1..f1^k`` by a
fully connected net with one ReLU hidden layer and a residual connection
(``f1^j = f1 + [W2 ReLU(W1 f1)]_j``, :class:`MixtureHead`), separately for each view.
For the 1->5 and 1->7 terms, each target location ``f^i`` (of the other view) then
weighs the components by the posterior::

    s_nce(f1^j, f^i) = log softmax of the positive pair against the negatives (<= 0)
    q(f1^j | f^i)    = softmax_j( s_nce(f1^j, f^i) / tau )
    objective        = E_i [ sum_j q(f1^j | f^i) s_nce(f1^j, f^i) + alpha H(q(. | f^i)) ]

(maximised; the loss is its negative plus the score penalty). With ``k = 1``, ``q = 1``,
``H = 0`` and the loss is exactly the plain NCE (the same code path is used). The 5->5
term has no mixture.

Encoder, scaled down for small images
-------------------------------------
The paper's encoder works on 128x128 crops (ImageNet) with a deep residual trunk whose
last stages give 7x7, 5x5 and 1x1 maps. For 28x28 (Fashion-MNIST), 32x32 (CIFAR-10) and
64x64 (STL-10 crops) inputs we keep the *last* part of that trunk, which is what defines
the three scales, and shorten the front (the public AMDIM code does the same for 32x32)::

    stem     3x3 conv, ndf             28 -> 28 (padding 1) | 32 -> 30 | 64 -> 62
    (64x64 only) block k4 s2, ndf                                         62 -> 30
    block    k4 s2, 2 ndf              28 -> 14 (padding 1) | 30 -> 14
    block    k2 s2, 4 ndf              14 -> 7      -> h7, head -> r7 (d, 7, 7)
    block    k3 s1, 4 ndf               7 -> 5      -> h5, head -> r5 (d, 5, 5)
    block    k3 s1, 4 ndf               5 -> 3
    block    k3 s1, 4 ndf               3 -> 1      -> h1, head -> r1 (d,)

Each ``block`` is a strided residual conv (kxk conv + 1x1 conv, average-pool shortcut)
followed by ``n_depth - 1`` 1x1 residual bottlenecks; each ``head`` is a residual 1x1-conv
MLP into the ``n_rkhs``-dim space where scores are taken (AMDIM's "fake RKHS" net).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cpc_seq.config import check
from cpc_seq.errors import ConfigError
from cpc_seq.losses.amdim_nce import (
    DEFAULT_CLIP,
    DEFAULT_PENALTY,
    AmdimNCEOutput,
    amdim_nce,
    clipped_scores,
)

__all__ = [
    "AMDIMConfig",
    "AMDIMEncoder",
    "AMDIMModel",
    "AMDIMOutput",
    "SUPPORTED_SIZES",
    "build_amdim",
    "amdim_loss",
    "make_view_transform",
    "two_views",
    "MixtureHead",
    "MixtureNCEOutput",
    "mixture_nce",
]

SUPPORTED_SIZES = (28, 32, 64)


@dataclass
class AMDIMConfig:
    """AMDIM model and loss options.

    ``ndf``: base width (the trunk has ``ndf``, ``2 ndf``, ``4 ndf`` channels);
    ``n_rkhs``: dimension of the score space; ``n_depth``: residual units per stage;
    ``penalty``: lambda of ``lambda * mean(s^2)``; ``clip``: c of ``c tanh(s / c)``;
    ``src5``: ``random`` (one random 5x5 location per image, as in the paper) or ``all``.
    ``crop_scale``: smallest area fraction of RandomResizedCrop.
    ``n_mix``: ``k`` mixture features per global vector (1 = none, the plain model);
    ``mix_tau``: temperature of ``q = softmax(s_nce / tau)``; ``mix_alpha``: weight of the
    entropy bonus ``alpha H(q)``; ``mix_hidden``: hidden width of the mixture net
    (0 = ``n_rkhs``).
    """

    ndf: int = 32
    n_rkhs: int = 256
    n_depth: int = 1
    use_bn: bool = True
    penalty: float = DEFAULT_PENALTY
    clip: float = DEFAULT_CLIP
    src5: str = "random"
    crop_scale: float = 0.3
    n_mix: int = 1
    mix_tau: float = 1.0
    mix_alpha: float = 0.05
    mix_hidden: int = 0

    def validate(self) -> None:
        check(self.ndf > 0, "amdim.ndf", "must be positive")
        check(self.n_rkhs > 0, "amdim.n_rkhs", "must be positive")
        check(self.n_depth >= 1, "amdim.n_depth", "must be >= 1")
        check(self.penalty >= 0, "amdim.penalty", "must be >= 0")
        check(self.clip >= 0, "amdim.clip", "must be >= 0 (0 disables the clip)")
        check(self.src5 in ("random", "all"), "amdim.src5", "random or all")
        check(0 < self.crop_scale <= 1, "amdim.crop_scale", "must be in (0, 1]")
        check(self.n_mix >= 1, "amdim.n_mix", "must be >= 1 (1 = no mixture)")
        check(self.mix_tau > 0, "amdim.mix_tau", "must be positive")
        check(self.mix_alpha >= 0, "amdim.mix_alpha", "must be >= 0")
        check(self.mix_hidden >= 0, "amdim.mix_hidden", "must be >= 0 (0 = n_rkhs)")


def _bn(channels: int, use_bn: bool) -> nn.Module:
    return nn.BatchNorm2d(channels) if use_bn else nn.Identity()


class ConvResNxN(nn.Module):
    """``k x k`` conv (stride, padding) -> BN -> ReLU -> 1x1 conv, plus an average-pool
    shortcut with the same geometry (1x1 projection when the width changes).
    ``(B, n_in, H, W) -> (B, n_out, H', W')``."""

    def __init__(self, n_in: int, n_out: int, k: int, stride: int, pad: int, use_bn: bool) -> None:
        super().__init__()
        self.k, self.stride, self.pad = k, stride, pad
        self.conv1 = nn.Conv2d(n_in, n_out, k, stride, pad, bias=not use_bn)
        self.bn1 = _bn(n_out, use_bn)
        self.conv2 = nn.Conv2d(n_out, n_out, 1)
        self.proj = nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv2(F.relu(self.bn1(self.conv1(x))))
        short = F.avg_pool2d(x, self.k, self.stride, self.pad, count_include_pad=False)
        return h + self.proj(short)


class ConvResBNxN(nn.Module):
    """1x1 residual bottleneck ``x + conv(ReLU(BN(conv(x))))``; shape unchanged."""

    def __init__(self, n: int, use_bn: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(n, n, 1, bias=not use_bn)
        self.bn1 = _bn(n, use_bn)
        self.conv2 = nn.Conv2d(n, n, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.relu(self.bn1(self.conv1(x))))


def _block(n_in: int, n_out: int, k: int, stride: int, pad: int, depth: int,
           use_bn: bool) -> nn.Sequential:
    layers: list[nn.Module] = [ConvResNxN(n_in, n_out, k, stride, pad, use_bn)]
    layers += [ConvResBNxN(n_out, use_bn) for _ in range(depth - 1)]
    return nn.Sequential(*layers)


class RKHSHead(nn.Module):
    """Residual 1x1-conv MLP into the score space: ``(B, n_in, H, W) -> (B, n_rkhs, H, W)``
    (``lin(x) + conv(ReLU(BN(conv(x))))``, then BN)."""

    def __init__(self, n_in: int, n_rkhs: int, use_bn: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(n_in, n_rkhs, 1, bias=not use_bn)
        self.bn1 = _bn(n_rkhs, use_bn)
        self.conv2 = nn.Conv2d(n_rkhs, n_rkhs, 1)
        self.shortcut = nn.Conv2d(n_in, n_rkhs, 1, bias=False)
        self.bn_out = _bn(n_rkhs, use_bn)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn_out(self.shortcut(x) + self.conv2(F.relu(self.bn1(self.conv1(x)))))


class MixtureHead(nn.Module):
    """``k`` mixture features of a global vector: ``(B, d) -> (B, k, d)``,
    ``f^j = f + [W2 ReLU(W1 f + b1) + b2]_j`` (one hidden layer, residual)."""

    def __init__(self, d: int, k: int, hidden: int) -> None:
        super().__init__()
        self.k = k
        self.net = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, k * d))

    def forward(self, f: Tensor) -> Tensor:
        b, d = f.shape
        return f[:, None, :] + self.net(f).view(b, self.k, d)


@dataclass
class AMDIMOutput:
    """Features of one view.

    ``r1`` (B, d), ``r5`` (B, d, 5, 5), ``r7`` (B, d, 7, 7): score-space features;
    ``h1`` (B, 4 ndf), ``h7`` (B, 4 ndf, 7, 7): trunk features (before the heads).
    """

    r1: Tensor
    r5: Tensor
    r7: Tensor
    h1: Tensor
    h7: Tensor


class AMDIMEncoder(nn.Module):
    """The trunk and the three heads (see the module docstring for the layer plan)."""

    def __init__(self, in_channels: int, image_size: int, cfg: AMDIMConfig) -> None:
        super().__init__()
        if image_size not in SUPPORTED_SIZES:
            raise ConfigError(
                f"AMDIM encoder: image size {image_size} is not supported; use one of "
                f"{SUPPORTED_SIZES} (set data.image_size to resize)"
            )
        ndf, d, bn = cfg.ndf, cfg.n_rkhs, cfg.use_bn
        small = image_size == 28
        stem: list[nn.Module] = [
            nn.Conv2d(in_channels, ndf, 3, 1, 1 if small else 0, bias=not bn), _bn(ndf, bn),
            nn.ReLU(),
        ]
        if image_size == 64:
            stem.append(_block(ndf, ndf, 4, 2, 0, cfg.n_depth, bn))
        stem.append(_block(ndf, 2 * ndf, 4, 2, 1 if small else 0, cfg.n_depth, bn))
        stem.append(_block(2 * ndf, 4 * ndf, 2, 2, 0, cfg.n_depth, bn))
        self.to7 = nn.Sequential(*stem)
        self.to5 = _block(4 * ndf, 4 * ndf, 3, 1, 0, cfg.n_depth, bn)
        self.to1 = nn.Sequential(_block(4 * ndf, 4 * ndf, 3, 1, 0, cfg.n_depth, bn),
                                 _block(4 * ndf, 4 * ndf, 3, 1, 0, cfg.n_depth, bn))
        self.head1 = RKHSHead(4 * ndf, d, bn)
        self.head5 = RKHSHead(4 * ndf, d, bn)
        self.head7 = RKHSHead(4 * ndf, d, bn)
        self.in_channels = in_channels
        self.image_size = image_size
        self.trunk_dim = 4 * ndf

    def forward(self, x: Tensor) -> AMDIMOutput:
        """``x`` (B, C, S, S) normalised float -> :class:`AMDIMOutput`."""
        h7 = self.to7(x)
        h5 = self.to5(h7)
        h1 = self.to1(h5)
        return AMDIMOutput(
            r1=self.head1(h1).flatten(1), r5=self.head5(h5), r7=self.head7(h7),
            h1=h1.flatten(1), h7=h7,
        )


class AMDIMModel(nn.Module):
    """The encoder plus the loss options; ``loss(x1, x2)`` gives the training objective."""

    def __init__(self, in_channels: int, image_size: int, cfg: AMDIMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = AMDIMEncoder(in_channels, image_size, cfg)
        # no module at all for k = 1, so plain checkpoints and losses are unchanged
        self.mixture = MixtureHead(cfg.n_rkhs, cfg.n_mix, cfg.mix_hidden or cfg.n_rkhs) \
            if cfg.n_mix > 1 else None

    def forward(self, x: Tensor) -> AMDIMOutput:
        """``x`` (B, C, S, S) -> :class:`AMDIMOutput`."""
        return self.encoder(x)

    def loss(self, x1: Tensor, x2: Tensor,
             generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float], Tensor]:
        """Both views ``(B, C, S, S)`` -> (loss, metrics, detached r1 of view 1).

        Both views go through the encoder as one batch of ``2 B`` images (one BN batch).
        """
        b = x1.shape[0]
        out = self.encoder(torch.cat([x1, x2]))
        b = out.r1.shape[0] // 2  # the global batch when a hook gathered views across ranks
        terms = amdim_loss(out, b, self.cfg, generator, mixture=self.mixture)
        loss = sum(t.loss for t in terms.values())
        metrics = {f"nce/{k}": float(t.nce.detach()) for k, t in terms.items()}
        metrics.update({f"acc/{k}": float(t.acc) for k, t in terms.items()})
        metrics["penalty"] = float(sum(t.penalty.detach() for t in terms.values()))
        metrics["mi_bound/1t5"] = float(terms["1t5"].mi)
        for k in ("1t5", "1t7"):
            term = terms[k]
            if isinstance(term, MixtureNCEOutput):
                metrics[f"mix_entropy/{k}"] = float(term.entropy)
        return loss, metrics, out.r1[:b].detach()

    @torch.no_grad()
    def features(self, x: Tensor, grid: int = 2) -> dict[str, Tensor]:
        """Frozen features for probes: ``r1`` (B, n_rkhs), ``h1`` (B, 4 ndf) and ``local``:
        the 7x7 trunk map average-pooled to ``grid x grid`` (B, 4 ndf * grid^2)."""
        enc = self.encoder
        h7 = enc.to7(x)
        h1 = enc.to1(enc.to5(h7))  # the 5x5 and 7x7 heads are not needed here
        local = F.adaptive_avg_pool2d(h7, grid).flatten(1)
        return {"r1": enc.head1(h1).flatten(1), "h1": h1.flatten(1), "local": local}


def _flat(m: Tensor) -> Tensor:
    """``(B, d, H, W) -> (B, H*W, d)``."""
    return m.flatten(2).transpose(1, 2)


@dataclass
class MixtureNCEOutput(AmdimNCEOutput):
    """:class:`AmdimNCEOutput` of a mixture term, plus ``q`` (B, k, L) the component
    posteriors per target location (detached) and ``entropy`` the mean ``H(q)``; here
    ``loss = nce - alpha * entropy + penalty`` with ``nce = -E[sum_j q s_nce]``."""

    q: Tensor | None = None
    entropy: Tensor | None = None


def mixture_nce(src: Tensor, trg: Tensor, *, penalty: float = DEFAULT_PENALTY,
                clip: float = DEFAULT_CLIP, tau: float = 1.0, alpha: float = 0.0
                ) -> MixtureNCEOutput:
    """Mixture NCE (Bachman et al. 2019, Sec. 3.5) between ``k`` mixture features per image
    and every location of the other view's map.

    Args:
        src: ``(B, k, d)`` mixture features ``f1^j`` of each image.
        trg: ``(B, L, d)`` target locations; image ``i`` of both is the same image.
        penalty, clip: AMDIM's score penalty and soft clip (as :func:`amdim_nce`).
        tau: temperature of ``q = softmax_j(s_nce / tau)``; alpha: entropy bonus weight.

    Scores, penalty and clip are those of :func:`amdim_nce` on the ``(B k, B L)`` matrix
    (every component of image ``i`` has image ``i``'s locations as positives and all other
    images' locations as negatives). ``s_nce`` is each positive's log-probability against
    its row's negatives, ``-softplus(lse_neg - s)``. With ``k = 1`` the result equals
    :func:`amdim_nce` (``q = 1``, ``H = 0``).
    """
    if src.dim() != 3 or trg.dim() != 3 or src.shape[0] != trg.shape[0] \
            or src.shape[2] != trg.shape[2]:
        raise ValueError(f"expected src (B, k, d), trg (B, L, d); got {tuple(src.shape)}, "
                         f"{tuple(trg.shape)}")
    b, k, _ = src.shape
    n_loc = trg.shape[1]
    s, pos, reg = clipped_scores(src, trg, penalty, clip, "mixture_nce")
    lse_neg = torch.logsumexp(s.masked_fill(pos, torch.finfo(s.dtype).min), dim=1, keepdim=True)
    logp = -F.softplus(lse_neg - s)  # (B*k, B*L), log-prob of each pair as the positive
    # the positive block of image i: rows i*k.., columns i*L.. -> (B, k, L)
    ar = torch.arange(b, device=s.device)
    s_nce = logp.view(b, k, b, n_loc)[ar, :, ar, :]
    q = torch.softmax(s_nce / tau, dim=1)
    ent = -(q * torch.log(q.clamp_min(1e-30))).sum(dim=1)  # (B, L)
    nce = -(q * s_nce).sum(dim=1).mean()
    entropy = ent.mean()
    loss = nce - alpha * entropy + reg
    n_neg = float((b - 1) * n_loc)
    with torch.no_grad():
        best_neg = s.masked_fill(pos, float("-inf")).amax(dim=1, keepdim=True)
        acc = ((s > best_neg) & pos).sum().float() / pos.sum()
    return MixtureNCEOutput(loss=loss, nce=nce, penalty=reg, mi=(math.log1p(n_neg) - nce).detach(),
                            acc=acc, q=q.detach(), entropy=entropy.detach())


def amdim_loss(out: AMDIMOutput, b: int, cfg: AMDIMConfig,
               generator: torch.Generator | None = None,
               mixture: MixtureHead | None = None) -> dict[str, AmdimNCEOutput]:
    """The three multiscale NCE terms, each averaged over the two view directions.

    ``out`` holds both views stacked (view 1 = rows ``:b``, view 2 = rows ``b:``).
    Returns ``{"1t5": ..., "1t7": ..., "5t5": ...}`` with ``loss = nce + penalty`` each.
    With ``mixture`` (``cfg.n_mix > 1``) the 1->5 and 1->7 terms are
    :func:`mixture_nce` of the mixture features of ``r1`` (:class:`MixtureNCEOutput`).
    """
    r1 = (out.r1[:b], out.r1[b:])
    r5 = (_flat(out.r5[:b]), _flat(out.r5[b:]))  # (B, 25, d)
    r7 = (_flat(out.r7[:b]), _flat(out.r7[b:]))  # (B, 49, d)
    n5 = r5[0].shape[1]
    if cfg.src5 == "random":
        idx = torch.randint(0, n5, (2, b), generator=generator, device="cpu").to(r5[0].device)
        ar = torch.arange(b, device=r5[0].device)
        s5 = (r5[0][ar, idx[0]], r5[1][ar, idx[1]])  # (B, d)
    else:
        s5 = r5
    kw = {"penalty": cfg.penalty, "clip": cfg.clip}
    pairs = {"1t5": (r1, r5), "1t7": (r1, r7), "5t5": (s5, r5)}
    result: dict[str, AmdimNCEOutput] = {}
    if mixture is not None:
        mix = (mixture(r1[0]), mixture(r1[1]))  # (B, k, d) per view
        mkw = {**kw, "tau": cfg.mix_tau, "alpha": cfg.mix_alpha}
        for name in ("1t5", "1t7"):
            trg = pairs.pop(name)[1]
            a = mixture_nce(mix[0], trg[1], **mkw)
            c = mixture_nce(mix[1], trg[0], **mkw)
            result[name] = MixtureNCEOutput(
                loss=0.5 * (a.loss + c.loss), nce=0.5 * (a.nce + c.nce),
                penalty=0.5 * (a.penalty + c.penalty), mi=0.5 * (a.mi + c.mi),
                acc=0.5 * (a.acc + c.acc), q=a.q, entropy=0.5 * (a.entropy + c.entropy),
            )
    for name, (src, trg) in pairs.items():
        a = amdim_nce(src[0], trg[1], **kw)
        c = amdim_nce(src[1], trg[0], **kw)
        result[name] = AmdimNCEOutput(
            loss=0.5 * (a.loss + c.loss), nce=0.5 * (a.nce + c.nce),
            penalty=0.5 * (a.penalty + c.penalty), mi=0.5 * (a.mi + c.mi),
            acc=0.5 * (a.acc + c.acc),
        )
    return result


def build_amdim(cfg: AMDIMConfig, in_channels: int, image_size: int) -> AMDIMModel:
    """Factory: ``AMDIMModel`` for ``in_channels`` x ``image_size`` x ``image_size`` inputs."""
    return AMDIMModel(in_channels, image_size, cfg)


# ------------------------------------------------------------------- augmentation


def make_view_transform(channels: int, size: int, crop_scale: float = 0.3) -> nn.Module:
    """torchvision v2 pipeline for one uint8 image ``(C, H, W) -> (C, size, size)`` uint8.

    RGB (``C = 3``): RandomResizedCrop, RandomHorizontalFlip, ColorJitter(0.4, 0.4, 0.4,
    0.2) with p = 0.8, RandomGrayscale(p = 0.25) (AMDIM's CIFAR/STL augmentation).
    Grey (``C = 1``, Fashion-MNIST): the same crop and flip, then brightness/contrast
    jitter only (0.4, p = 0.8): saturation, hue and grayscale do not apply to one channel.
    """
    from torchvision.transforms import v2

    ops: list[nn.Module] = [
        v2.RandomResizedCrop(size, scale=(crop_scale, 1.0), antialias=True),
        v2.RandomHorizontalFlip(),
    ]
    if channels == 3:
        ops += [v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.2)], p=0.8),
                v2.RandomGrayscale(p=0.25)]
    else:
        ops += [v2.RandomApply([v2.ColorJitter(brightness=0.4, contrast=0.4)], p=0.8)]
    return v2.Compose(ops)


def two_views(images: Tensor, transform: nn.Module) -> tuple[Tensor, Tensor]:
    """Apply ``transform`` independently twice to each uint8 image of ``(B, C, H, W)``;
    returns two uint8 ``(B, C, S, S)`` batches (uses the global torch RNG)."""
    v1 = torch.stack([transform(img) for img in images])
    v2 = torch.stack([transform(img) for img in images])
    return v1, v2
