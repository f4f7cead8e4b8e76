"""Fault injection: SIGKILL a training run and an extraction at random points, resume
after every kill, and check that nothing is lost or duplicated.

Training (tiny audio CPC on ``data/tiny/dev``, one thread): the run is killed when its
``log.jsonl`` reaches a randomly drawn step (``points`` distinct steps), then restarted
with ``--resume`` (or ``--overwrite`` when it died before its first checkpoint). After
the last restart runs to the end, ``log.jsonl`` must hold every step exactly once and
the same loss at every step as an uninterrupted run; ``last.pt`` must load after every
kill.

Extraction (MFCC of ``data/tiny/test``, one utterance per batch): killed when
``feats.scp.partial`` records a randomly drawn number of utterances, then restarted with
``--skip-existing``; after some kills a torn tail is appended to the ark and to the
progress record, as a kill in the middle of a write leaves. At the end every utterance
must be listed once in ``feats.scp`` and read back equal to an uninterrupted extraction.

    python benchmarks/fault_injection.py --points 20          # the full check, ~3-5 min
    python benchmarks/fault_injection.py --points 3 --what train

``tests/reliability/test_reliability_faults.py`` runs 3 points of each.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEV = ROOT / "data" / "tiny" / "dev"
TEST = ROOT / "data" / "tiny" / "test"

TINY_TRAIN = [
    f"data.train={DEV}", "data.window=3200", "data.batch_size=4", "model.encoder=tiny",
    "model.encoder_channels=16", "model.dim_c=16", "model.n_steps=3", "train.progress=false",
    "train.threads=1", "optim.warmup_steps=2", "train.log_every=1", "loss.n_negatives=8",
    "train.precision=fp32",
]


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")


def _cpc(*args: str) -> list[str]:
    return [sys.executable, "-m", "cpc_seq", *args]


def _in_process(*args: str) -> None:
    """The uninterrupted reference run, in this process (saves a start-up)."""
    import torch

    from cpc_seq.cli import main

    threads = torch.get_num_threads()
    try:
        rc = main(list(args))
    finally:
        torch.set_num_threads(threads)
    if rc != 0:
        raise RuntimeError(f"cpc-seq {' '.join(args)} exited {rc}")


def read_log(path: Path) -> list[tuple[int, float]]:
    """(step, train/loss) of every complete line of a ``log.jsonl`` (a torn last line,
    left by a kill, is skipped)."""
    out = []
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        out.append((int(rec["step"]), float(rec["train/loss"])))
    return out


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 300.0) -> bool:  # noqa: ANN001
    """SIGKILL ``proc`` as soon as ``ready()`` holds; False if it exited first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            return False
        if ready():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.005)
    proc.kill()
    proc.wait()
    raise TimeoutError("the run neither reached the kill point nor finished")


def train_faults(work: Path, points: int, seed: int = 0, steps: int | None = None,
                 save_every: int = 3) -> dict[str, object]:
    """Kill a tiny training run at ``points`` random steps; returns a summary dict and
    raises AssertionError on any lost, duplicated or different step."""
    from cpc_seq.io.checkpoint import load_checkpoint

    steps = steps or max(24, 2 * points + 4)
    rng = random.Random(seed)
    kill_steps = sorted(rng.sample(range(1, steps), points))
    common = [*TINY_TRAIN, f"train.steps={steps}", f"train.save_every={save_every}"]
    ref = work / "ref"
    _in_process("train", *common, f"train.out_dir={ref}")
    want = dict(read_log(ref / "log.jsonl"))
    run = work / "run"
    log = run / "log.jsonl"
    events = []
    for k in kill_steps:
        # --overwrite: a run killed before its first checkpoint is started again
        flag = ["--resume"] if (run / "last.pt").exists() else ["--overwrite"]
        proc = subprocess.Popen(_cpc("train", *common, f"train.out_dir={run}", *flag),
                                env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        killed = _kill_when(proc, lambda k=k: max((s for s, _ in read_log(log)), default=0) >= k)
        at = max((s for s, _ in read_log(log)), default=0)
        ck = load_checkpoint(run / "last.pt")["step"] if (run / "last.pt").exists() else None
        events.append({"kill_at_step": k, "killed": killed, "log_step": at, "ckpt_step": ck})
        if not killed:
            break
    if (run / "last.pt").exists() and load_checkpoint(run / "last.pt")["step"] >= steps:
        pass  # a restart ran to the end before its kill point
    else:
        flag = ["--resume"] if (run / "last.pt").exists() else ["--overwrite"]
        subprocess.run(_cpc("train", *common, f"train.out_dir={run}", *flag), env=_env(),
                       check=True, capture_output=True)
    got = read_log(log)
    got_steps = [s for s, _ in got]
    assert got_steps == list(range(1, steps + 1)), f"log steps {got_steps}"
    diff = [s for s, loss in got if loss != want[s]]
    assert not diff, f"losses differ from the uninterrupted run at steps {diff}"
    return {"steps": steps, "kills": sum(e["killed"] for e in events), "events": events}


def extract_faults(work: Path, points: int, seed: int = 0, data: Path = TEST,
                   tear: float = 0.5) -> dict[str, object]:
    """Kill an MFCC extraction at ``points`` random numbers of written utterances."""
    import kaldiio
    import numpy as np

    n_utts = len((data / "wav.scp").read_text().splitlines())
    if points > n_utts - 1:
        raise ValueError(f"{data} has {n_utts} utterances: at most {n_utts - 1} kill points")
    rng = random.Random(seed)
    kill_counts = sorted(rng.sample(range(1, n_utts), points))
    base = ["extract", "--mfcc", "--no-progress", "--batch-seconds", "0.01", str(data)]
    ref_ark, ref_scp = work / "ref.ark", work / "ref.scp"
    _in_process(*base, f"ark,scp:{ref_ark},{ref_scp}")
    ark, scp = work / "f.ark", work / "f.scp"
    partial = Path(f"{scp}.partial")

    def recorded() -> int:
        try:
            return sum(1 for ln in partial.read_text().splitlines() if len(ln.split()) == 3)
        except OSError:
            return 0

    events = []
    for i, k in enumerate(kill_counts):
        flag = ["--skip-existing"] if i else []
        proc = subprocess.Popen(_cpc(*base, *flag, f"ark,scp:{ark},{scp}"), env=_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        killed = _kill_when(proc, lambda k=k: recorded() >= k)
        torn = killed and rng.random() < tear
        if torn:  # what a kill in the middle of a write leaves behind
            with open(ark, "ab") as f:
                f.write(b"utt-torn \0BFM \4" + bytes(rng.randrange(256) for _ in range(37)))
            with open(partial, "a") as f:
                f.write(f"utt-torn {ark}:")
        events.append({"kill_at": k, "killed": killed, "recorded": recorded(), "torn": torn})
        if not killed:
            break
    subprocess.run(_cpc(*base, "--skip-existing", f"ark,scp:{ark},{scp}"), env=_env(),
                   check=True, capture_output=True)
    keys = [ln.split()[0] for ln in scp.read_text().splitlines()]
    assert len(keys) == len(set(keys)) == n_utts, f"{len(keys)} scp lines, {len(set(keys))} keys"
    got, want = dict(kaldiio.load_scp(str(scp))), dict(kaldiio.load_scp(str(ref_scp)))
    assert sorted(got) == sorted(want)
    bad = [u for u in want if not np.array_equal(got[u], want[u])]
    assert not bad, f"features differ for {bad}"
    assert not partial.exists()
    return {"utterances": n_utts, "kills": sum(e["killed"] for e in events), "events": events}


def main(argv: list[str] | None = None) -> int:
    import tempfile

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--points", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--what", choices=["train", "extract", "both"], default="both")
    ap.add_argument("--work", type=Path, default=None, help="work dir (default: a temp dir)")
    args = ap.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="cpc_faults."))
    results = {}
    t0 = time.perf_counter()
    if args.what in ("train", "both"):
        (work / "train").mkdir(parents=True, exist_ok=True)
        results["train"] = train_faults(work / "train", args.points, args.seed)
        print(f"train: {results['train']['kills']} kills over {results['train']['steps']} "
              "steps, resumed each time: every step logged once, losses identical", flush=True)
    if args.what in ("extract", "both"):
        (work / "extract").mkdir(parents=True, exist_ok=True)
        results["extract"] = extract_faults(work / "extract", args.points, args.seed)
        torn = sum(e["torn"] for e in results["extract"]["events"])
        print(f"extract: {results['extract']['kills']} kills ({torn} with a torn tail added), "
              f"resumed each time: all {results['extract']['utterances']} utterances read back "
              "once, equal to an uninterrupted run", flush=True)
    results["wall_s"] = round(time.perf_counter() - t0, 1)
    (work / "fault_injection.json").write_text(json.dumps(results, indent=1))
    print(f"details: {work / 'fault_injection.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
