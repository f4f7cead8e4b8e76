"""One check of the CUDA paths, printing one table (run by benchmarks/gpu_check.sh).

    .venv/bin/python benchmarks/gpu_check.py            # on a CUDA machine, < 8 minutes
    .venv/bin/python benchmarks/gpu_check.py --dry-run  # anywhere: CPU, tiny sizes

Rows: the ``cuda``-marked tests; bf16 and fp32 training throughput of the small and
paper presets (audio-s/s, GFLOP/s as % of the GPU's bf16 matmul peak measured here the
same way, peak GPU memory); extraction real-time factor of the paper preset; a
2-process DDP run under torchrun (NCCL with one GPU per rank where there are two, else
gloo, said in the row); the largest paper-preset batch that trains one step. Needs
nothing but this repository and its venv. ``--dry-run`` runs every section on the CPU
with tiny sizes, so that this script is exercised where there is no GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(HERE))

import torch  # noqa: E402
from common import count_flops  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int, reps: int = 10) -> float:
    """Best GFLOP/s of an n x n matmul on ``device``."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    _sync(device)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def train_step_fn(preset: str, batch: int, window: int, bf16: bool, device: torch.device,
                  negatives: str = "cross_batch"):
    """A seeded training step (forward, k-step InfoNCE, backward, Adam) on ``device``."""
    from cpc_seq.audio.model.cpc import ModelConfig, build_model
    from cpc_seq.losses import kstep_infonce

    torch.manual_seed(0)
    model = build_model(ModelConfig(encoder=preset)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.randn(batch, window, device=device)
    gen = torch.Generator(device=device).manual_seed(0)
    last: dict[str, float] = {}

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            z, c, fl = model(x)
            out = kstep_infonce(model.predict(c), z, fl, negatives=negatives, generator=gen)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        last["loss"] = out.loss.detach()

    return step, last


def timed(step, device: torch.device, warmup: int, reps: int) -> float:
    """Median seconds per call (synchronised)."""
    for _ in range(warmup):
        step()
    _sync(device)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def section_tests(args: argparse.Namespace) -> list[tuple[str, str, str]]:
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider",
           *args.tests]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=str(ROOT))
    lines = [x for x in res.stdout.strip().splitlines() if x.strip()]
    summary = lines[-1] if lines else res.stderr.strip()[-200:]
    ok = "pass" if res.returncode in (0, 5) and "failed" not in summary else "FAIL"
    return [("cuda-marked tests", summary.strip("= "), ok)]


def section_train(args: argparse.Namespace, device: torch.device, peak: float):
    rows = []
    for preset in args.presets:
        for prec in ("bf16", "fp32"):
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            step, last = train_step_fn(preset, args.batch, args.window, prec == "bf16", device)
            step()
            flops = count_flops(step)
            sec = timed(step, device, args.warmup, args.reps)
            mem = (f", peak {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB"
                   if device.type == "cuda" else "")
            audio = args.batch * args.window / 16000
            ok = "pass" if torch.isfinite(last["loss"]).item() else "FAIL (loss not finite)"
            rows.append((f"train {preset} {prec} (batch {args.batch} x {args.window})",
                         f"{audio / sec:.1f} audio-s/s, {sec * 1e3:.1f} ms/step, "
                         f"{flops / sec / 1e9:.0f} GFLOP/s = {100 * flops / sec / 1e9 / peak:.1f} % "
                         f"of bf16 peak{mem}", ok))
    return rows


def section_extract(args: argparse.Namespace, device: torch.device):
    from cpc_seq.audio.extract import model_featurizer
    from cpc_seq.audio.model.cpc import ModelConfig, build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(encoder=args.extract_preset)).to(device).eval()
    g = torch.Generator().manual_seed(0)
    n_utt, sec_max = args.extract_utts, args.extract_seconds
    lengths = torch.randint(2 * 16000, sec_max * 16000, (n_utt,), generator=g)
    waves = [torch.randn(int(n), generator=g) for n in lengths]
    audio = float(lengths.sum()) / 16000
    rows = []
    for prec in ("fp32", "bf16"):
        featurize = model_featurizer(model, "c", device=device, bf16=prec == "bf16")
        batches = [waves[i : i + args.extract_batch] for i in range(0, n_utt, args.extract_batch)]

        def run(batches=batches, featurize=featurize) -> None:
            for b in batches:
                featurize(b)

        sec = timed(run, device, 1, max(1, args.reps // 3))
        rows.append((f"extract {args.extract_preset} {prec}",
                     f"{audio / sec:.0f}x real time ({audio:.0f} s of audio, batches of "
                     f"{args.extract_batch}, layer c, incl. copy to host)", "pass"))
    return rows


def section_ddp(args: argparse.Namespace, device: torch.device):
    n_gpu = torch.cuda.device_count() if device.type == "cuda" else 0
    backend = "nccl" if n_gpu >= 2 else "gloo"
    where = f"{n_gpu} GPUs" if n_gpu else "CPU"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ddp.json"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
               "2", str(HERE / "gpu_check.py"), "--ddp-worker", "--ddp-out", str(out),
               "--ddp-backend", backend, "--device", device.type]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        t = time.perf_counter()
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=str(ROOT), env=env,
                             timeout=args.ddp_timeout)
        wall = time.perf_counter() - t
        if res.returncode != 0 or not out.exists():
            tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["no output"]
            return [(f"DDP 2 processes, {backend}", f"failed: {tail[0][:160]}", "FAIL")]
        info = json.loads(out.read_text())
    ok = "pass" if info["in_sync"] and info["finite"] else "FAIL"
    note = "" if backend == "nccl" else (" (gloo: NCCL needs one GPU per rank)" if n_gpu else "")
    return [(f"DDP 2 processes, {backend} on {where}{note}",
             f"{info['steps']} steps, loss {info['loss']:.3f}, weights equal across ranks: "
             f"{info['in_sync']}, {wall:.0f} s incl. start-up", ok)]


def ddp_worker(args: argparse.Namespace) -> None:
    """One rank of the DDP check: a tiny model, a few steps, then compare weights."""
    import torch.distributed as dist

    from cpc_seq.audio.model.cpc import ModelConfig, build_model
    from cpc_seq.losses import kstep_infonce

    dist.init_process_group(args.ddp_backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    if args.device == "cuda":
        n_gpu = torch.cuda.device_count()
        device = torch.device("cuda", rank % n_gpu)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    torch.manual_seed(0)
    model = build_model(ModelConfig(encoder="tiny", dim_c=32, n_steps=4)).to(device)
    ddp = torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None)
    opt = torch.optim.Adam(ddp.parameters(), lr=1e-3)
    gen = torch.Generator(device=device).manual_seed(rank)
    torch.manual_seed(100 + rank)  # different data per rank
    steps, loss = 3, torch.zeros(())
    for _ in range(steps):
        x = torch.randn(2, 3200, device=device)
        z, c, fl = ddp(x)
        out = kstep_infonce(model.predict(c), z, fl, negatives="cross_batch", n_negatives=8,
                            generator=gen)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        loss = out.loss.detach()
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    gathered = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(gathered, flat)
    in_sync = all(torch.equal(gathered[0], g) for g in gathered)
    if rank == 0:
        Path(args.ddp_out).write_text(json.dumps({"steps": steps, "loss": float(loss),
                                                  "in_sync": in_sync,
                                                  "finite": bool(torch.isfinite(loss))}))
    dist.destroy_process_group()


def section_max_batch(args: argparse.Namespace, device: torch.device):
    """Largest batch (doubling, then bisecting) of the paper preset that trains a step."""

    def fits(batch: int) -> bool:
        if device.type == "cuda":
            torch.cuda.empty_cache()
        try:
            step, _ = train_step_fn("paper", batch, args.window, True, device)
            step()
            _sync(device)
            return True
        except torch.OutOfMemoryError:
            return False
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()

    lo, hi, t0 = 0, args.max_batch_start, time.perf_counter()
    while hi <= args.max_batch_limit and fits(hi):
        lo, hi = hi, hi * 2
        if time.perf_counter() - t0 > args.max_batch_seconds:
            break
    capped = hi > args.max_batch_limit
    hi = min(hi, args.max_batch_limit + 1)
    while hi - lo > max(1, lo // 16) and time.perf_counter() - t0 < args.max_batch_seconds:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    limit = f" (search capped at {args.max_batch_limit})" if capped else ""
    return [(f"largest paper batch, bf16, window {args.window}",
             f">= {lo} windows ({lo * args.window / 16000:.0f} audio-s per step){limit}",
             "pass" if lo > 0 else "FAIL")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes: exercise the script")
    ap.add_argument("--tests", nargs="*", default=["tests"], help="paths for the cuda tests")
    ap.add_argument("--skip", default="", help="comma-separated sections to skip: "
                    "tests,train,extract,ddp,max_batch")
    ap.add_argument("--ddp-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--ddp-out", help=argparse.SUPPRESS)
    ap.add_argument("--ddp-backend", default="nccl", help=argparse.SUPPRESS)
    ap.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.ddp_worker:
        ddp_worker(args)
        return
    dry = args.dry_run
    if not dry and not torch.cuda.is_available():
        raise SystemExit("error: no CUDA device visible (torch.cuda.is_available() is False); "
                         "use --dry-run to exercise the script on the CPU")
    device = torch.device("cpu" if dry else "cuda")
    # sizes: the real check fits in < 8 minutes on one data-centre GPU
    args.presets = ["tiny"] if dry else ["small", "paper"]
    args.batch, args.window = (2, 3200) if dry else (32, 20480)
    args.warmup, args.reps = (1, 1) if dry else (3, 10)
    args.extract_preset = "tiny" if dry else "paper"
    args.extract_utts, args.extract_seconds, args.extract_batch = (2, 3, 2) if dry else (64, 15, 16)
    args.max_batch_start, args.max_batch_limit = (1, 2) if dry else (64, 4096)
    args.max_batch_seconds = 20 if dry else 120
    args.ddp_timeout = 300 if dry else 180
    skip = set(filter(None, args.skip.split(",")))
    t0 = time.perf_counter()
    name = "CPU (dry run)" if dry else torch.cuda.get_device_name(0)
    peak = matmul_peak(device, torch.bfloat16, 512 if dry else 8192)
    rows = [("device", f"{name}, torch {torch.__version__}, bf16 matmul peak {peak:.0f} GFLOP/s",
             "info")]
    sections = [("tests", lambda: section_tests(args)),
                ("train", lambda: section_train(args, device, peak)),
                ("extract", lambda: section_extract(args, device)),
                ("ddp", lambda: section_ddp(args, device)),
                ("max_batch", lambda: section_max_batch(args, device))]
    for key, fn in sections:
        if key in skip:
            continue
        try:
            rows += fn()
        except Exception as exc:  # one failing section must not hide the others
            rows.append((key, f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}",
                         "FAIL"))
        print(f"[{time.perf_counter() - t0:.0f} s] {key} done", file=sys.stderr, flush=True)
    print("| check | result | status |")
    print("|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} |")
    print(f"total {time.perf_counter() - t0:.0f} s")
    if any(r[2].startswith("FAIL") for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
