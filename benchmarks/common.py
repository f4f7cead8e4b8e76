"""Shared helpers for the benchmark scripts (timing, FLOP counting, matmul peak, memory)."""

from __future__ import annotations

import contextlib
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode


def memory_as_the_cli_runs() -> bool:
    """Apply the tree's own CPU-memory policy, as ``cpc-seq audio train`` / ``extract`` do
    (``train.cpu_memory: keep``; see ``cpc_seq/kernels/memory.py``, before that
    ``cpc_seq/engine/memory.py``). Trees without one (older commits) run with the C
    library's default. Returns whether memory is kept."""
    try:
        from cpc_seq.kernels.memory import keep_freed_memory
    except ImportError:
        try:
            from cpc_seq.engine.memory import keep_freed_memory
        except ImportError:
            return False
    return keep_freed_memory()


def profile_table(fn: Callable[[], object], reps: int = 3, rows: int = 20) -> str:
    """``fn`` run ``reps`` times under torch.profiler (after one warm-up): the ops with the
    most self CPU time, grouped by input shapes, per run, as a markdown table; matmuls
    also get their achieved GFLOP/s (2·m·k·n per call)."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(reps):
            fn()
    events = prof.key_averages(group_by_input_shape=True)
    total = sum(e.self_cpu_time_total for e in events) / reps / 1e3
    matmuls = ("aten::mm", "aten::addmm", "aten::bmm")
    mm_ms = sum(e.self_cpu_time_total for e in events if e.key in matmuls) / reps / 1e3
    out = [f"self CPU time per run: {total:.1f} ms (profiler overhead included); matmuls "
           f"(mm, addmm, bmm) {mm_ms:.1f} ms = {100 * mm_ms / max(total, 1e-9):.0f} %", "",
           "| op | input shapes | calls/run | self ms/run | % | GFLOP/s |", "|---|---|---|---|---|---|"]
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:rows]:
        ms = e.self_cpu_time_total / reps / 1e3
        shapes = [list(x) for x in e.input_shapes if x]
        gfs = ""
        if e.key in matmuls and len(shapes) >= 2 and ms > 0:
            a, b = shapes[1:3] if e.key == "aten::addmm" else shapes[:2]  # addmm(bias, a, b)
            if len(a) == len(b) and len(a) in (2, 3):  # bmm: (n, m, k) @ (n, k, p)
                flops = 2 * math.prod(a) * b[-1]
                gfs = f"{flops * e.count / reps / (ms / 1e3) / 1e9:.0f}"
        out.append(f"| {e.key} | {str(shapes)[:60]} | {e.count / reps:g} | {ms:.1f} | "
                   f"{100 * ms / total:.1f} % | {gfs} |")
    return "\n".join(out)


def matmul_peak(dtype: torch.dtype = torch.float32, n: int = 2048, reps: int = 10,
                clock: Callable[[], float] = time.perf_counter) -> float:
    """Best GFLOP/s of an n x n matmul on this machine, by ``clock`` (wall time; see
    matmul_peak_cpu), after three warm-up calls: the first bf16 calls also build the
    BLAS's kernels, and a cold core runs slower."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(reps):
        t = clock()
        a @ b
        best = min(best, clock() - t)
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


def matmul_peak_cpu(dtype: torch.dtype = torch.float32, n: int = 2048, reps: int = 10) -> float:
    """Best GFLOP per CPU-second (this process) of an n x n matmul."""
    return matmul_peak(dtype, n, reps, clock=time.process_time)


def time_it(fn: Callable[[], object], warmup: int = 2, reps: int = 5) -> float:
    """Median seconds per call after ``warmup`` calls."""
    times = sorted(run_times(fn, warmup, reps))
    return times[len(times) // 2]


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def root_from_argv(argv: list[str], default: Path) -> Path:
    """``--root DIR`` in ``argv`` (worker processes: the tree whose cpc_seq is timed)."""
    for i, a in enumerate(argv):
        if a == "--root" and i + 1 < len(argv):
            return Path(argv[i + 1]).resolve()
        if a.startswith("--root="):
            return Path(a.split("=", 1)[1]).resolve()
    return default


@contextlib.contextmanager
def ref_worktree(repo: Path, ref: str, path: str | None = None) -> Iterator[Path]:
    """``git worktree add --detach`` of ``ref`` (a fresh temp dir unless ``path``), removed
    (and pruned) afterwards."""
    if path and Path(path).exists():
        raise SystemExit(f"error: {path} exists; remove it or pick another directory")
    target = Path(path) if path else Path(tempfile.mkdtemp(prefix="cpc_ref_"))
    if not path:
        target.rmdir()
    subprocess.run(["git", "-C", str(repo), "worktree", "add", "--detach", "-q", str(target), ref],
                   check=True)
    # a plain kill (SIGTERM) still removes the worktree
    old_handler = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        yield target
    finally:
        subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(target)],
                       check=False)
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)
        subprocess.run(["git", "-C", str(repo), "worktree", "prune"], check=False)
        signal.signal(signal.SIGTERM, old_handler)


def describe_trees(repo: Path, ref_dir: Path, ref: str) -> str:
    """"<head>[+ uncommitted cpc_seq changes] vs <ref> (<sha>)" for the benchmark header."""

    def git(*a: str, cwd: Path = repo) -> str:
        return subprocess.run(["git", "-C", str(cwd), *a], capture_output=True,
                              text=True).stdout.strip()

    dirty = git("status", "--porcelain", "--", "cpc_seq")
    return (f"this tree {git('rev-parse', '--short', 'HEAD')}"
            f"{' + uncommitted cpc_seq changes' if dirty else ''} vs {ref} "
            f"({git('rev-parse', '--short', 'HEAD', cwd=ref_dir)})")


def run_json_worker(cmd: list[str], root: Path, threads: int) -> dict:
    """Run a worker process in ``root`` with ``threads`` threads; its last stdout line is
    JSON with a ``cpc_seq`` key (the imported package's file), which must lie in ``root``."""
    import json

    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(root))
    if res.returncode != 0:
        raise SystemExit(f"error: worker in {root} failed:\n{res.stderr[-3000:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    if not Path(out["cpc_seq"]).resolve().is_relative_to(root):
        raise SystemExit(f"error: worker imported {out['cpc_seq']}, not the tree {root}")
    return out
