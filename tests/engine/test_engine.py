"""The shared training engine gives every modality the same capabilities.

- (b) DDP: 2 gloo processes end with the same parameters as 1 process on the same global
  batch, for text CPC, DIM and AMDIM (audio: tests/engine/test_distributed.py);
- (c) ``precision: auto`` picks bf16 where the hardware has it, and the bf16 loss stays
  close to the fp32 loss, for audio, text, DIM and AMDIM;
- the architecture: the shared core never imports a modality, no modality imports
  another, the engine never imports a command-line front end.
"""

from __future__ import annotations

import ast
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cpc_seq.engine.device import use_bf16
from cpc_seq.io.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]
TOL = 1e-5  # float32 reduction order differs between 1 and 2 processes
AUDIO = [f"data.train={ROOT / 'data' / 'tiny' / 'dev'}", "data.window=3200", "data.batch_size=4",
         "model.encoder=tiny", "model.encoder_channels=16", "model.dim_c=16", "model.n_steps=3",
         "loss.negatives=cross_batch", "loss.n_negatives=8"]
TEXT = [f"data.train={ROOT / 'data' / 'text' / 'kjv' / 'dev'}", "data.batch_size=4",
        "model.embed_dim=8", "model.dim_c=16", "model.level=token",
        "model.encoder_layers=[[2,2,16],[2,2,16]]", "model.n_steps=3", "data.window=32",
        "data.short_documents=skip", "loss.negatives=all"]
COMMON = ["train.progress=false", "train.threads=1", "optim.warmup_steps=0", "train.log_every=1"]


def _image_args(kind: str, root: Path) -> list[str]:
    common = [f"kind={kind}", "data.dataset=fashion_mnist", f"data.root={root}",
              "data.batch_size=8"]
    if kind == "dim":
        return common + ["dim.ndf=4", "dim.local_channels=8", "dim.hidden=16", "dim.y_dim=8",
                         "dim.mi_dim=8", "dim.global_hidden=8", "dim.disc_hidden=8",
                         "dim.batch_norm=false"]
    return common + ["amdim.ndf=4", "amdim.n_rkhs=8", "amdim.use_bn=false"]


@pytest.fixture(scope="module")
def fashion(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from helpers.fashion import fake_fashion_mnist

    return fake_fashion_mnist(tmp_path_factory.mktemp("fm"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(args: list[str], procs: int = 1) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    launch = [sys.executable, "-m", "cpc_seq"] if procs == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(procs),
        "--master-port", str(_free_port()), "-m", "cpc_seq"]
    out = subprocess.run([*launch, *args], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]


@pytest.mark.parametrize("modality", ["text", "dim", "amdim"])
def test_two_gloo_processes_match_one(modality: str, tmp_path: Path, fashion: Path) -> None:
    if modality == "text":
        cmd, args = "text-train", [*TEXT, "loss.cross_rank=true"]
    else:
        cmd, args = "image-train", _image_args(modality, fashion)
    args = [*args, *COMMON, "train.steps=3", "train.precision=fp32"]
    _run([cmd, *args, f"train.out_dir={tmp_path / 'one'}"])
    _run([cmd, *args, f"train.out_dir={tmp_path / 'two'}"], procs=2)
    one = load_checkpoint(tmp_path / "one" / "last.pt")
    two = load_checkpoint(tmp_path / "two" / "last.pt")
    assert one["step"] == two["step"] == 3
    for name, p in one["model"].items():
        if p.is_floating_point():
            assert torch.allclose(p, two["model"][name], atol=TOL, rtol=TOL), name


def test_auto_precision_picks_bf16_where_the_hardware_has_it(tmp_path: Path) -> None:
    from cpc_seq.audio.train import load_config, make_engine

    cpu = torch.device("cpu")
    assert use_bf16("bf16", cpu) and not use_bf16("fp32", cpu)
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    has_bf16 = "avx512_bf16" in flags or "amx_bf16" in flags
    for precision, want in (("auto", has_bf16), ("fp32", False), ("bf16", True)):
        eng = make_engine(load_config(None, [*AUDIO, *COMMON, "train.steps=1",
                                             f"train.precision={precision}",
                                             f"train.out_dir={tmp_path / precision}"]))
        assert eng.bf16 is want, precision


def _first_losses(path: Path, key: str) -> list[float]:
    lines = [json.loads(x) for x in (path / "log.jsonl").read_text().splitlines()]
    return [x[key] for x in lines]


@pytest.mark.parametrize("modality", ["audio", "text", "dim", "amdim"])
def test_bf16_loss_stays_close_to_fp32(modality: str, tmp_path: Path, fashion: Path) -> None:
    from cpc_seq.cli import main

    if modality == "audio":
        cmd, args = "train", AUDIO
    elif modality == "text":
        cmd, args = "text-train", TEXT
    else:
        cmd, args = "image-train", _image_args(modality, fashion)
    losses = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        assert main([cmd, *args, *COMMON, "train.steps=2", f"train.precision={precision}",
                     f"train.out_dir={out}"]) == 0
        losses[precision] = _first_losses(out, "train/loss")
    # Same weights and batch at step 1: bf16 rounding only (2-3 significant digits).
    a, b = losses["fp32"][0], losses["bf16"][0]
    assert abs(a - b) <= 0.03 * abs(a) + 0.02, (a, b)
    assert a != b  # bf16 autocast really ran


# ---------------------------------------------------------------- architecture

CORE = ("engine", "io", "losses", "nn", "probes", "config", "errors", "cliutil")
MODALITIES = ("audio", "text", "images")


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return {n for n in names if n == "cpc_seq" or n.startswith("cpc_seq.")}


def _package_of(path: Path) -> str:
    rel = path.relative_to(ROOT / "cpc_seq")
    return rel.parts[0].removesuffix(".py")


def test_core_never_imports_a_modality_and_modalities_never_import_each_other() -> None:
    problems = []
    for path in sorted((ROOT / "cpc_seq").rglob("*.py")):
        pkg = _package_of(path)
        for mod in _imports(path):
            parts = mod.split(".")
            target = parts[1] if len(parts) > 1 else ""
            if pkg in CORE and target in (*MODALITIES, "cli", "api"):
                problems.append(f"{path.relative_to(ROOT)} (core) imports {mod}")
            if pkg in MODALITIES and target in MODALITIES and target != pkg:
                problems.append(f"{path.relative_to(ROOT)} ({pkg}) imports {mod}")
            if pkg in MODALITIES and target in ("cli", "api"):
                problems.append(f"{path.relative_to(ROOT)} ({pkg}) imports the front end {mod}")
    assert not problems, "\n".join(problems)


def test_trainers_do_not_import_the_command_line() -> None:
    for rel in ("engine/trainer.py", "audio/train.py", "text/train.py", "images/train.py"):
        mods = _imports(ROOT / "cpc_seq" / rel)
        assert not any(m.endswith(".cli") or m == "cpc_seq.cli" for m in mods), rel


def test_cpu_time_cap_stops_training_and_is_carried_across_resume(tmp_path: Path) -> None:
    from cpc_seq.audio.train import load_config, make_engine

    args = [*AUDIO, *COMMON, "train.precision=fp32", f"train.out_dir={tmp_path}"]
    eng = make_engine(load_config(None, [*args, "train.steps=50", "train.max_cpu_minutes=0.0001"]))
    eng.run()
    st = load_checkpoint(tmp_path / "last.pt")
    assert 1 <= st["step"] < 50 and st["cpu_seconds"] > 0.006
    again = make_engine(load_config(None, [*args, "train.steps=50"]), resume=True)
    assert again.cpu_seconds == st["cpu_seconds"]


def test_lr_schedule_over_steps_or_a_budget_fraction() -> None:
    from cpc_seq.engine.schedule import lr_at

    assert lr_at(0, 1.0, 10, "cosine", 110) == pytest.approx(0.1)
    assert lr_at(60, 1.0, 10, "cosine", 110) == pytest.approx(0.5)
    assert lr_at(60, 1.0, 10, "cosine", 110, progress=0.0) == pytest.approx(1.0)
    assert lr_at(60, 1.0, 10, "cosine", 110, progress=0.5) == pytest.approx(0.5)
    assert lr_at(60, 1.0, 10, "cosine", 110, progress=2.0) == pytest.approx(0.0)
    assert lr_at(5, 1.0, 10, "cosine", 110, progress=0.9) == pytest.approx(0.6)  # warm-up
    assert lr_at(60, 1.0, 10, "constant", 110, progress=0.7) == 1.0


def test_cpu_clock_decays_the_learning_rate_over_the_cpu_budget(tmp_path: Path) -> None:
    import json

    from cpc_seq.audio.train import load_config, make_engine
    from cpc_seq.errors import ConfigError

    args = [*AUDIO, *COMMON, "train.precision=fp32", f"train.out_dir={tmp_path}",
            "optim.schedule=cosine"]
    with pytest.raises(ConfigError, match="train.schedule_clock.*max_cpu_minutes"):
        load_config(None, [*args, "train.schedule_clock=cpu"])
    eng = make_engine(load_config(None, [*args, "train.steps=100000", "train.log_every=7",
                                         "train.schedule_clock=cpu", "train.max_cpu_minutes=0.01"]))
    eng.run()
    lines = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    lrs = [x["lr"] for x in lines]
    assert 1 < len(lines) < 100000 and lrs == sorted(lrs, reverse=True)
    # the last step began with most of the budget spent: its rate is near zero
    assert lrs[-1] < 0.1 * lrs[0]
    # the step the budget ended on is logged and saved
    assert lines[-1]["step"] == load_checkpoint(tmp_path / "last.pt")["step"] == eng.step


def test_every_help_shows_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    from cpc_seq.cli import main

    with pytest.raises(SystemExit):
        main(["audio", "probe", "phone", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--epochs EPOCHS (default: 20)" in out and "--lr LR (default: 0.001)" in out
