"""Shared helpers for the benchmark scripts (timing, FLOP counting, matmul peak, memory)."""

from __future__ import annotations

import resource
import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode


def matmul_peak(dtype: torch.dtype = torch.float32, n: int = 2048, reps: int = 5) -> float:
    """Best GFLOP/s of an n x n matmul on this machine."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs torch's flop counter attributes to one call of ``fn`` (matmuls and convs)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def run_times(fn: Callable[[], object], warmup: int = 2, reps: int = 5,
              clock: Callable[[], float] = time.perf_counter) -> list[float]:
    """Seconds of each of ``reps`` calls of ``fn`` after ``warmup`` calls, by ``clock``
    (wall time by default; ``time.process_time`` gives this process's CPU time)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t = clock()
        fn()
        times.append(clock() - t)
    return times


def run_times2(fn: Callable[[], object], warmup: int = 2,
               reps: int = 5) -> tuple[list[float], list[float]]:
    """(wall seconds, CPU seconds of this process) of each of ``reps`` calls of ``fn``."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(reps):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return wall, cpu


def matmul_peak_cpu(dtype: torch.dtype = torch.float32, n: int = 2048, reps: int = 5) -> float:
    """Best GFLOP per CPU-second (this process) of an n x n matmul."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.process_time()
        a @ b
        best = min(best, time.process_time() - t)
    return 2 * n**3 / best / 1e9


def time_it(fn: Callable[[], object], warmup: int = 2, reps: int = 5) -> float:
    """Median seconds per call after ``warmup`` calls."""
    times = sorted(run_times(fn, warmup, reps))
    return times[len(times) // 2]


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
