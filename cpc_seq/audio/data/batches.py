"""Window plans for audio CPC training: which audio each batch holds.

Two choices shape a batch (both in the ``data`` config section):

``data.short_utterances`` - what windows are cut from:

``pack``
    Each speaker's utterances are concatenated (in the data dir's order, as CPC_audio
    does) and windows are cut from that stream, so a window may span an utterance
    boundary but never a speaker boundary, and every second of audio trains. A speaker
    with less audio than one window trains as one padded window. On FSDD (trimmed
    digits of ~0.4 s, so most 0.3 s windows hold a join) it measured below ``pad``.
``pad`` (default)
    Windows are cut from single utterances; an utterance shorter than the window trains
    as one window holding all of it, zero-padded and masked: the encoder gets its real
    length, the loss ignores the padded frames (as queries, positives and negatives).
``skip``
    Utterances shorter than the window are left out (the behaviour before packing).
``error``
    An utterance shorter than the window is an error naming it.

``data.batch_sampling`` - how windows are grouped into batches, and so which frames
are the negatives of the batch-wide negative modes (``loss.negatives``: ``all``,
``cross_batch``, ``mixed``; ``same_sequence`` draws from the window itself whatever
the batch):

``uniform`` (default)
    An epoch's windows are shuffled and cut into batches: speakers appear in proportion
    to their audio, negatives mix speakers (the CPC paper's "mixed speakers", 64.6 %).
``same_speaker``
    Every batch holds windows of one speaker (from ``utt2spk``), so every negative is the
    same speaker as its positive: the contrast cannot be won by speaker identity alone
    (the CPC paper's "same speaker" negatives, 65.5 %; the ZeroSpeech 2021 CPC baselines).
    Each speaker's windows are cut into batches; a speaker's last batch is filled up with
    its own windows again; the batch order is shuffled.
``speaker_balanced``
    Every batch draws its slots round-robin over a fresh random order of the speakers,
    so each speaker is equally represented whatever its amount of audio (with at least
    as many slots as speakers, every speaker is in every batch); negatives mix speakers
    evenly. Windows of speakers with little audio repeat within an epoch.

Every plan is a pure function of ``(seed, epoch)``; walked by
:class:`cpc_seq.audio.data.loader.WindowLoader`, whose state (epoch, batch in epoch) makes
a resumed run see exactly the batches of an uninterrupted one. With ``skip`` (or ``pad``
on data without short utterances) and ``uniform``, the plan draws the same windows as
:class:`cpc_seq.engine.windows.WindowSampler` for the same seed.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from cpc_seq.errors import DataError

ShortMode = Literal["pack", "pad", "skip", "error"]
BatchSampling = Literal["uniform", "same_speaker", "speaker_balanced"]
SHORT_MODES = typing.get_args(ShortMode)
BATCH_SAMPLING = typing.get_args(BatchSampling)


@dataclass
class Segments:
    """Spans of the training audio's virtual time line (utterances end to end, see
    :mod:`cpc_seq.audio.data.spans`) that windows are cut from. ``start``, ``length``: (S,) int64 sample positions and counts;
    ``speaker``: (S,) int64 index into ``speakers``."""

    start: Tensor
    length: Tensor
    speaker: Tensor
    speakers: list[str]


def make_segments(starts: Tensor, lengths: Tensor, speaker_of_utt: Sequence[str] | Tensor,
                  pack: bool, speakers: Sequence[str] | None = None) -> Segments:
    """Segments of a store's utterances (``starts``, ``lengths``: (U,)).

    ``speaker_of_utt``: each utterance's speaker id, or (U,) int64 indices into
    ``speakers``. ``pack``: one segment per run of consecutive utterances of one speaker
    (the training loader orders utterances by speaker, so that is one segment per
    speaker); else one segment per utterance.
    """
    if isinstance(speaker_of_utt, Tensor):
        if speakers is None:
            raise ValueError("speaker indices need the speakers' names")
        spk, names = speaker_of_utt.long(), list(speakers)
    else:
        names = sorted(set(speaker_of_utt))
        spk_id = {s: i for i, s in enumerate(names)}
        spk = torch.tensor([spk_id[s] for s in speaker_of_utt], dtype=torch.long)
    if not pack or len(spk) == 0:
        return Segments(starts.clone(), lengths.clone(), spk, names)
    new_run = torch.ones(len(spk), dtype=torch.bool)
    new_run[1:] = spk[1:] != spk[:-1]
    run_id = torch.cumsum(new_run.long(), 0) - 1
    first = new_run.nonzero().squeeze(1)
    seg_len = torch.zeros(len(first), dtype=torch.long).index_add_(0, run_id, lengths.long())
    return Segments(starts[first].clone(), seg_len, spk[first], names)


class WindowPlan:
    """Deterministic per-epoch plans of windows: ``epoch_plan(epoch) -> (start, length)``,
    each (batches_per_epoch, batch_size) int64: the absolute sample position of each
    window and how many of its ``window`` samples are real (the rest is padding).

    A segment of L samples gives ``max(1, L // window)`` windows per epoch at random
    offsets (a segment shorter than the window gives one, padded).
    """

    def __init__(self, segments: Segments, window: int, batch_size: int, seed: int,
                 sampling: str = "uniform") -> None:
        if sampling not in BATCH_SAMPLING:
            raise ValueError(f"unknown batch sampling {sampling!r}; one of "
                             f"{', '.join(BATCH_SAMPLING)}")
        self.seg, self.window, self.batch_size = segments, window, batch_size
        self.seed, self.sampling = seed, sampling
        self.per_seg = torch.div(segments.length, window, rounding_mode="floor").clamp_min(1)
        self.per_seg[segments.length == 0] = 0
        total = int(self.per_seg.sum())
        spk_windows = torch.zeros(len(segments.speakers), dtype=torch.long).index_add_(
            0, segments.speaker, self.per_seg)
        self.speaker_windows = spk_windows
        self.active_speakers = (spk_windows > 0).nonzero().squeeze(1)
        if sampling == "same_speaker":
            self.batches_per_epoch = sum(math.ceil(int(n) / batch_size)
                                         for n in spk_windows if n > 0)
        else:
            self.batches_per_epoch = total // batch_size
        if self.batches_per_epoch == 0:
            raise DataError(f"only {total} windows of {window} samples in the training data; "
                            f"need at least batch_size={batch_size}")
        self.windows_per_epoch = total

    def _windows(self, g: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """This epoch's windows in a random order: (start, length, speaker), each (W,)."""
        seg = torch.repeat_interleave(torch.arange(len(self.per_seg)), self.per_seg)
        seg_len = self.seg.length[seg]
        span = (seg_len - self.window + 1).clamp_min(1).float()
        offset = (torch.rand(len(seg), generator=g) * span).long()
        order = torch.randperm(len(seg), generator=g)
        seg, offset, seg_len = seg[order], offset[order], seg_len[order]
        return (self.seg.start[seg] + offset, seg_len.clamp_max(self.window),
                self.seg.speaker[seg])

    def epoch_plan(self, epoch: int) -> tuple[Tensor, Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        start, length, spk = self._windows(g)
        bsz, nb = self.batch_size, self.batches_per_epoch
        if self.sampling == "uniform":
            pick = torch.arange(nb * bsz).view(nb, bsz)
        else:
            per_spk = {int(s): (spk == s).nonzero().squeeze(1) for s in self.active_speakers}
            if self.sampling == "same_speaker":
                rows = []
                for idx in per_spk.values():
                    need = math.ceil(len(idx) / bsz) * bsz
                    rows.append(idx.repeat(math.ceil(need / len(idx)))[:need].view(-1, bsz))
                pick = torch.cat(rows)[torch.randperm(nb, generator=g)]
            else:  # speaker_balanced
                n_spk = len(self.active_speakers)
                orders = torch.stack([torch.randperm(n_spk, generator=g) for _ in range(nb)])
                slot_spk = self.active_speakers[orders[:, torch.arange(bsz) % n_spk]].reshape(-1)
                flat = torch.empty(nb * bsz, dtype=torch.long)
                for s, idx in per_spk.items():
                    where = (slot_spk == s).nonzero().squeeze(1)
                    flat[where] = idx[torch.arange(len(where)) % len(idx)]
                pick = flat.view(nb, bsz)
        return start[pick], length[pick]
