"""Paired samples for ``cpc-seq mi estimate``: ``X`` and ``Y`` from ``npy:`` or ``scp:``.

- ``npy:FILE.npy``: one ``(N, d)`` array (a ``(N,)`` array is ``(N, 1)``); rows paired
  with the other variable's rows.
- ``scp:FEATS.scp`` (Kaldi matrices) or ``npy:DIR`` (one ``<utt>.npy`` per utterance):
  per-utterance ``(T, d)`` features; ``X`` and ``Y`` must list the same utterances with
  the same frame counts, and frame ``t`` of ``X`` pairs with frame ``t + shift`` of ``Y``
  (``shift = k`` pairs ``c_t`` with ``z_{t+k}`` when ``X`` holds the context and ``Y``
  the encoder features of a trained model).

Bad input is one :class:`~cpc_seq.errors.DataError` line naming the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cpc_seq.errors import CpcSeqError, DataError

__all__ = ["load_pair", "read_array_spec"]


def read_array_spec(spec: str) -> np.ndarray | dict[str, np.ndarray]:
    """``npy:FILE`` -> ``(N, d)`` float64; ``scp:F`` / ``npy:DIR`` -> ``{utt: (T, d)}``."""
    if spec.startswith("npy:") and not Path(spec[4:]).is_dir():
        path = Path(spec[4:])
        try:
            a = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: cannot read an .npy array ({e})") from None
        if a.ndim == 1:
            a = a[:, None]
        if a.ndim != 2 or not np.issubdtype(a.dtype, np.number):
            raise DataError(f"{path}: expected a numeric (N, d) array, got {a.dtype} {a.shape}")
        a = a.astype(np.float64)
        if not np.isfinite(a).all():
            raise DataError(f"{path}: contains NaN or infinite values")
        return a
    if spec.startswith(("scp:", "npy:")):
        from cpc_seq.io.features import read_features

        return {k: v.numpy().astype(np.float64) for k, v in read_features(spec).items()}
    raise CpcSeqError(f"{spec}: expected npy:FILE.npy, npy:DIR or scp:FEATS.scp")


def _pair_utterances(xs: dict[str, np.ndarray], ys: dict[str, np.ndarray], sx: str, sy: str,
                     shift: int) -> tuple[np.ndarray, np.ndarray]:
    missing = sorted(set(xs) ^ set(ys))
    if missing:
        where = sx if missing[0] in xs else sy
        raise DataError(f"{where}: utterance {missing[0]!r} is not in both inputs "
                        f"({len(missing)} unpaired)")
    px, py = [], []
    for utt in sorted(xs):
        a, b = xs[utt], ys[utt]
        if a.shape[0] != b.shape[0]:
            raise DataError(f"{sy}: utterance {utt!r} has {b.shape[0]} frames, {sx} has "
                            f"{a.shape[0]}")
        if a.shape[0] > shift:
            px.append(a[: a.shape[0] - shift])
            py.append(b[shift:])
    if not px:
        raise DataError(f"{sx}: no utterance is longer than the shift ({shift} frames)")
    dims = {p.shape[1] for p in px}, {p.shape[1] for p in py}
    for d, s in zip(dims, (sx, sy)):
        if len(d) > 1:
            raise DataError(f"{s}: utterances differ in feature dimension ({sorted(d)})")
    return np.concatenate(px), np.concatenate(py)


def load_pair(spec_x: str, spec_y: str, shift: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Paired ``x (N, d_x)``, ``y (N, d_y)`` float64 from two specifiers (module doc)."""
    if shift < 0:
        raise CpcSeqError(f"--shift must be >= 0, got {shift}")
    a, b = read_array_spec(spec_x), read_array_spec(spec_y)
    if isinstance(a, dict) != isinstance(b, dict):
        raise CpcSeqError(f"{spec_x} and {spec_y}: pair two arrays or two feature sets, "
                          "not one of each")
    if isinstance(a, dict) and isinstance(b, dict):
        x, y = _pair_utterances(a, b, spec_x, spec_y, shift)
    else:
        assert isinstance(a, np.ndarray) and isinstance(b, np.ndarray)
        if a.shape[0] != b.shape[0]:
            raise DataError(f"{spec_y}: {b.shape[0]} rows, {spec_x} has {a.shape[0]}: "
                            "the samples must be paired row by row")
        x, y = a[: a.shape[0] - shift], b[shift:]
    if x.shape[0] < 10:
        raise DataError(f"{spec_x}: only {x.shape[0]} pairs; an MI estimate needs at least 10")
    return x, y
