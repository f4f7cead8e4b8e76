"""MFCC + delta + delta-delta baseline features, frame-aligned with the CPC encoder.

Frame convention
----------------
The CPC audio encoder turns ``N`` samples at 16 kHz into exactly ``T = N // 160``
frames, frame ``t`` summarising samples ``[160 t, 160 (t + 1))``.  :func:`mfcc_deltas`
follows the same convention so that MFCC frames and CPC frames can share one set of
frame-level labels:

* exactly ``N // 160`` frames (in general ``N // shift`` with ``shift = sample_rate / 100``);
* the 25 ms (400-sample) analysis window of frame ``t`` is centred on the centre of
  ``[160 t, 160 (t + 1))``, i.e. it covers samples ``[160 t - 120, 160 t + 280)``
  whose centre is ``160 t + 79.5``.

Kaldi's default (``snip_edges=True``) instead starts frame ``t`` at sample ``160 t``, so
its centre is at ``160 t + 199.5``: 120 samples (0.75 frame) late, and it yields only
``1 + (N - 400) // 160`` frames.  We therefore call Kaldi's feature extraction with
``snip_edges=False``, which places frame ``t`` as described above (verified on
impulses in ``tests/audio/test_mfcc_probe.py``) and reflects the signal at both ends, and then
drop the extra frame it produces when ``N % 160 >= 80``.
"""

from __future__ import annotations

import numpy as np
import torch
import torchaudio.compliance.kaldi as kaldi
import torchaudio.functional as AF

from cpc_seq.errors import ConfigError, DataError

__all__ = ["mfcc_deltas", "num_frames", "FRAME_LENGTH_MS", "FRAME_SHIFT_MS", "NUM_CEPS"]

FRAME_LENGTH_MS = 25.0
FRAME_SHIFT_MS = 10.0
NUM_CEPS = 13
_INT16_SCALE = 32768.0
_CMVN_EPS = 1e-5


def _frame_geometry(sample_rate: int) -> tuple[int, int]:
    """Window and shift in samples, computed exactly as torchaudio's Kaldi code does."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)):
        raise ConfigError(f"sample_rate must be an integer number of Hz, got {sample_rate!r}")
    if sample_rate <= 0 or sample_rate % 100 != 0:
        raise ConfigError(
            f"sample_rate must be a positive multiple of 100 Hz (10 ms = a whole number of "
            f"samples), got {sample_rate}"
        )
    window = int(sample_rate * FRAME_LENGTH_MS * 0.001)
    shift = int(sample_rate * FRAME_SHIFT_MS * 0.001)
    return window, shift


def num_frames(num_samples: int, sample_rate: int = 16000) -> int:
    """Number of frames :func:`mfcc_deltas` (and the CPC encoder) give: ``N // shift``."""
    _, shift = _frame_geometry(sample_rate)
    return int(num_samples) // shift


#: Peak sample (float input, before the int16 scaling) above which MFCCs are computed in
#: float64: 32768 * peak, squared and summed over a 400-sample frame, must stay below
#: float32's 3.4e38.
_FLOAT64_ABOVE = 1e10


def _as_mono_float(wave: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Return a 1-D float32 tensor on the int16 scale Kaldi expects."""
    if isinstance(wave, np.ndarray):
        if wave.dtype == object or not (
            np.issubdtype(wave.dtype, np.floating) or np.issubdtype(wave.dtype, np.integer)
        ):
            raise DataError(f"waveform must be a numeric array, got dtype {wave.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(wave))
    elif isinstance(wave, torch.Tensor):
        t = wave.detach()
        if t.is_complex() or t.dtype == torch.bool:
            raise DataError(f"waveform must be real-valued, got dtype {t.dtype}")
    else:
        raise DataError(
            f"waveform must be a numpy array or torch tensor, got {type(wave).__name__}"
        )
    if t.dim() == 2 and t.shape[0] == 1:
        t = t[0]
    if t.dim() != 1:
        raise DataError(
            f"waveform must be mono with shape (N,) or (1, N), got shape {tuple(t.shape)}"
        )
    is_float = t.is_floating_point()
    if is_float and not torch.isfinite(t).all():
        raise DataError("waveform contains NaN or infinite samples")
    # Finite float32 samples can reach 3.4e38 (a valid float WAV): scaled to int16 and
    # squared in the power spectrum they overflow float32, so such a waveform is taken
    # in float64 (the MFCCs come back in float32; ordinary audio is unchanged).
    big = is_float and t.numel() > 0 and float(t.detach().abs().max()) > _FLOAT64_ABOVE
    t = t.to(device="cpu", dtype=torch.float64 if big else torch.float32)
    if is_float:
        # Float audio is taken to be in [-1, 1]; Kaldi works on int16 sample values.
        t = t * _INT16_SCALE
    return t.contiguous()


def mfcc_deltas(
    wave: np.ndarray | torch.Tensor, sample_rate: int = 16000, cmvn: bool = True
) -> torch.Tensor:
    """Kaldi-compatible 13 MFCCs + deltas + delta-deltas, one frame per 10 ms.

    Args:
        wave: mono waveform, shape ``(N,)`` or ``(1, N)``.  Floating-point input is taken
            to be in ``[-1, 1]`` and scaled by 32768 (the int16 range Kaldi reads WAV
            files in), so ``cmvn=False`` output matches ``compute-mfcc-feats``; integer
            input (e.g. int16) is used as is.
        sample_rate: in Hz; must be a multiple of 100.  The CPC encoder assumes 16000.
        cmvn: per-utterance mean and variance normalisation of each of the 39 dimensions
            (population std, floored at 1e-5, so a one-frame utterance gives zeros).

    Returns:
        float32 tensor of shape ``(T, 39)`` with ``T = N // 160`` at 16 kHz: columns
        0-12 are MFCCs (C0 kept, ``use_energy=False``, 23 mel bins, Povey window,
        pre-emphasis 0.97, ``dither=0`` so the result is deterministic), 13-25 their
        deltas and 26-38 the delta-deltas (``torchaudio.functional.compute_deltas``,
        5-frame window, edge frames replicated).  Frame ``t`` is centred on the centre
        of samples ``[160 t, 160 (t + 1))``, exactly like frame ``t`` of the CPC encoder;
        see the module docstring.

    Raises:
        DataError: not a mono numeric waveform, non-finite samples, or fewer samples
            than one frame shift (160 at 16 kHz), which gives no frame at all.
            Inputs shorter than the 400-sample window are fine: the signal is reflected
            at its ends as Kaldi does with ``snip_edges=False``.
        ConfigError: a sample rate that is not a positive multiple of 100 Hz.
    """
    window, shift = _frame_geometry(sample_rate)
    x = _as_mono_float(wave)
    n = x.shape[0]
    t_frames = n // shift
    if t_frames == 0:
        raise DataError(
            f"waveform has {n} samples, fewer than one {FRAME_SHIFT_MS:g} ms frame "
            f"({shift} samples at {sample_rate} Hz): no MFCC frame can be computed"
        )

    # Frame t covers [t*shift - pad, t*shift - pad + window) with the signal reflected
    # symmetrically at both ends ([2, 1, 0 | 0, 1, 2]).  torchaudio refuses signals
    # shorter than one window, so for those we do the end reflection ourselves, far
    # enough that every frame we keep only reads samples Kaldi itself would produce.
    if n < window:
        pad = window // 2 - shift // 2
        needed = max(window, (t_frames - 1) * shift - pad + window)
        x = torch.from_numpy(np.pad(x.numpy(), (0, needed - n), mode="symmetric"))

    ceps = kaldi.mfcc(
        x.unsqueeze(0),
        sample_frequency=float(sample_rate),
        frame_length=FRAME_LENGTH_MS,
        frame_shift=FRAME_SHIFT_MS,
        num_ceps=NUM_CEPS,
        dither=0.0,
        use_energy=False,
        snip_edges=False,
    )
    if ceps.shape[0] < t_frames:  # cannot happen given the padding above; be loud if it does
        raise RuntimeError(f"Kaldi MFCC gave {ceps.shape[0]} frames, expected {t_frames}")
    ceps = ceps[:t_frames]

    feats = ceps.t()  # (13, T): compute_deltas wants time last
    d1 = AF.compute_deltas(feats, win_length=5)
    d2 = AF.compute_deltas(d1, win_length=5)
    out = torch.cat([feats, d1, d2], dim=0).t().contiguous()  # (T, 39)

    if cmvn:
        mean = out.mean(dim=0, keepdim=True)
        std = out.std(dim=0, unbiased=False, keepdim=True).clamp_min(_CMVN_EPS)
        out = (out - mean) / std
    return out.to(torch.float32)
