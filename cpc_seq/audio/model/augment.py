"""On-the-fly waveform augmentation of training windows (config section ``augment``).

Each effect is applied to a window with its own probability (0 = off, the default), in
this order: speed change, reverberation, band-reject filter, additive noise. The
effects are torchaudio.functional's (``speed``, ``fftconvolve``, ``bandreject_biquad``,
``add_noise``); the room response is synthetic (below). Windows keep their real length:
a faster window is shorter and the rest is padding, masked like a short utterance; a
slower one is cut to the window.

- speed: resampling by a factor drawn from ``speed_factors`` (pitch and tempo change
  together, as in Kaldi's speed perturbation).
- reverberation: convolution with a synthetic room impulse response: a direct path
  (1 at t = 0) plus Gaussian noise under an exponential envelope that decays by 60 dB in
  RT60 seconds, RT60 uniform in ``reverb_rt60``; the response is normalised to unit
  energy and the result cut to the window.
- band-reject: one biquad notch, centre frequency log-uniform in ``bandreject_freq`` Hz,
  quality factor ``bandreject_q``.
- noise: white Gaussian noise at an SNR uniform in ``noise_snr`` dB (over the window's
  real samples).

Every draw comes from one ``torch.Generator`` owned by the caller, whose state goes into
the training task's checkpoint state, so a resumed run augments exactly as an
uninterrupted one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torchaudio.functional as AF
from torch import Tensor

from cpc_seq.config import check


@dataclass
class AugmentConfig:
    """Per-effect probabilities (0 = off) and ranges; see :mod:`cpc_seq.audio.model.augment`."""

    speed_prob: float = 0.0
    speed_factors: list[float] = field(default_factory=lambda: [0.9, 0.95, 1.05, 1.1])
    reverb_prob: float = 0.0
    reverb_rt60: list[float] = field(default_factory=lambda: [0.1, 0.4])
    bandreject_prob: float = 0.0
    bandreject_freq: list[float] = field(default_factory=lambda: [200.0, 4000.0])
    bandreject_q: float = 2.0
    noise_prob: float = 0.0
    noise_snr: list[float] = field(default_factory=lambda: [5.0, 20.0])

    def validate(self) -> None:
        for name in ("speed_prob", "reverb_prob", "bandreject_prob", "noise_prob"):
            check(0.0 <= getattr(self, name) <= 1.0, f"augment.{name}", "must be in [0, 1]")
        check(len(self.speed_factors) > 0 and all(0.5 <= f <= 2.0 for f in self.speed_factors),
              "augment.speed_factors", "a non-empty list of factors in [0.5, 2]")
        for name, lo in (("reverb_rt60", 0.0), ("bandreject_freq", 0.0)):
            r = getattr(self, name)
            check(len(r) == 2 and lo < r[0] <= r[1], f"augment.{name}",
                  "expected [low, high] with 0 < low <= high")
        check(len(self.noise_snr) == 2 and self.noise_snr[0] <= self.noise_snr[1],
              "augment.noise_snr", "expected [low, high] in dB with low <= high")
        check(self.bandreject_q > 0, "augment.bandreject_q", "must be positive")

    @property
    def enabled(self) -> bool:
        return any(p > 0 for p in (self.speed_prob, self.reverb_prob, self.bandreject_prob,
                                   self.noise_prob))


def room_response(rt60: Tensor, sample_rate: int, generator: torch.Generator) -> Tensor:
    """Synthetic room impulse responses, one per RT60 (B,) seconds: (B, L) with
    L = ceil(max RT60 * sample_rate); unit energy, 1 at t = 0 before normalising."""
    n = max(1, math.ceil(float(rt60.max()) * sample_rate))
    t = torch.arange(n, dtype=torch.float32) / sample_rate
    env = torch.exp(-3.0 * math.log(10.0) * t / rt60.unsqueeze(1))  # -60 dB at t = RT60
    rir = torch.randn(len(rt60), n, generator=generator) * env * (t < rt60.unsqueeze(1))
    rir[:, 0] = 1.0
    return rir / rir.norm(dim=1, keepdim=True)


class Augmenter:
    """``augmenter(x (B, N), lengths (B,)) -> (x', lengths')``: the configured effects on
    float waveforms at ``sample_rate``; padding (beyond ``lengths``) stays zero."""

    def __init__(self, cfg: AugmentConfig, sample_rate: int, generator: torch.Generator) -> None:
        self.cfg, self.sr, self.g = cfg, sample_rate, generator

    def _uniform(self, n: int, lo: float, hi: float) -> Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=self.g)

    def __call__(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        cfg, g = self.cfg, self.g
        bsz, n = x.shape
        x, lengths = x.clone(), lengths.clone()
        # every draw is made whatever the outcome, so the generator advances the same
        coin = torch.rand(4, bsz, generator=g)
        factor_idx = torch.randint(len(cfg.speed_factors), (bsz,), generator=g)
        rt60 = self._uniform(bsz, *cfg.reverb_rt60)
        lo, hi = (math.log(f) for f in cfg.bandreject_freq)
        freq = torch.exp(self._uniform(bsz, lo, hi))
        snr = self._uniform(bsz, *cfg.noise_snr)
        noise = torch.randn(bsz, n, generator=g) if cfg.noise_prob > 0 else None
        rir = room_response(rt60, self.sr, g) if cfg.reverb_prob > 0 else None

        for b in (coin[0] < cfg.speed_prob).nonzero().squeeze(1).tolist():
            f = cfg.speed_factors[int(factor_idx[b])]
            if f == 1.0:
                continue
            y, _ = AF.speed(x[b, : int(lengths[b])], self.sr, f)
            m = min(len(y), n)
            x[b].zero_()
            x[b, :m] = y[:m]
            lengths[b] = m
        rev = (coin[1] < cfg.reverb_prob).nonzero().squeeze(1)
        if rir is not None and len(rev):
            x[rev] = AF.fftconvolve(x[rev], rir[rev])[:, :n]
        nyquist = self.sr / 2
        for b in (coin[2] < cfg.bandreject_prob).nonzero().squeeze(1).tolist():
            f0 = min(float(freq[b]), 0.95 * nyquist)
            x[b] = AF.bandreject_biquad(x[b], self.sr, f0, cfg.bandreject_q)
        noisy = (coin[3] < cfg.noise_prob).nonzero().squeeze(1)
        if noise is not None and len(noisy):
            keep = torch.arange(n) < lengths[noisy].unsqueeze(1)
            x[noisy] = AF.add_noise(x[noisy], noise[noisy] * keep, snr[noisy], lengths[noisy])
        x *= torch.arange(n) < lengths.unsqueeze(1)
        return x, lengths
