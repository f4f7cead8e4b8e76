"""Peak memory of the phone probe on synthetic features of N hours.

The CPC paper's phone probe on LibriSpeech-100 reads about 30 M frames of 256-dim
features. This writes a feature set of that shape cheaply: a few real utterances
(random 256-dim float32 matrices of 8-16 s at 100 frames per second) in one ark, and an
scp with as many entries as N hours need, each pointing at one of those ark offsets
under its own utterance id, with matching frame labels (41 classes). The probe then runs
in a subprocess (``cpc-seq audio probe phone``, its own shuffle buffer) and its peak RSS is
read from the kernel's accounting of that process (``wait4``).

    python benchmarks/bench_probe_memory.py 10 100       # hours; prints a table
    python benchmarks/bench_probe_memory.py 10 --buffer-frames 200000

:func:`write_features` and :func:`probe_peak_rss` are the pieces
``benchmarks/bench_data.py`` uses.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import kaldiio
import numpy as np

FRAME_RATE = 100
DIM = 256
N_PHONES = 41
N_REAL = 16


def write_features(out: Path, hours: float, name: str = "train", dim: int = DIM,
                   seed: int = 0) -> dict[str, Path | int]:
    """Write ``out/{name}.ark`` (``N_REAL`` real matrices), ``out/{name}.scp`` (enough
    entries for ``hours`` of frames at 100 per second, pointing at those matrices),
    ``out/{name}_labels.txt`` (integer frame labels, one line per entry) and
    ``out/phones.txt``. Returns the paths and the numbers of entries and frames."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ark, scp, lab = out / f"{name}.ark", out / f"{name}.scp", out / f"{name}_labels.txt"
    real = {f"real{i:02d}": rng.standard_normal(
        (int(rng.integers(8 * FRAME_RATE, 16 * FRAME_RATE)), dim)).astype(np.float32)
        for i in range(N_REAL)}
    real_scp = out / f"{name}.real.scp"
    kaldiio.save_ark(str(ark), real, scp=str(real_scp))
    offsets = [line.split(maxsplit=1)[1] for line in real_scp.read_text().splitlines()]
    lengths = [len(m) for m in real.values()]
    label_lines = []
    for t in lengths:  # runs of 5-15 frames of one phone, like an alignment
        runs = rng.integers(5, 16, size=t // 5 + 1)
        ids = np.repeat(rng.integers(0, N_PHONES, size=len(runs)), runs)[:t]
        label_lines.append(" ".join(map(str, ids.tolist())))
    target = int(hours * 3600 * FRAME_RATE)
    frames = entries = 0
    with open(scp, "w") as fs, open(lab, "w") as fl:
        while frames < target:
            k = entries % N_REAL
            utt = f"spk{entries // 100:05d}-{entries:07d}"
            fs.write(f"{utt} {offsets[k]}\n")
            fl.write(f"{utt} {label_lines[k]}\n")
            frames += lengths[k]
            entries += 1
    (out / "phones.txt").write_text("".join(f"{i} {i}\n" for i in range(N_PHONES)))
    return {"scp": scp, "labels": lab, "phones": out / "phones.txt", "entries": entries,
            "frames": frames}


def probe_peak_rss(train: dict, test: dict, out: Path, epochs: int = 1,
                   batch_size: int = 4096, buffer_frames: int | None = None,
                   threads: int = 1) -> dict[str, float]:
    """Run ``cpc-seq audio probe phone`` on the written sets in a subprocess; returns its peak
    RSS in MiB, wall seconds and exit status."""
    cmd = [sys.executable, "-m", "cpc_seq", "audio", "probe", "phone", "--no-progress",
           "--train-feats", f"scp:{train['scp']}", "--test-feats", f"scp:{test['scp']}",
           "--labels", str(train["labels"]), "--test-labels", str(test["labels"]),
           "--phones", str(train["phones"]), "--epochs", str(epochs),
           "--batch-size", str(batch_size), "--out", str(out)]
    if buffer_frames is not None:
        cmd += ["--buffer-frames", str(buffer_frames)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    output = proc.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"probe failed ({proc.returncode}):\n{output[-2000:]}")
    return {"peak_rss_mib": usage.ru_maxrss / 1024, "seconds": time.perf_counter() - t0,
            "output": output.strip().splitlines()[-1]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("hours", nargs="+", type=float, help="training hours, e.g. 10 100")
    ap.add_argument("--test-hours", type=float, default=1.0)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--buffer-frames", type=int, default=None)
    ap.add_argument("--workdir", type=Path, default=None, help="default: a temporary dir")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_probe_") as tmp:
        work = args.workdir or Path(tmp)
        test = write_features(work / "test", args.test_hours, "test", seed=1)
        rows = []
        for hours in args.hours:
            train = write_features(work / f"train{hours:g}h", hours, "train")
            r = probe_peak_rss(train, test, work / f"probe{hours:g}h", args.epochs,
                               args.batch_size, args.buffer_frames)
            rows.append((hours, train["entries"], train["frames"], r))
            print(f"{hours:g} h: peak RSS {r['peak_rss_mib']:.0f} MiB in {r['seconds']:.0f} s "
                  f"({r['output']})", file=sys.stderr, flush=True)
    print(f"| train hours | utterances | frames ({DIM}-dim) | float32 size | peak RSS | wall |")
    print("|---|---|---|---|---|---|")
    for hours, entries, frames, r in rows:
        print(f"| {hours:g} | {entries} | {frames / 1e6:.1f} M | "
              f"{frames * DIM * 4 / 2**30:.1f} GiB | {r['peak_rss_mib'] / 1024:.2f} GiB | "
              f"{r['seconds']:.0f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
