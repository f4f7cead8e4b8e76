"""ABX phone discriminability (ZeroSpeech 2017 / Libri-light style), in PyTorch and NumPy.

An ABX *triplet* is three phone tokens ``(A, B, X)`` where ``A`` and ``X`` carry the same
central phone, ``B`` a different one, and all three share the same context (previous
and next phone).  The triplet is an *error* when ``X`` is closer to ``B`` than to ``A``:

    score(A, B, X) = 1    if d(A, X) >  d(B, X)
                     0.5  if d(A, X) == d(B, X)
                     0    otherwise

``d`` is the DTW distance between the two tokens' frame sequences: the accumulated
frame distance along the cheapest monotonic alignment path, divided by that path's
length (see :func:`dtw_batch`).

Two tasks:

* ``within`` speaker: ``A``, ``B`` and ``X`` come from one speaker; ``A`` and ``X`` are
  different tokens.
* ``across`` speakers: ``A`` and ``B`` come from one speaker, ``X`` from another.

The scores are averaged hierarchically (see :func:`abx_error`), so that frequent
contexts, speakers or phones do not dominate the result.  Two orders are available for
the across task (they agree for the within task): ``average="librilight"`` (default;
Libri-light's ``eval_ABX.py``) and ``average="zerospeech2017"`` (the ZeroSpeech 2017
evaluation).

The item file (:func:`read_item_file`) lists one phone token per line with its
file id, onset/offset in seconds, the phone, its neighbours and the speaker.  Frames
are taken from per-file feature matrices of shape ``(T, D)`` at a fixed frame rate
(:func:`frame_range`, :func:`item_frames`): a token takes the frames whose *centre*
lies in ``[onset, offset)``, so a frame centred exactly on the onset is in and one
centred exactly on the offset is out.  (ABXpy keeps both edge frames; Libri-light's
slicing ends one frame earlier, keeping centres up to ``offset - 1 / frame_rate``.)
Item files whose onsets and offsets are frame boundaries (multiples of 10 ms at
100 Hz, as :mod:`cpc_seq.audio.data.items` writes them) select the same frames under every
rule except Libri-light's.

Averaging (:func:`abx_error`)
-----------------------------

A *cell* is ``(c, s, a, b)`` within speakers and ``(c, s, x, a, b)`` across (``c`` the
context, ``s`` the A/B speaker, ``x`` the X speaker, ``(a, b)`` the ordered phone pair).
First each cell: the mean over all its triplets.  Then:

* within (both orders): mean over contexts ``c`` -> one score per ``(s, a, b)``;
  mean over speakers ``s`` -> one score per ordered phone pair ``(a, b)``.
* across, ``average="librilight"`` (Libri-light's ``eval_ABX.py``, the default):
  mean over contexts and ``X`` speakers together, i.e. over the ``(c, x)`` cells
  -> one score per ``(s, a, b)``; then mean over the A/B speakers ``s`` -> one
  score per ``(a, b)``.
* across, ``average="zerospeech2017"`` (the ZeroSpeech 2017 evaluation): mean over
  contexts -> one score per speaker pair and phone pair ``(s, x, a, b)``; then
  mean over all speaker pairs ``(s, x)`` together -> one score per ``(a, b)``.

Finally the mean over phone pairs -> ``error``.  Every mean is unweighted over the
non-empty entries below it.  The two across orders agree when every A/B speaker
has the same number of ``X`` speakers and every ``(s, x)`` pair the same number of
contexts; otherwise they differ (Libri-light weights an ``(s, x)`` pair by its
number of contexts, ZeroSpeech 2017 weights an A/B speaker by its number of ``X``
speakers).

Subsampling
-----------

As Libri-light does for speed (``None`` = use everything, as
ZeroSpeech 2017 does): ``max_items_per_context`` caps the tokens of each
``(context, speaker, phone)`` group (Libri-light's ``max_size_group``, default 10),
and ``max_x_speakers`` caps the ``X`` speakers drawn for each
``(context, speaker s, phone a)`` in the across task (Libri-light's
``max_x_across``, default 5).  Draws are random with ``seed`` and deterministic.

Public API:

* :class:`ItemRow`, :func:`read_item_file`
* :func:`frame_distance` (``cosine``, ``angular``, ``euclidean``)
* :func:`dtw_batch`, :func:`dtw_distance_batch`, :func:`dtw_distance`
* :func:`frame_range`, :func:`item_frames`
* :func:`abx_error`, :func:`abx_from_npy_dir`
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cpc_seq.errors import ConfigError, DataError, where

__all__ = [
    "AVERAGES",
    "DISTANCES",
    "ItemRow",
    "read_item_file",
    "frame_distance",
    "dtw_batch",
    "dtw_distance_batch",
    "dtw_distance",
    "frame_range",
    "item_frames",
    "abx_error",
    "abx_from_npy_dir",
]

#: Frame distances understood by :func:`frame_distance` and :func:`abx_error`.
DISTANCES = ("cosine", "angular", "euclidean")

_MODES = ("within", "across")
#: Averaging orders of the across task understood by :func:`abx_error`.
AVERAGES = ("librilight", "zerospeech2017")
_NORM_EPS = 1e-8
# Slack (in frames) when turning times into frame indices, so that 0.105 s at 100 Hz
# with a 5 ms centre offset lands exactly on frame 10 despite float rounding.
_FRAME_EPS = 1e-6


# --------------------------------------------------------------------------- items


@dataclass(frozen=True)
class ItemRow:
    """One phone token of a ZeroSpeech ``.item`` file.

    ``onset``/``offset`` are in seconds.  ``source``/``line`` locate the row in its
    item file (1-based line) for error messages; they are ``None`` for rows built in code.
    """

    file: str
    onset: float
    offset: float
    phone: str
    prev_phone: str
    next_phone: str
    speaker: str
    source: str | None = None
    line: int | None = None

    @property
    def context(self) -> tuple[str, str]:
        """``(prev_phone, next_phone)``: the context that the three tokens of a triplet share."""
        return (self.prev_phone, self.next_phone)

    def location(self) -> str:
        """``path:line`` of this row, or a description when it was not read from a file."""
        if self.source is None:
            return f"item {self.file} {self.onset} {self.offset} {self.phone}"
        return where(self.source, self.line)


def read_item_file(path: str | Path) -> list[ItemRow]:
    """Read a ZeroSpeech ``.item`` file.

    Format: an optional header line starting with ``#`` (normally
    ``#file onset offset #phone prev-phone next-phone speaker``), then one token per
    line with seven whitespace-separated fields::

        file onset offset phone prev-phone next-phone speaker

    with ``onset``/``offset`` in seconds and ``0 <= onset < offset``.  Blank lines are
    ignored.

    Raises:
        DataError: the file is missing or unreadable, a line is malformed (message
            ``path:line: ...``), or the file lists no items.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read item file: {exc}") from exc
    rows: list[ItemRow] = []
    seen_content = False
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        loc = where(path, lineno)
        if line.startswith("#"):
            if seen_content:
                raise DataError(f"{loc}: unexpected '#' line; only the first line may be a header")
            seen_content = True
            continue
        seen_content = True
        fields = line.split()
        if len(fields) != 7:
            raise DataError(
                f"{loc}: expected 7 fields 'file onset offset phone prev-phone next-phone "
                f"speaker', got {len(fields)}: {line!r}"
            )
        file, onset_s, offset_s, phone, prev_phone, next_phone, speaker = fields
        try:
            onset = float(onset_s)
            offset = float(offset_s)
        except ValueError:
            raise DataError(
                f"{loc}: onset/offset must be numbers (seconds), got {onset_s!r} {offset_s!r}"
            ) from None
        if not (math.isfinite(onset) and math.isfinite(offset)):
            raise DataError(f"{loc}: onset/offset must be finite, got {onset_s!r} {offset_s!r}")
        if onset < 0 or offset <= onset:
            raise DataError(f"{loc}: need 0 <= onset < offset, got onset={onset} offset={offset}")
        rows.append(
            ItemRow(file, onset, offset, phone, prev_phone, next_phone, speaker, str(path), lineno)
        )
    if not rows:
        raise DataError(f"{path}: item file lists no items")
    return rows


# ----------------------------------------------------------------------- distances


def frame_distance(a: Any, b: Any, kind: str = "cosine") -> torch.Tensor:
    """Pairwise frame distances.

    Args:
        a: ``(Ta, D)`` or batched ``(B, Ta, D)`` frames (tensor or array).
        b: ``(Tb, D)`` or batched ``(B, Tb, D)`` frames.
        kind: ``"cosine"``: ``1 - cos(a, b)``, in ``[0, 2]``;
            ``"angular"``: ``arccos(cos(a, b)) / pi``, in ``[0, 1]`` (this is what
            ZeroSpeech's ABXpy and Libri-light call "cosine");
            ``"euclidean"``: ``||a - b||_2``.
            Zero frames are treated as having cosine 0 with everything.

    Returns:
        ``(Ta, Tb)`` (or ``(B, Ta, Tb)``) distances, floating point.
    """
    if kind not in DISTANCES:
        raise ConfigError(f"unknown frame distance {kind!r}; expected one of {DISTANCES}")
    a = _as_float(a)
    b = _as_float(b)
    if a.ndim != b.ndim or a.ndim not in (2, 3) or a.shape[-1] != b.shape[-1]:
        raise ValueError(f"frame_distance needs (Ta, D)/(Tb, D) or (B, T, D) pairs, got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    if a.ndim == 3 and a.shape[0] != b.shape[0]:
        raise ValueError(f"batch sizes differ: {a.shape[0]} and {b.shape[0]}")
    dtype = torch.promote_types(a.dtype, b.dtype)
    a, b = a.to(dtype), b.to(dtype)
    if kind == "euclidean":
        return _euclidean(a, b)
    return _cos_to_distance(_normalise(a) @ _normalise(b).transpose(-1, -2), kind)


def _as_float(x: Any) -> torch.Tensor:
    t = torch.as_tensor(x)
    if not torch.is_floating_point(t) or t.dtype in (torch.float16, torch.bfloat16):
        t = t.to(torch.float32)
    return t


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(_NORM_EPS)


def _cos_to_distance(cos: torch.Tensor, kind: str) -> torch.Tensor:
    cos = cos.clamp(-1.0, 1.0)
    if kind == "cosine":
        return 1.0 - cos
    return torch.acos(cos) / math.pi


def _euclidean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # The direct formula (not ||a||^2 + ||b||^2 - 2ab) so that equal distances stay equal.
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")


# ----------------------------------------------------------------------------- DTW


def dtw_batch(
    cost: torch.Tensor,
    len_a: torch.Tensor | Sequence[int] | None = None,
    len_b: torch.Tensor | Sequence[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched DTW: accumulated cost and length of the cheapest alignment path.

    Recursion (0-based, steps ``(1, 0)``, ``(0, 1)``, ``(1, 1)``; path from ``(0, 0)``
    to ``(la - 1, lb - 1)``)::

        acc[i, j] = cost[i, j] + min(acc[i-1, j-1], acc[i, j-1], acc[i-1, j])

    On equal accumulated costs the predecessor is chosen in the order diagonal, then
    ``(i, j-1)``, then ``(i-1, j)``; the path length (number of cells on the path) is the
    length of the path so chosen.  This matches the backtracking of Libri-light's ABX.

    Computed along anti-diagonals (cells with equal ``i + j`` are independent, and the
    cost is first skewed so that each anti-diagonal is contiguous), so the Python loop has
    ``Ta + Tb - 1`` vectorised steps whatever the batch size.  Padding beyond
    ``len_a``/``len_b`` cannot influence the result (cells only depend on cells with
    smaller indices), so the padding may hold any value.

    Args:
        cost: ``(B, Ta, Tb)`` frame distances.
        len_a: ``(B,)`` valid rows per item (default ``Ta``), each ``>= 1``.
        len_b: ``(B,)`` valid columns per item (default ``Tb``), each ``>= 1``.

    Returns:
        ``(total, length)``: ``(B,)`` accumulated cost (cost dtype) and ``(B,)`` path
        length (int64, between ``max(la, lb)`` and ``la + lb - 1``).
    """
    if cost.ndim != 3:
        raise ValueError(f"dtw_batch needs a (B, Ta, Tb) cost, got {tuple(cost.shape)}")
    n_batch, ta, tb = cost.shape
    if ta == 0 or tb == 0:
        raise ValueError(f"DTW of an empty sequence: cost shape {tuple(cost.shape)}")
    device = cost.device
    la = _lengths(len_a, n_batch, ta, device)
    lb = _lengths(len_b, n_batch, tb, device)
    if not torch.is_floating_point(cost):
        cost = cost.to(torch.float32)
    n_diag = ta + tb - 1
    # Skewed cost: skew[k, b, i] = cost[b, i, k - i], inf where k - i is outside [0, Tb).
    k_minus_i = (
        torch.arange(n_diag, device=device)[None, :] - torch.arange(ta, device=device)[:, None]
    )
    j_index = torch.where((k_minus_i >= 0) & (k_minus_i < tb), k_minus_i, tb)
    cost_pad = torch.cat([cost, cost.new_full((n_batch, ta, 1), math.inf)], dim=2)
    skew = cost_pad.gather(2, j_index.expand(n_batch, ta, n_diag)).permute(2, 0, 1).contiguous()
    return _dtw_skewed(skew, la, lb)


def _dtw_skewed(
    skew: torch.Tensor, la: torch.Tensor, lb: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """DTW on a skewed cost ``skew[k, b, i] = cost[b, i, k - i]`` of shape ``(K, B, Ta)``.

    ``skew`` must be ``inf`` where ``k - i < 0``; entries with ``k - i >= lb[b]`` or
    ``i >= la[b]`` are never used.  Returns ``(total, length)`` as :func:`dtw_batch`.
    """
    n_diag, n_batch, ta = skew.shape
    device = skew.device
    # acc[k + 2, b, i + 1] = accumulated cost of cell (i, k - i); column 0 and the two
    # leading diagonals are the border (0 only before cell (0, 0)).
    acc = torch.full((n_diag + 2, n_batch, ta + 1), math.inf, dtype=skew.dtype, device=device)
    acc[0, :, 0] = 0.0
    plen = torch.zeros((n_diag + 2, n_batch, ta + 1), dtype=torch.int32, device=device)
    for k in range(n_diag):
        prev1, prev2 = acc[k + 1], acc[k]
        best = prev2[:, :-1]  # diagonal predecessor (i - 1, j - 1)
        blen = plen[k][:, :-1]
        left = prev1[:, 1:]  # (i, j - 1)
        take = left < best
        best = torch.where(take, left, best)
        blen = torch.where(take, plen[k + 1][:, 1:], blen)
        up = prev1[:, :-1]  # (i - 1, j)
        take = up < best
        best = torch.where(take, up, best)
        blen = torch.where(take, plen[k + 1][:, :-1], blen)
        torch.add(best, skew[k], out=acc[k + 2, :, 1:])
        torch.add(blen, 1, out=plen[k + 2, :, 1:])
    batch = torch.arange(n_batch, device=device)
    return acc[la + lb, batch, la], plen[la + lb, batch, la].to(torch.int64)


def _lengths(
    lengths: torch.Tensor | Sequence[int] | None, n_batch: int, full: int, device: torch.device
) -> torch.Tensor:
    if lengths is None:
        return torch.full((n_batch,), full, dtype=torch.int64, device=device)
    out = torch.as_tensor(lengths, dtype=torch.int64, device=device).reshape(-1)
    if out.numel() != n_batch:
        raise ValueError(f"expected {n_batch} lengths, got {out.numel()}")
    if n_batch and (int(out.min()) < 1 or int(out.max()) > full):
        raise ValueError(f"lengths must lie in [1, {full}], got values from "
                         f"{int(out.min())} to {int(out.max())}")
    return out


def dtw_distance_batch(
    cost: torch.Tensor,
    len_a: torch.Tensor | Sequence[int] | None = None,
    len_b: torch.Tensor | Sequence[int] | None = None,
) -> torch.Tensor:
    """``(B, Ta, Tb)`` costs -> ``(B,)`` DTW distances: path cost / path length.

    See :func:`dtw_batch` for the recursion, the tie convention and ``len_a``/``len_b``.
    """
    total, length = dtw_batch(cost, len_a, len_b)
    return total / length.to(total.dtype)


def dtw_distance(cost: Any) -> float:
    """DTW distance of one ``(Ta, Tb)`` cost matrix: average cost along the best path.

    The path minimises the *accumulated* cost; the result is that cost divided by the
    number of cells on the path (the ZeroSpeech/Libri-light normalisation).
    """
    cost = _as_float(cost)
    if cost.ndim != 2:
        raise ValueError(f"dtw_distance needs a (Ta, Tb) cost matrix, got {tuple(cost.shape)}")
    return float(dtw_distance_batch(cost.unsqueeze(0))[0])


# ------------------------------------------------------------------ frame slicing


def frame_range(
    onset: float,
    offset: float,
    n_frames: int,
    frame_rate: float = 100.0,
    frame_offset: float | None = None,
) -> tuple[int, int]:
    """Frames ``[start, end)`` whose centre lies in ``[onset, offset)``.

    Frame ``k`` is centred at ``frame_offset + k / frame_rate`` seconds; the default
    ``frame_offset`` is half a frame (``0.5 / frame_rate``: frame ``k`` covers
    ``[k, k + 1) / frame_rate``).  An edge exactly on a frame centre: the frame centred
    on ``onset`` is taken, the frame centred on ``offset`` is not (at 100 Hz,
    ``[0.025, 0.045]`` takes frames 2 and 3).  Times within 1e-6 frames of a centre
    count as on it, so decimal times such as 0.105 s are not split by float rounding.
    The range is clipped to ``[0, n_frames]`` and may be empty (``start == end``).
    """
    if frame_offset is None:
        frame_offset = 0.5 / frame_rate
    start = math.ceil((onset - frame_offset) * frame_rate - _FRAME_EPS)
    end = math.ceil((offset - frame_offset) * frame_rate - _FRAME_EPS)
    start = min(max(start, 0), n_frames)
    end = min(max(end, start), n_frames)
    return start, end


def item_frames(
    features: Mapping[str, Any],
    items: Sequence[ItemRow],
    frame_rate: float = 100.0,
    frame_offset: float | None = None,
) -> list[torch.Tensor]:
    """Slice each item's frames out of its file's ``(T, D)`` features.

    Args:
        features: file id -> ``(T, D)`` tensor or array.
        items: the tokens; ``item.file`` must be a key of ``features``.
        frame_rate: frames per second.
        frame_offset: centre of frame 0 in seconds (default half a frame); see
            :func:`frame_range`.

    Returns:
        One ``(n_i, D)`` tensor (a view) per item; ``n_i`` may be 0 when no frame centre
        falls in ``[onset, offset)`` or the item lies beyond the end of the features.

    Raises:
        DataError: a file id has no features (naming the item's ``path:line``), or a
            feature matrix is not 2-D.
    """
    _check_rate(frame_rate)
    tensors = _feature_tensors(features, items)
    out = []
    for item in items:
        feats = tensors[item.file]
        start, end = frame_range(item.onset, item.offset, feats.shape[0], frame_rate, frame_offset)
        out.append(feats[start:end])
    return out


def _check_rate(frame_rate: float) -> None:
    if not (isinstance(frame_rate, (int, float)) and math.isfinite(frame_rate) and frame_rate > 0):
        raise ConfigError(f"frame_rate must be a positive number of frames per second, "
                          f"got {frame_rate!r}")


def _feature_tensors(
    features: Mapping[str, Any], items: Sequence[ItemRow]
) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    dim: int | None = None
    dim_file = ""
    for item in items:
        if item.file in tensors:
            continue
        if item.file not in features:
            raise DataError(f"{item.location()}: no features for file {item.file!r}")
        feats = torch.as_tensor(features[item.file])
        if feats.ndim != 2:
            raise DataError(f"features of file {item.file!r} must be (T, D), got shape "
                            f"{tuple(feats.shape)} (first used at {item.location()})")
        if dim is None:
            dim, dim_file = feats.shape[1], item.file
        elif feats.shape[1] != dim:
            raise DataError(f"features of file {item.file!r} have dimension {feats.shape[1]} but "
                            f"those of {dim_file!r} have {dim} (at {item.location()})")
        if feats.is_floating_point() or feats.is_complex():
            bad_rows = (~torch.isfinite(feats)).any(dim=1)
            if bool(bad_rows.any()):
                raise DataError(f"features of file {item.file!r} are not finite (NaN or inf in "
                                f"{int(bad_rows.sum())} of {feats.shape[0]} frames, first used "
                                f"at {item.location()}): ABX cannot score them")
        tensors[item.file] = feats
    return tensors


# ----------------------------------------------------------------------------- ABX


def abx_error(
    features: Mapping[str, Any],
    items: Sequence[ItemRow],
    mode: str = "within",
    distance: str = "cosine",
    average: str = "librilight",
    max_items_per_context: int | None = 10,
    max_x_speakers: int | None = 5,
    seed: int = 0,
    frame_rate: float = 100.0,
    frame_offset: float | None = None,
    device: str | torch.device | None = None,
    batch_elements: int = 1 << 22,
) -> dict[str, Any]:
    """ABX error rate of ``features`` on the phone tokens ``items`` (triplets and scores
    as the module docstring defines them).

    * ``mode="within"``: ``A``, ``B``, ``X`` all from speaker ``s``, and ``X != A``.
      Cell = ``(c, s, a, b)``.
    * ``mode="across"``: ``A`` and ``B`` from speaker ``s``, ``X`` from a speaker
      ``x != s``.  Cell = ``(c, s, x, a, b)``.

    ``d`` is the path-length-normalised DTW distance over ``distance`` frame distances
    (:func:`frame_distance`, :func:`dtw_batch`); ``(a, b)`` is ordered.

    Averaging and subsampling: see the module docstring, sections *Averaging* and
    *Subsampling*.

    ZeroSpeech's and Libri-light's "cosine" is ``distance="angular"`` here.

    Args:
        features: file id -> ``(T, D)`` frame features (tensor or array).
        items: phone tokens, e.g. from :func:`read_item_file`.
        mode: ``"within"`` or ``"across"``.
        distance: frame distance, one of :data:`DISTANCES`.
        average: across-task averaging order, one of :data:`AVERAGES`.
        max_items_per_context, max_x_speakers, seed: the subsampling (``None``: none).
        frame_rate: feature frames per second.
        frame_offset: centre of frame 0 in seconds (default half a frame).
        device: where to compute the distances (default: CPU).
        batch_elements: rough cap on the size of the tensors of one DTW batch.

    Returns:
        A dict with ``error`` (fraction in ``[0, 1]``; published tables give percent),
        ``mode``, ``distance``, ``average``, ``n_triplets``, ``n_cells`` (non-empty
        cells), ``n_phone_pairs``, ``n_items`` (tokens with at least one frame),
        ``n_items_empty`` (tokens without a frame, skipped) and ``by_phone_pair``
        (``{a: {b: error}}``, the per-phone-pair scores before the last mean).

    Raises:
        DataError: missing/malformed features, or no triplet at all (e.g. a single
            speaker in the across task).
        ConfigError: unknown ``mode``/``distance``/``average`` or a bad numeric option.
    """
    _check_abx_options(mode, distance, average, max_items_per_context, max_x_speakers,
                       frame_rate)
    if not items:
        raise DataError("ABX: no items")
    dev = torch.device(device) if device is not None else torch.device("cpu")

    segments = item_frames(features, items, frame_rate, frame_offset)
    keep = [k for k, seg in enumerate(segments) if seg.shape[0] > 0]
    n_empty = len(items) - len(keep)
    if not keep:
        raise DataError("ABX: no item has a frame; check frame_rate and the item onsets/offsets")

    rng = np.random.default_rng(seed)
    ph_of, ph_ids, board = _group_tokens([items[k] for k in keep], max_items_per_context, rng)
    blocks = _plan_blocks(board, mode, max_x_speakers, rng)
    if not blocks:
        raise DataError(_no_triplets_message(mode))

    dists = _block_distances(
        [segments[k] for k in keep], [(r, cl) for _, r, cl in blocks], distance, dev,
        batch_elements,
    )
    level1, n_triplets, n_cells = _score_blocks(blocks, dists, np.asarray(ph_of), mode)
    if not level1:
        raise DataError(_no_triplets_message(mode))
    pair_scores = _pair_scores(level1, average)
    error = float(np.mean(list(pair_scores.values())))
    return {
        "error": error,
        "mode": mode,
        "distance": distance,
        "average": average,
        "n_triplets": int(n_triplets),
        "n_cells": int(n_cells),
        "n_phone_pairs": len(pair_scores),
        "n_items": len(keep),
        "n_items_empty": int(n_empty),
        "by_phone_pair": _by_phone_pair(pair_scores, ph_ids),
    }


#: One block of needed DTW distances: a key ``(c, s)`` (within) or ``(c, s, x)`` (across),
#: then ``(n_rows,)`` and ``(n_cols,)`` token indices (into the kept tokens).
_Block = tuple[Any, np.ndarray, np.ndarray]
#: context -> speaker -> phone -> ``(n,)`` token indices (into the kept tokens), sorted.
_Board = dict[int, dict[int, dict[int, np.ndarray]]]
#: ``(s, x, a, b)`` -> the cell scores of its contexts (``x = -1`` in the within task).
_Level1 = dict[tuple[int, int, int, int], list[float]]


def _check_abx_options(
    mode: str,
    distance: str,
    average: str,
    max_items_per_context: int | None,
    max_x_speakers: int | None,
    frame_rate: float,
) -> None:
    """Raise :class:`ConfigError` on an unknown name or a bad numeric option of :func:`abx_error`."""
    if mode not in _MODES:
        raise ConfigError(f"unknown ABX mode {mode!r}; expected one of {_MODES}")
    if average not in AVERAGES:
        raise ConfigError(f"unknown ABX average {average!r}; expected one of {AVERAGES}")
    if distance not in DISTANCES:
        raise ConfigError(f"unknown ABX distance {distance!r}; expected one of {DISTANCES}")
    for name, value in (("max_items_per_context", max_items_per_context),
                        ("max_x_speakers", max_x_speakers)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1
        ):
            raise ConfigError(f"{name} must be a positive integer or None, got {value!r}")
    _check_rate(frame_rate)


def _group_tokens(
    kept: Sequence[ItemRow], max_items_per_context: int | None, rng: np.random.Generator
) -> tuple[list[int], dict[str, int], _Board]:
    """Code the ``n`` kept tokens and group them by (context, speaker, phone).

    Returns ``(ph_of, ph_ids, board)``: ``ph_of`` the phone code of each token (length
    ``n``), ``ph_ids`` phone -> code, and ``board[c][s][p]`` the ``(m,)`` token indices
    of each group, at most ``max_items_per_context`` of them (drawn with ``rng``, groups
    in sorted order).
    """
    ctx_of, spk_of, ph_of = [], [], []
    ctx_ids: dict[tuple[str, str], int] = {}
    spk_ids: dict[str, int] = {}
    ph_ids: dict[str, int] = {}
    for item in kept:
        ctx_of.append(ctx_ids.setdefault(item.context, len(ctx_ids)))
        spk_of.append(spk_ids.setdefault(item.speaker, len(spk_ids)))
        ph_of.append(ph_ids.setdefault(item.phone, len(ph_ids)))
    groups: dict[tuple[int, int, int], list[int]] = defaultdict(list)
    for u in range(len(kept)):
        groups[(ctx_of[u], spk_of[u], ph_of[u])].append(u)
    board: _Board = defaultdict(lambda: defaultdict(dict))
    for key in sorted(groups):
        members = np.asarray(groups[key], dtype=np.int64)
        if max_items_per_context is not None and len(members) > max_items_per_context:
            members = np.sort(rng.choice(members, size=int(max_items_per_context), replace=False))
        c, s, p = key
        board[c][s][p] = members
    return ph_of, ph_ids, board


def _plan_blocks(
    board: _Board, mode: str, max_x_speakers: int | None, rng: np.random.Generator
) -> list[_Block]:
    """The rows x cols token blocks whose DTW distances the task needs, in a fixed order.

    Within: one block per ``(c, s)``: rows all the speaker's tokens in the context, cols
    those of phones with at least two tokens (they are ``A`` and ``X``).  Across: per
    ``(c, s)`` one block per ``X`` speaker ``x``: rows the tokens of ``s``, cols the
    tokens of ``x`` of the phones drawn for it (``X`` speakers drawn with ``rng``).
    """
    blocks: list[_Block] = []
    for c in sorted(board):
        by_spk = board[c]
        for s in sorted(by_spk):
            phones = by_spk[s]
            if len(phones) < 2:
                continue
            if mode == "within":
                blocks.extend(_within_blocks(c, s, phones))
            else:
                blocks.extend(_across_blocks(c, s, by_spk, max_x_speakers, rng))
    return blocks


def _within_blocks(c: int, s: int, phones: dict[int, np.ndarray]) -> list[_Block]:
    """The within-speaker block of context ``c`` and speaker ``s`` (none if no ``X`` phone)."""
    x_phones = [p for p in sorted(phones) if len(phones[p]) >= 2]
    if not x_phones:
        return []
    rows = np.concatenate([phones[p] for p in sorted(phones)])
    cols = np.concatenate([phones[p] for p in x_phones])
    return [((c, s), rows, cols)]


def _across_blocks(
    c: int,
    s: int,
    by_spk: dict[int, dict[int, np.ndarray]],
    max_x_speakers: int | None,
    rng: np.random.Generator,
) -> list[_Block]:
    """The across-speaker blocks of context ``c`` and A/B speaker ``s``, one per ``X`` speaker."""
    phones = by_spk[s]
    cols_by_x: dict[int, list[int]] = defaultdict(list)
    for a in sorted(phones):
        cand = [x for x in sorted(by_spk) if x != s and a in by_spk[x]]
        if max_x_speakers is not None and len(cand) > max_x_speakers:
            drawn = rng.choice(cand, size=int(max_x_speakers), replace=False)
            cand = sorted(drawn.tolist())
        for x in cand:
            cols_by_x[x].append(a)
    rows = np.concatenate([phones[p] for p in sorted(phones)])
    blocks: list[_Block] = []
    for x in sorted(cols_by_x):
        cols = np.concatenate([by_spk[x][a] for a in cols_by_x[x]])
        blocks.append(((c, s, x), rows, cols))
    return blocks


def _score_blocks(
    blocks: Sequence[_Block], dists: np.ndarray, ph_arr: np.ndarray, mode: str
) -> tuple[_Level1, int, int]:
    """Score every cell of every block.

    ``dists`` holds each block's ``n_rows * n_cols`` distances, row-major, blocks
    concatenated (as :func:`_block_distances` returns them); ``ph_arr`` is the ``(n,)``
    phone code of each kept token.  Returns ``(level1, n_triplets, n_cells)``.
    """
    level1: _Level1 = defaultdict(list)
    n_triplets = 0
    n_cells = 0
    start = 0
    within = mode == "within"
    for key, rows, cols in blocks:
        size = len(rows) * len(cols)
        block = dists[start:start + size].reshape(len(rows), len(cols))
        start += size
        if within:
            _c, s = key
            x = -1
        else:
            _c, s, x = key
        for a, b, total, count in _score_cells(block, ph_arr[rows], ph_arr[cols], within):
            level1[(s, x, a, b)].append(total / count)
            n_triplets += count
            n_cells += 1
    return level1, n_triplets, n_cells


def _score_cells(
    block: np.ndarray, row_ph: np.ndarray, col_ph: np.ndarray, exclude_diagonal: bool
) -> list[tuple[int, int, float, int]]:
    """``(a, b, score sum, triplet count)`` of each phone pair of one ``(n_rows, n_cols)`` block.

    ``row_ph``/``col_ph``: ``(n_rows,)``/``(n_cols,)`` phone codes.  Within the task
    (``exclude_diagonal``) the ``a`` columns are the same tokens as the ``a`` rows, in
    the same order.
    """
    out = []
    for a in np.unique(col_ph):
        a_rows = np.flatnonzero(row_ph == a)
        x_cols = np.flatnonzero(col_ph == a)
        d_ax = block[np.ix_(a_rows, x_cols)]
        for b in np.unique(row_ph):
            if b == a:
                continue
            d_bx = block[np.ix_(np.flatnonzero(row_ph == b), x_cols)]
            total, count = _score(d_ax, d_bx, exclude_diagonal=exclude_diagonal)
            out.append((int(a), int(b), total, count))
    return out


def _pair_scores(level1: _Level1, average: str) -> dict[tuple[int, int], float]:
    """Average the cell scores down to one score per ordered phone pair ``(a, b)``."""
    by_pair: dict[tuple[int, int], list[float]] = defaultdict(list)
    if average == "zerospeech2017":
        # mean over contexts per (s, x, a, b), then over all speaker pairs (s, x)
        for (_s, _x, a, b), vals in level1.items():
            by_pair[(a, b)].append(float(np.mean(vals)))
    else:
        # mean over (context, x) cells per (s, a, b), then over A/B speakers s
        by_speaker: dict[tuple[int, int, int], list[float]] = defaultdict(list)
        for (s, _x, a, b), vals in level1.items():
            by_speaker[(s, a, b)].extend(vals)
        for (_s, a, b), vals in by_speaker.items():
            by_pair[(a, b)].append(float(np.mean(vals)))
    return {ab: float(np.mean(vals)) for ab, vals in by_pair.items()}


def _by_phone_pair(
    pair_scores: Mapping[tuple[int, int], float], ph_ids: Mapping[str, int]
) -> dict[str, dict[str, float]]:
    """``{a: {b: error}}`` by phone name, sorted by ``(a, b)``."""
    ph_names = {v: k for k, v in ph_ids.items()}
    by_phone_pair: dict[str, dict[str, float]] = {}
    for (a, b) in sorted(pair_scores, key=lambda ab: (ph_names[ab[0]], ph_names[ab[1]])):
        by_phone_pair.setdefault(ph_names[a], {})[ph_names[b]] = pair_scores[(a, b)]
    return by_phone_pair


def _no_triplets_message(mode: str) -> str:
    if mode == "within":
        need = ("a context and speaker with two tokens of one phone and a token of another "
                "phone")
    else:
        need = ("a context where one speaker has tokens of two phones and another speaker a "
                "token of one of them")
    return f"ABX ({mode}): no triplets; the items need {need}"


def _score(d_ax: np.ndarray, d_bx: np.ndarray, exclude_diagonal: bool) -> tuple[float, int]:
    """Sum of triplet scores and triplet count of one cell.

    ``d_ax``: ``(nA, nX)`` distances d(A, X); ``d_bx``: ``(nB, nX)`` distances d(B, X).
    With ``exclude_diagonal`` (within task) A and X range over the same tokens and the
    ``A == X`` triplets (the diagonal of ``d_ax``) are left out.
    """
    diff = d_ax[:, None, :] - d_bx[None, :, :]  # (nA, nB, nX)
    scores = (diff > 0).astype(np.float64) + 0.5 * (diff == 0)
    n_a, n_b, n_x = scores.shape
    if exclude_diagonal:
        diag = np.arange(n_a)
        return float(scores.sum() - scores[diag, :, diag].sum()), n_a * (n_x - 1) * n_b
    return float(scores.sum()), n_a * n_b * n_x


def _block_distances(
    segments: Sequence[torch.Tensor],
    blocks: Sequence[tuple[np.ndarray, np.ndarray]],
    distance: str,
    device: torch.device,
    batch_elements: int,
) -> np.ndarray:
    """DTW distances d(segments[r], segments[c]) for each block's ``rows x cols``.

    Returns the ``len(rows) * len(cols)`` distances of every block (row-major), blocks
    concatenated in order, as float64.  For each block the frame distances between all
    frames of its rows and all frames of its columns are one matrix product; blocks are
    grouped so that these matrices stay within ``batch_elements``, and the pairs of a
    group are sorted by their lengths and run through :func:`dtw_distance_batch` in
    padded batches.
    """
    lengths = np.asarray([seg.shape[0] for seg in segments], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    dtype = torch.float64 if segments[0].dtype == torch.float64 else torch.float32
    frames = torch.cat([seg.to(device, dtype) for seg in segments])
    if distance != "euclidean":
        frames = _normalise(frames)

    sizes = [len(r) * len(c) for r, c in blocks]
    out = np.empty(int(sum(sizes)), dtype=np.float64)
    n_blocks = len(blocks)
    first, out_pos = 0, 0
    with torch.no_grad():
        while first < n_blocks:
            bufs: list[torch.Tensor] = []
            base, stride, len_a, len_b = [], [], [], []
            buf_size = 0
            last = first
            while last < n_blocks and (last == first or buf_size < batch_elements):
                rows, cols = blocks[last]
                fr_r, off_r = _frame_indices(starts, lengths, rows)
                fr_c, off_c = _frame_indices(starts, lengths, cols)
                fr_r_t = torch.from_numpy(fr_r).to(device)
                fr_c_t = torch.from_numpy(fr_c).to(device)
                xa, xb = frames[fr_r_t], frames[fr_c_t]
                if distance == "euclidean":
                    dist = _euclidean(xa, xb)
                else:
                    dist = _cos_to_distance(xa @ xb.T, distance)
                bufs.append(dist.reshape(-1))
                n_c = len(fr_c)
                base.append(
                    buf_size + np.repeat(off_r * n_c, len(cols)) + np.tile(off_c, len(rows))
                )
                stride.append(np.full(len(rows) * len(cols), n_c, dtype=np.int64))
                len_a.append(np.repeat(lengths[rows], len(cols)))
                len_b.append(np.tile(lengths[cols], len(rows)))
                buf_size += len(fr_r) * n_c
                last += 1
            buffer = torch.cat(bufs + [frames.new_full((1,), math.inf)])  # last one pads
            group = _dtw_pairs(
                buffer, np.concatenate(base), np.concatenate(stride), np.concatenate(len_a),
                np.concatenate(len_b), buf_size, batch_elements,
            )
            out[out_pos:out_pos + len(group)] = group
            out_pos += len(group)
            first = last
    return out


def _frame_indices(
    starts: np.ndarray, lengths: np.ndarray, items: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Frame indices of ``items`` laid end to end, and each item's offset among them."""
    lens = lengths[items]
    offsets = np.concatenate([[0], np.cumsum(lens)[:-1]])
    return np.repeat(starts[items] - offsets, lens) + np.arange(int(lens.sum())), offsets


def _dtw_pairs(
    buffer: torch.Tensor,
    base: np.ndarray,
    stride: np.ndarray,
    len_a: np.ndarray,
    len_b: np.ndarray,
    pad: int,
    batch_elements: int,
) -> np.ndarray:
    """DTW distance of each pair whose cost is ``buffer[base + i * stride + j]``.

    ``(i, j) < (len_a, len_b)``; ``buffer[pad]`` must be ``inf`` (it fills the padding).
    """
    n_pairs = len(base)
    out = np.empty(n_pairs, dtype=np.float64)
    order = np.lexsort((len_b, len_a))
    device = buffer.device
    base_t, stride_t = torch.from_numpy(base).to(device), torch.from_numpy(stride).to(device)
    len_a_t, len_b_t = torch.from_numpy(len_a).to(device), torch.from_numpy(len_b).to(device)
    pos = 0
    while pos < n_pairs:
        # Grow the batch while its padded size stays within the budget.
        ta, tb = int(len_a[order[pos]]), int(len_b[order[pos]])
        end, step = pos + 1, 64
        while end < n_pairs:
            nxt = min(end + step, n_pairs)
            ta2 = int(len_a[order[nxt - 1]])  # sorted by len_a first
            tb2 = max(tb, int(len_b[order[end:nxt]].max()))
            if (nxt - pos) * (ta2 + 1) * (ta2 + tb2 + 1) * 3 > batch_elements:
                break
            ta, tb, end = ta2, tb2, nxt
            step = min(step * 2, 1 << 16)
        sel = order[pos:end]
        sel_t = torch.from_numpy(sel).to(device)
        la, lb = len_a_t[sel_t], len_b_t[sel_t]
        # Skewed layout straight from the buffer: (k, b, i) -> cell (i, k - i) of pair b.
        k = torch.arange(ta + tb - 1, device=device)[:, None, None]
        i = torch.arange(ta, device=device)[None, None, :]
        j = k - i
        # Only cells left of column 0 must read inf; cells beyond (la, lb) are never used,
        # so they may read anything (clamped into the buffer).
        idx = base_t[sel_t][None, :, None] + i * stride_t[sel_t][None, :, None] + j
        skew = buffer[torch.where(j < 0, pad, idx.clamp_(max=pad))]
        total, length = _dtw_skewed(skew, la, lb)
        d = total / length.to(total.dtype)
        out[sel] = d.to("cpu", torch.float64).numpy()
        pos = end
    return out


def abx_from_npy_dir(
    feature_dir: str | Path,
    item_path: str | Path,
    mode: str = "within",
    distance: str = "cosine",
    **kwargs: Any,
) -> dict[str, Any]:
    """ABX error from per-file ``<feature_dir>/<file id>.npy`` features of shape ``(T, D)``.

    Reads the item file (:func:`read_item_file`), loads one ``.npy`` per file id used by
    the items, and calls :func:`abx_error` (``kwargs`` are passed on: ``frame_rate``,
    ``max_items_per_context``, ``seed`` ...).

    Raises:
        DataError: bad item file, or a missing/unreadable/non-2-D ``.npy`` (the message
            names the ``.npy`` and the first item line that uses it).
    """
    feature_dir = Path(feature_dir)
    items = read_item_file(item_path)
    features: dict[str, np.ndarray] = {}
    for item in items:
        if item.file in features:
            continue
        if "/" in item.file or "\\" in item.file or item.file in (".", ".."):
            raise DataError(f"{item.location()}: file id {item.file!r} is not a file name "
                            f"(ids name {feature_dir}/<id>.npy)")
        path = feature_dir / f"{item.file}.npy"
        if not path.is_file():
            raise DataError(f"{item.location()}: feature file {path} not found")
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: cannot read features (used at {item.location()}): "
                            f"{exc}") from exc
        if arr.ndim != 2:
            raise DataError(f"{path}: features must be (T, D), got shape {arr.shape} "
                            f"(used at {item.location()})")
        if not np.issubdtype(arr.dtype, np.number):
            raise DataError(f"{path}: features must be numeric, got dtype {arr.dtype}")
        features[item.file] = arr
    return abx_error(features, items, mode=mode, distance=distance, **kwargs)
