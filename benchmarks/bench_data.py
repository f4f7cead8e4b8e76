"""How the audio data path grows with corpus size: index, restart, memory, loader speed.

Builds synthetic Kaldi data dirs of 1, 10, 100 and 1,000 listed hours cheaply (many
``wav.scp`` entries pointing at a few real 12-s files of the embedded corpus's speech, 100
utterances per speaker, as LibriSpeech's 960 h are 281 k utterances of ~12 s), then
prints one row per size:

- index build time (headers read, ``utt2num_samples`` written) and its peak RSS;
- data start-up: from the cached index to the first batch read (index tables, the first
  epoch's plan, one batch of audio): the part of a restart that grows with the corpus;
- restart-to-first-step: wall time of ``cpc-seq audio train ... train.steps=1`` on the cached
  index (the whole process: Python and torch start-up, model construction, one step);
- peak RSS of 50 training steps (tiny encoder, batch 8 x 20480 samples, 2 loader
  workers) at 1 rank, and per rank at 2 ranks under torchrun (gloo);

and, once, loader throughput from disk (WAV and FLAC) with 1 and 2 workers in
audio-seconds per second per worker, next to the rate at which the ``small`` preset's
training step consumes audio on this machine, and the phone probe's peak RSS on 10 h and
100 h of features (``benchmarks/bench_probe_memory.py``, when present).

    python benchmarks/bench_data.py                       # all sizes (~15 min on 2 cores)
    python benchmarks/bench_data.py --hours 1 10 --no-ranks2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

UTT_SECONDS = 12.0
UTTS_PER_SPEAKER = 100

# Runs the CLI in this process and prints its peak RSS (and its children's) as JSON.
RSS_RUNNER = r"""
import json, os, resource, sys, time
t0 = time.perf_counter()
from cpc_seq.cli import main
code = main(sys.argv[1:])
me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print("RSS " + json.dumps({"rank": int(os.environ.get("RANK", 0)), "rss_mib": me,
      "workers_rss_mib": kids, "wall_s": time.perf_counter() - t0}), flush=True)
sys.exit(code)
"""


def real_files(out: Path, n_files: int = 4) -> dict[str, list[Path]]:
    """``n_files`` 12-s files of real speech (the embedded corpus), as WAV and as FLAC."""
    out.mkdir(parents=True, exist_ok=True)
    src = sorted((ROOT / "data" / "tiny" / "audio").glob("*.flac"))
    files: dict[str, list[Path]] = {"wav": [], "flac": []}
    pos = 0
    for i in range(n_files):
        parts, have = [], 0
        while have < UTT_SECONDS * 16000:
            x, sr = sf.read(src[pos % len(src)], dtype="float32")
            assert sr == 16000
            parts.append(x)
            have += len(x)
            pos += 1
        x = np.concatenate(parts)[: int(UTT_SECONDS * 16000)]
        for fmt in ("wav", "flac"):
            p = out / f"real{i}.{fmt}"
            if not p.exists():
                sf.write(p, x, 16000, subtype="PCM_16")
            files[fmt].append(p)
    return files


def synthetic_dir(out: Path, hours: float, files: list[Path]) -> Path:
    """A Kaldi data dir listing ``hours`` of audio as entries pointing at ``files``."""
    d = out / f"{hours:g}h-{files[0].suffix[1:]}"
    if (d / "spk2utt").exists():
        return d
    d.mkdir(parents=True, exist_ok=True)
    n = max(1, int(round(hours * 3600 / UTT_SECONDS)))
    utts = [f"spk{i // UTTS_PER_SPEAKER:05d}-utt{i:07d}" for i in range(n)]
    with open(d / "wav.scp", "w") as f:
        f.writelines(f"{u} {files[i % len(files)]}\n" for i, u in enumerate(utts))
    with open(d / "utt2spk", "w") as f:
        f.writelines(f"{u} {u.split('-')[0]}\n" for u in utts)
    with open(d / "spk2utt", "w") as f:
        for s in range(0, n, UTTS_PER_SPEAKER):
            f.write(f"{utts[s].split('-')[0]} {' '.join(utts[s : s + UTTS_PER_SPEAKER])}\n")
    return d


def _env(threads: int) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=str(threads))


def index_build(d: Path) -> tuple[float, float]:
    """Seconds and peak RSS (MiB) to build the index of ``d`` from scratch."""
    for name in ("utt2num_samples", "utt2dur", ".utt2num_samples.json"):
        (d / name).unlink(missing_ok=True)
    code = ("import resource, sys, time; t = time.perf_counter();"
            "from cpc_seq.audio.data.index import load_index;"
            f"i = load_index({str(d)!r}, 16000, progress=False);"
            "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF)"
            ".ru_maxrss / 1024)")
    out = subprocess.run([sys.executable, "-c", code], env=_env(1), check=True,
                         capture_output=True, text=True).stdout.split()
    return float(out[0]), float(out[1])


DATA_STARTUP = r"""
import sys, time
import numpy as np, torch
from cpc_seq.audio.data.loader import index_plan
from cpc_seq.audio.data.spans import SpanReader
from cpc_seq.audio.train import load_audio_index
t = time.perf_counter()
idx = load_audio_index(sys.argv[1], 20480, "pad", False, 16000, False, "train")
reader = SpanReader(idx)
start, length = index_plan(reader, 20480, 8, 0, pack=False).epoch_plan(0)
reader.read_spans(start[0].numpy(), length[0].numpy(), 20480)
print(time.perf_counter() - t)
"""


def data_startup(d: Path) -> float:
    """Seconds from a cached index to the first batch read: index tables, plan of the
    first epoch, one batch of audio (what grows with the corpus in a restart)."""
    out = subprocess.run([sys.executable, "-c", DATA_STARTUP, str(d)], env=_env(1),
                         check=True, capture_output=True, text=True).stdout
    return float(out.split()[-1])


def train_args(d: Path, out: Path, steps: int) -> list[str]:
    return ["train", "model.encoder=tiny", f"data.train={d}", "data.dev=null",
            "data.batch_size=8", "data.window=20480", "data.num_workers=2",
            f"train.steps={steps}", "train.progress=false", "train.log_every=10",
            "train.eval_every=100000", "train.save_every=100000", "train.precision=fp32",
            "train.threads=1", "optim.warmup_steps=2", f"train.out_dir={out}",
            "train.overwrite=true"]


def run_rss(args: list[str], ranks: int) -> list[dict]:
    """Run the CLI (under torchrun when ``ranks`` > 1); each rank's peak RSS and wall."""
    if ranks == 1:
        cmd = [sys.executable, "-c", RSS_RUNNER, *args]
    else:
        runner = Path("/tmp/cpc_seq_rss_runner.py")
        runner.write_text(RSS_RUNNER)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={ranks}", str(runner), *args]
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=_env(1), capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    rows = [json.loads(line[4:]) for line in proc.stdout.splitlines()
            if line.startswith("RSS ")]
    for r in rows:
        r["process_wall_s"] = wall
    return sorted(rows, key=lambda r: r["rank"])


def loader_rate(d: Path, workers: int, batches: int = 60) -> float:
    """Audio-seconds per second per worker that the training loader reads from ``d``."""

    from cpc_seq.audio.data.index import load_index
    from cpc_seq.audio.data.loader import WindowLoader, index_plan
    from cpc_seq.audio.data.spans import SpanReader

    idx = load_index(d, 16000, progress=False).by_speaker()
    reader = SpanReader(idx)
    loader = WindowLoader(reader, index_plan(reader, 20480, 8, 0, pack=False), num_workers=workers,
                          prefetch=8)
    loader.next()  # workers started
    t = time.perf_counter()
    for _ in range(batches):
        loader.next()
    sec = time.perf_counter() - t
    loader.close()
    return batches * 8 * 20480 / 16000 / sec / max(workers, 1)


def step_rate() -> float:
    """Audio-seconds per second the ``small`` preset's training step consumes here
    (batch 8 x 20480, bf16 autocast where the CPU has it, else fp32)."""
    import torch

    from cpc_seq.audio.model.cpc import build_model, preset_config
    from cpc_seq.engine.device import use_bf16
    from cpc_seq.losses import kstep_infonce

    torch.manual_seed(0)
    model = build_model(preset_config("small"))
    opt = torch.optim.Adam(model.parameters(), 2e-4)
    x = torch.randn(8, 20480)
    bf16 = use_bf16("auto", torch.device("cpu"))

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            z, c, fl = model(x)
            loss = kstep_infonce(model.predict(c), z, fl).loss
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    t = time.perf_counter()
    for _ in range(3):
        step()
    return 3 * 8 * 20480 / 16000 / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hours", type=float, nargs="+", default=[1, 10, 100, 1000])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--out", type=Path, default=Path("/tmp/cpc_seq_bench_data"))
    ap.add_argument("--no-ranks2", action="store_true", help="skip the 2-rank runs")
    ap.add_argument("--no-loader", action="store_true", help="skip the loader speed rows")
    ap.add_argument("--probe-hours", type=float, nargs="*", default=[10, 100],
                    help="hours of features for the phone probe's memory rows (none: skip)")
    args = ap.parse_args()
    files = real_files(args.out / "audio")
    print("| listed hours | utterances | index build | index RSS | data start-up | restart to step 1 | "
          "peak RSS, 50 steps, 1 rank | per rank, 2 ranks | loader workers' RSS |")
    print("|---|---|---|---|---|---|---|---|---|")
    for hours in args.hours:
        d = synthetic_dir(args.out, hours, files["flac"])
        n = sum(1 for _ in open(d / "wav.scp"))
        build_s, build_rss = index_build(d)
        startup = data_startup(d)
        restart = run_rss(train_args(d, args.out / "run", 1), 1)[0]
        one = run_rss(train_args(d, args.out / "run", args.steps), 1)[0]
        two = ("–" if args.no_ranks2 else " / ".join(
            f"{r['rss_mib']:.0f}" for r in run_rss(train_args(d, args.out / "run2",
                                                               args.steps), 2)) + " MiB")
        print(f"| {hours:g} | {n:,} | {build_s:.1f} s | {build_rss:.0f} MiB | "
              f"{startup:.1f} s | {restart['process_wall_s']:.1f} s | {one['rss_mib']:.0f} MiB | {two} | "
              f"{one['workers_rss_mib']:.0f} MiB |", flush=True)
    if not args.no_loader:
        step = step_rate()
        print(f"\ntraining step (small preset, batch 8 x 20480): {step:.1f} audio-s/s")
        print("| format | workers | audio-s/s per worker | x the step's rate (all workers) |")
        print("|---|---|---|---|")
        for fmt in ("wav", "flac"):
            d = synthetic_dir(args.out, 10, files[fmt])
            for w in (1, 2):
                r = loader_rate(d, w)
                print(f"| {fmt} | {w} | {r:.0f} | {r * w / step:.0f}x |", flush=True)
    probe = ROOT / "benchmarks" / "bench_probe_memory.py"
    if probe.exists() and args.probe_hours:
        print()
        subprocess.run([sys.executable, str(probe), *(f"{h:g}" for h in args.probe_hours)],
                       env=_env(2), check=False)


if __name__ == "__main__":
    main()
