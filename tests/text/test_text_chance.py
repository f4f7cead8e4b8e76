"""The training log's at-chance warning (cpc_seq.tasks.kstep.KStepTask.watch_chance):
once, at a fraction of train.steps, naming the chance level 1/candidates."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from cpc_seq.engine import distributed
from cpc_seq.losses import KStepOutput
from cpc_seq.tasks.kstep import KStepTask
from cpc_seq.text.train import TextCPCTask, load_text_config, make_text_engine

ROOT = Path(__file__).resolve().parents[2]
KJV_DEV = ROOT / "data" / "text" / "kjv" / "dev"

pytestmark = pytest.mark.usefixtures("one_thread")


def _task(steps: int, window: int = 10, cpu_minutes: float = 0.0) -> KStepTask:
    task = KStepTask()
    task.cfg = SimpleNamespace(train=SimpleNamespace(steps=steps, max_cpu_minutes=cpu_minutes))
    task.ctx = SimpleNamespace(dist=distributed.DistInfo())  # type: ignore[assignment]
    task.chance_window = window
    return task


def _out(acc: float, candidates: int) -> KStepOutput:
    z = torch.zeros(3)
    return KStepOutput(loss=z.sum(), step_loss=z, step_acc=torch.full((3,), acc),
                       step_mi=z, num_candidates=candidates)


def test_warns_once_at_the_check_step_naming_chance(capsys: pytest.CaptureFixture[str]) -> None:
    task = _task(steps=100)  # check at step 20 (20 %), over steps 11..20
    msgs = [task.watch_chance(_out(0.004, 384)) for _ in range(100)]
    said = [(i + 1, m) for i, m in enumerate(msgs) if m]
    assert len(said) == 1 and said[0][0] == 20
    msg = said[0][1]
    assert "1/384 = 0.26 %" in msg and "0.40 %" in msg and "after 20 of 100 steps" in msg
    assert capsys.readouterr().err.count("still at chance") == 1


def test_no_warning_above_chance_or_after_the_check() -> None:
    task = _task(steps=100)
    assert not any(task.watch_chance(_out(0.03, 384)) for _ in range(100))  # 11.5x chance
    # only the last window counts: at chance early, learning by the check step
    task = _task(steps=100)
    outs = [_out(0.0, 384)] * 10 + [_out(0.05, 384)] * 90
    assert not any(task.watch_chance(o) for o in outs)
    # a resumed run past the check step does not check again
    task = _task(steps=100)
    task._steps_seen = 30
    assert not any(task.watch_chance(_out(0.0, 384)) for _ in range(70))


def test_short_runs_check_after_a_full_window() -> None:
    task = _task(steps=30, window=10)  # 20 % is step 6; the window needs 10 steps
    said = [i + 1 for i in range(30) if task.watch_chance(_out(0.0, 16))]
    assert said == [10]


def test_a_cpu_budget_checks_at_its_fraction(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter(range(1000))  # one CPU second per step
    monkeypatch.setattr("cpc_seq.tasks.kstep.time.process_time", lambda: float(next(clock)))
    task = _task(steps=100_000, cpu_minutes=1.0)  # 20 % of 60 s: 12 s, at step 12
    said = [(i + 1, m) for i in range(40) if (m := task.watch_chance(_out(0.0, 384)))]
    assert [i for i, _ in said] == [12]
    assert "after 0.2 of 1 CPU-minutes (12 steps)" in said[0][1]


SENT = [
    f"data.train={KJV_DEV}", "data.batch_size=4", "model.embed_dim=8", "model.dim_c=16",
    "train.steps=6", "train.log_every=2", "train.save_every=3", "train.progress=false",
    "train.threads=1", "optim.warmup_steps=2", "model.level=sentence",
    "model.encoder_layers=[[3,1,16]]", "model.n_steps=2", "data.window=4",
    "data.max_sentence_tokens=24", "tokenizer.kind=sentencepiece", "tokenizer.vocab_size=300",
    "tokenizer.train_sentences=400",
]


@pytest.mark.parametrize("factor,warned", [(1e9, True), (0.0, False)])
def test_text_training_log_carries_the_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    factor: float, warned: bool,
) -> None:
    # the engine calls the check every step; factor 1e9 makes any accuracy "at chance"
    monkeypatch.setattr(TextCPCTask, "chance_factor", factor)
    engine = make_text_engine(load_text_config(None, [*SENT, f"train.out_dir={tmp_path}"]))
    engine.run()
    err = capsys.readouterr().err
    assert (err.count("still at chance") == 1) is warned
    if warned:
        assert "after 6 of 6 steps" in err and "1/16 = 6.25 %" in err  # 4 windows x 4
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert state["task"]["steps_seen"] == 6
