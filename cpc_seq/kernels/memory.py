"""Keep freed tensor memory inside the process (glibc malloc), ``train.cpu_memory: keep``.

glibc serves every allocation above its mmap threshold (at most 32 MiB, less until its
dynamic threshold has grown) with a fresh ``mmap`` and unmaps it on ``free``. A training
or extraction step allocates and frees the same few hundred MiB of activations, scores
and gradients every step, so with the default the kernel faults in and zeroes every page
of them again each step (in fp32 on the ``small`` preset, 2 threads, most of the step's
system time).

:func:`keep_freed_memory` switches glibc to the heap for all sizes (``M_MMAP_MAX = 0``)
and never trims the heap's top (``M_TRIM_THRESHOLD`` at its maximum), so freed blocks
are reused by the next step. The process's peak memory is unchanged (the same tensors
are live at the peak); what changes is that the memory is not handed back between steps.
It affects CPU memory only (CUDA has its own caching allocator) and does nothing on a C
library other than glibc.

What it buys, measured: the page faults of a step (``tests/kernels/test_memory.py`` counts them
with and without it); its share of the step time is what ``benchmarks/bench_kernels.py
--only memory`` prints (keep against release, in alternating processes): on an idle 2-core AMD
EPYC, 1.23x the whole step's speed in fp32 (1.07-1.40), 1.14x in bf16 (0.98-1.17).
"""

from __future__ import annotations

import ctypes
import platform
import typing
from typing import Literal

CpuMemoryMode = Literal["keep", "release"]
CPU_MEMORY_MODES = typing.get_args(CpuMemoryMode)

# mallopt parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_INT_MAX = 2**31 - 1


def keep_freed_memory() -> bool:
    """Make glibc malloc keep and reuse freed memory for the rest of the process.

    Returns True where it took effect (glibc), False elsewhere (other C libraries,
    macOS, Windows). Calling it again changes nothing; there is no undo.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, _INT_MAX) == 1


def apply_cpu_memory(mode: str) -> bool:
    """``train.cpu_memory``: ``keep`` calls :func:`keep_freed_memory`; ``release`` leaves
    glibc's defaults. Returns whether this call made memory kept."""
    if mode not in CPU_MEMORY_MODES:
        raise ValueError(f"unknown cpu_memory mode {mode!r}; one of {', '.join(CPU_MEMORY_MODES)}")
    return keep_freed_memory() if mode == "keep" else False
