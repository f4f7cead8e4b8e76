"""Training batches of audio windows, read from disk in DataLoader workers.

The main process walks a :class:`~cpc_seq.audio.data.batches.WindowPlan` (a pure
function of ``(seed, epoch)``) and hands each worker a batch to read: the batch's global
number and this rank's share of its ``(start, length)`` spans. Workers read those
samples with a :class:`~cpc_seq.audio.data.spans.SpanReader`; results come back in plan
order. Nothing but the plan of the current epoch is held in memory, and each rank reads
only its own share of every batch.

The position is the number of batches consumed (not the number read ahead by the
workers), stored as ``(epoch, batch_in_epoch)``; a resumed run starts its workers there
and sees exactly the batches of an uninterrupted run, whatever ``num_workers`` is.

``num_workers=0`` reads in the training process itself (no workers).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from cpc_seq.audio.data.batches import WindowPlan, make_segments
from cpc_seq.audio.data.spans import SpanReader
from cpc_seq.errors import DataError

__all__ = ["WindowLoader", "index_plan"]

_Spec = tuple[int, np.ndarray, np.ndarray]


class _PlanWalk(Sampler):
    """Yields ``(k, start, length)`` for global batches ``k = first, first + 1, ...``:
    this rank's contiguous share of each batch of the plan."""

    def __init__(self, plan: WindowPlan, rank: int, world: int, first: int) -> None:
        self.plan, self.rank, self.world, self.first = plan, rank, world, first
        self._epoch: tuple[int, np.ndarray, np.ndarray] | None = None

    def spec(self, k: int) -> _Spec:
        epoch, b = divmod(k, self.plan.batches_per_epoch)
        if self._epoch is None or self._epoch[0] != epoch:
            self._epoch = None  # let the old plan go before the new one is made
            start, length = self.plan.epoch_plan(epoch)
            self._epoch = (epoch, start.numpy(), length.numpy().astype(np.int32))
        _, start, length = self._epoch
        share = start.shape[1] // self.world
        lo = self.rank * share
        return k, start[b, lo : lo + share].copy(), length[b, lo : lo + share].copy()

    def __iter__(self) -> Iterator[_Spec]:
        k = self.first
        while True:
            yield self.spec(k)
            k += 1

    def __len__(self) -> int:  # pragma: no cover - endless; DataLoader does not need it
        raise TypeError("an endless walk of the plan")


class _ReadBatch(Dataset):
    """``dataset[(k, start, length)]`` -> ``(k, windows (B, n), length (B,))``, or
    ``(k, error message)`` when the audio cannot be read (raised in the main process as
    one line, not as a worker traceback)."""

    def __init__(self, reader: SpanReader, window: int) -> None:
        self.reader, self.window = reader, window

    def __getitem__(self, spec: _Spec) -> tuple[Any, ...]:
        k, start, length = spec
        try:
            x = self.reader.read_spans(start, length, self.window)
        except DataError as e:
            return k, str(e)
        return k, torch.from_numpy(x), torch.from_numpy(length.astype(np.int64))

    def __len__(self) -> int:  # pragma: no cover - indexed by the sampler's specs only
        raise TypeError("indexed by batch specs")


def index_plan(reader: SpanReader, window: int, batch_size: int, seed: int, pack: bool,
               sampling: str = "uniform") -> WindowPlan:
    """The window plan over a reader's utterances (laid end to end in its index's order):
    one segment per utterance, or per run of one speaker's utterances with ``pack``."""
    index = reader.index
    segments = make_segments(torch.from_numpy(reader.starts),
                             torch.from_numpy(index.num_samples),
                             torch.from_numpy(index.speaker.astype(np.int64)), pack=pack,
                             speakers=index.speakers)
    return WindowPlan(segments, window, batch_size, seed, sampling)


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)  # workers only read and resample; leave the cores to training


class WindowLoader:
    """This rank's training batches: ``next() -> (x (B / world, window) float32 in
    [-1, 1], length (B / world,) int64 real samples of each window)``.

    ``num_workers`` reader processes, each ``prefetch`` batches ahead.
    """

    def __init__(self, reader: SpanReader, plan: WindowPlan, rank: int = 0, world: int = 1,
                 num_workers: int = 2, prefetch: int = 4) -> None:
        self.reader, self.plan = reader, plan
        self.rank, self.world = rank, world
        self.num_workers, self.prefetch = num_workers, prefetch
        self.position = 0  # global batches consumed
        self._it: Iterator[tuple[Any, ...]] | None = None
        self._loader: DataLoader | None = None

    def _start(self) -> None:
        walk = _PlanWalk(self.plan, self.rank, self.world, self.position)
        data = _ReadBatch(self.reader, self.plan.window)
        if self.num_workers == 0:
            self._it = (data[spec] for spec in walk)
            return
        self._loader = DataLoader(data, sampler=walk, batch_size=None,
                                  num_workers=self.num_workers, prefetch_factor=self.prefetch,
                                  worker_init_fn=_one_thread)
        self._it = iter(self._loader)

    def next(self) -> tuple[Tensor, Tensor]:
        if self._it is None:
            self._start()
        assert self._it is not None
        item = next(self._it)
        if item[0] != self.position:  # pragma: no cover - DataLoader keeps order
            raise RuntimeError(f"batch {item[0]} arrived, {self.position} expected")
        self.position += 1
        if len(item) == 2:
            self.close()
            raise DataError(item[1])
        return item[1], item[2]

    def close(self) -> None:
        """Stop the workers (they start again at the position on the next ``next()``)."""
        self._it = None
        self._loader = None

    def state_dict(self) -> dict[str, int]:
        epoch, b = divmod(self.position, self.plan.batches_per_epoch)
        return {"epoch": epoch, "batch_in_epoch": b}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.position = (int(state["epoch"]) * self.plan.batches_per_epoch
                         + int(state["batch_in_epoch"]))
        self.close()
