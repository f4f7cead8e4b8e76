"""train.cpu_memory: freed CPU memory is reused instead of being faulted in again."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from cpc_seq.config import ConfigError
from cpc_seq.engine.config import RunConfig
from cpc_seq.kernels.memory import apply_cpu_memory

# A training step's pattern: a few large temporaries alive together, five steps after
# three warm-up steps; prints the minor page faults of the five. With glibc's default
# every temporary above the mmap threshold is a fresh mapping whose pages fault again.
_PROBE = """
import resource, sys, torch
if sys.argv[1] == "keep":
    from cpc_seq.kernels.memory import keep_freed_memory
    assert keep_freed_memory()
def step():
    a = torch.ones(10 * 1024 * 1024)  # 40 MiB of float32
    b = torch.ones(10 * 1024 * 1024)
    return float((a + b)[0])
for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""

glibc = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                           reason="the policy applies to glibc only")


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True,
                         check=True)
    return int(out.stdout.strip())


@glibc
def test_kept_memory_is_reused_without_page_faults() -> None:
    pages = 5 * 120 * 1024 * 1024 // 4096  # three 40 MiB temporaries in each of 5 steps
    released, kept = _faults("release"), _faults("keep")
    assert released > pages * 3 // 4  # the default: nearly every page faults again
    assert kept < released // 2  # kept: most of the memory is reused


def test_cpu_memory_option_is_checked() -> None:
    RunConfig(cpu_memory="release").validate()
    with pytest.raises(ConfigError, match="train.cpu_memory"):
        RunConfig(cpu_memory="forever").validate()
    with pytest.raises(ValueError, match="cpu_memory"):
        apply_cpu_memory("forever")
    assert apply_cpu_memory("release") is False
