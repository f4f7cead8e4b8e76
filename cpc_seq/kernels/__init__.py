"""CPU speed kernels, all behind one switch: ``model.kernels: auto | reference``.

The model (:mod:`cpc_seq.audio.model.encoder`, :mod:`cpc_seq.nn.context`) and the k-step loss
(:mod:`cpc_seq.losses.kstep`) are written with plain torch ops and autograd. Each has
one line that hands its work to a kernel here when :func:`use_kernels` says so:
``kernels="auto"`` and the input on the CPU. ``reference`` always runs the plain code,
and so does a GPU run (no kernel here has been measured faster on a GPU).

=================  ============================================  ======================
module             replaces (plain path)                         measured on
=================  ============================================  ======================
:mod:`.encoder`    the conv stack in (B, C, T) with ``conv1d``   the encoder
:mod:`.block_conv` ``conv1d`` of the waveform layer and of        (used by .encoder)
                   kernels that are a multiple of the stride
:mod:`.winograd`   two-tap convolutions (kernel = 2 x stride)    (used by .encoder)
:mod:`.gru`        ``nn.GRU``'s backward on the CPU              the context network
:mod:`.xent`       float32 copy + ``cross_entropy`` + argmax     the k-step loss
:mod:`.memory`     glibc's default of unmapping freed memory     the whole step
=================  ============================================  ======================

Each module's docstring says what it buys, measured with ``benchmarks/bench_kernels.py``
(fast path against the plain path it replaces, forward and backward), and each has a
parity test against the plain path (``tests/kernels/test_kernels.py``, ``tests/kernels/test_winograd.py``).
:mod:`.memory` is process-wide and has its own switch, ``train.cpu_memory``.
"""

from __future__ import annotations

import typing
from typing import Literal

from torch import Tensor

#: The values of ``model.kernels``.
KernelMode = Literal["auto", "reference"]
KERNEL_MODES = typing.get_args(KernelMode)


def use_kernels(mode: str, x: Tensor) -> bool:
    """Whether the speed kernels run on ``x``: ``mode`` is ``auto`` and x is on the CPU."""
    if mode not in KERNEL_MODES:
        raise ValueError(f"unknown kernels mode {mode!r}; one of {', '.join(KERNEL_MODES)}")
    return mode == "auto" and x.device.type == "cpu"
