"""Device and precision: ``train.device`` (auto | cpu | cuda | cuda:N) and
``train.precision`` (auto | fp32 | bf16) for every modality."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from cpc_seq.errors import ConfigError


def resolve_device(name: str, option: str = "train.device") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cpu``, ``cuda``, ``cuda:N`` as given.
    Anything else, or CUDA on a machine without it, is a ConfigError naming ``option``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise ConfigError(f"{option}: expected auto, cpu, cuda or cuda:N, got {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"{option}: {name} requested but CUDA is not available")
    if name.startswith("cuda:"):
        try:
            index = int(name[5:])
        except ValueError:
            raise ConfigError(f"{option}: expected cuda:N with an integer N, got {name!r}") from None
        if not 0 <= index < torch.cuda.device_count():
            raise ConfigError(f"{option}: {name} requested but this machine has "
                              f"{torch.cuda.device_count()} CUDA devices")
    return torch.device(name)


def fast_bf16(device: torch.device) -> bool:
    """Whether bf16 autocast is the faster choice on ``device``: CUDA with bf16 support,
    or a CPU with native bf16 instructions (avx512_bf16 / amx_bf16)."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def use_bf16(precision: str, device: torch.device) -> bool:
    """``precision`` is fp32 | bf16 | auto (bf16 where :func:`fast_bf16`)."""
    return precision == "bf16" or (precision == "auto" and fast_bf16(device))


def autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` when ``bf16``, else a no-op context."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
