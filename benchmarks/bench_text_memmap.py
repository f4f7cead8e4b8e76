"""Text token cache at scale: build time, restart time and peak memory per corpus size.

    python benchmarks/bench_text_memmap.py                      # 10 M and 100 M tokens
    python benchmarks/bench_text_memmap.py --sizes 10M,100M,1B --in-memory-max 0

Corpora are made cheaply from the embedded KJV training text (``data/text/kjv/train``,
made by ``scripts/make_text_corpus.py``): each size is a directory of symbolic links to
its 66 books, repeated under new names until the size (in byte tokens) is reached, so a
100 M-token corpus costs a few thousand links and no disk. Every measurement runs in a
fresh process (its peak RSS is its own):

- ``build``: the cache built from scratch (``get_token_cache``; tokenising and writing),
  its time and peak RSS;
- ``restart``: a new training process on the built cache: time from process start to its
  first batch (imports, model, cache opened, the epoch's window plan, the first windows
  read), the time of ``--steps`` training steps, and the process's peak RSS;
- ``in-memory``: the same run with ``data.token_cache=false`` (the whole corpus read and
  tokenised into memory at every start), for sizes up to ``--in-memory-max`` tokens.

Model: the small token-level model of the tests (byte tokens, window 128, batch 8), so
the figures show the data layer rather than the network.
"""

from __future__ import annotations

import time

T0 = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
KJV = ROOT / "data" / "text" / "kjv" / "train"


def parse_size(s: str) -> int:
    s = s.strip().upper()
    mult = {"K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9}
    return int(float(s[:-1]) * mult[s[-1]]) if s[-1] in mult else int(s)


def make_corpus(d: Path, tokens: int) -> Path:
    """A directory of links to the KJV books, enough copies for ``tokens`` byte tokens."""
    books = sorted(KJV.glob("*.txt"))
    per_copy = sum(b.stat().st_size for b in books)
    copies = max(1, math.ceil(tokens / per_copy))
    d.mkdir(parents=True, exist_ok=True)
    for c in range(copies):
        for b in books:
            link = d / f"c{c:05d}-{b.name}"
            if not link.exists():
                link.symlink_to(b.resolve())
    return d


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _args(corpus: Path, out: Path, steps: int, cached: bool) -> list[str]:
    return [f"data.train={corpus}", f"train.out_dir={out}", f"train.steps={steps}",
            f"data.token_cache={'true' if cached else 'false'}", "data.window=128",
            "data.batch_size=8", "model.level=token", "model.embed_dim=8", "model.dim_c=16",
            "model.encoder_layers=[[2,2,16],[2,2,16]]", "model.n_steps=3",
            "train.progress=false", "train.threads=1", "train.log_every=1000",
            "train.save_every=100000", "optim.warmup_steps=2"]


def child(mode: str, corpus: Path, out: Path, steps: int) -> None:
    """One measurement in this (fresh) process; prints one JSON line."""
    if mode == "build":
        from cpc_seq.text.data import list_text_files
        from cpc_seq.text.token_cache import ReadOptions, cache_roots, get_token_cache
        from cpc_seq.text.tokenizers import ByteTokenizer

        files = list_text_files(str(corpus))
        t = time.perf_counter()
        cache = get_token_cache(files, ByteTokenizer(), "token", ReadOptions(),
                                cache_roots(files, None, out), progress=False)
        print(json.dumps({"tokens": cache.meta["n_tokens"], "files": len(files),
                          "seconds": time.perf_counter() - t, "rss": peak_rss_mib(),
                          "disk": (cache.path / "tokens.bin").stat().st_size}))
        return
    from cpc_seq.text.train import load_text_config, make_text_engine

    engine = make_text_engine(load_text_config(None, _args(corpus, out, steps,
                                                           mode == "restart")))
    ready = time.perf_counter() - T0
    task, first = engine.task, []
    gather = task.next_batch

    def timed_batch():  # the first batch's windows read: the run is under way
        out = gather()
        if not first:
            first.append(time.perf_counter() - T0)
        return out

    task.next_batch = timed_batch
    t = time.perf_counter()
    engine.run()
    print(json.dumps({"ready": ready, "first": first[0], "steps_s": time.perf_counter() - t,
                      "rss": peak_rss_mib()}))


def run_child(mode: str, corpus: Path, out: Path, steps: int) -> dict[str, float]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", mode, "--corpus",
           str(corpus), "--out", str(out), "--steps", str(steps)]
    res = subprocess.run(cmd, capture_output=True, text=True, env={
        **__import__("os").environ, "OMP_NUM_THREADS": "1"})
    if res.returncode != 0:
        sys.exit(f"{mode} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="10M,100M", help="corpus sizes in tokens, e.g. 10M,100M")
    p.add_argument("--steps", type=int, default=20, help="training steps per restart")
    p.add_argument("--in-memory-max", default="10M",
                   help="also time the in-memory store up to this many tokens (0 = never)")
    p.add_argument("--work", default=None, help="working directory (default: a temporary one)")
    p.add_argument("--keep", action="store_true", help="keep the working directory")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--corpus", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        child(a.child, Path(a.corpus), Path(a.out), a.steps)
        return
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="bench_text_memmap."))
    mem_max = parse_size(a.in_memory_max)
    rows = []
    try:
        for size in a.sizes.split(","):
            n = parse_size(size)
            corpus = make_corpus(work / f"corpus-{size}", n)
            b = run_child("build", corpus, work / f"out-{size}-build", a.steps)
            r = run_child("restart", corpus, work / f"out-{size}-restart", a.steps)
            m = (run_child("in-memory", corpus, work / f"out-{size}-mem", a.steps)
                 if n <= mem_max else None)
            rows.append((size, b, r, m))
            print(f"{size}: {json.dumps({'build': b, 'restart': r, 'in-memory': m})}",
                  file=sys.stderr)
    finally:
        if not a.keep and not a.work:
            shutil.rmtree(work, ignore_errors=True)
    print(f"token cache, {a.steps} training steps per restart (byte tokens, window 128, "
          "batch 8)\n")
    print("| corpus | tokens | files | cache on disk | build | build peak RSS | restart to "
          "first batch | steps | peak RSS (cache) | in memory: start to first batch | "
          "in memory: peak RSS |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for size, b, r, m in rows:
        mem = (f"{m['first']:.1f} s | {m['rss']:.0f} MiB" if m else "- | -")
        print(f"| {size} | {b['tokens']:,} | {b['files']:,} | {b['disk'] / 2**20:.0f} MiB | "
              f"{b['seconds']:.1f} s | {b['rss']:.0f} MiB | {r['first']:.1f} s | "
              f"{r['steps_s']:.1f} s | {r['rss']:.0f} MiB | {mem} |")


if __name__ == "__main__":
    main()
