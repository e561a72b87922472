"""Training progress, trackers and the output folder (issue 16 items 7 and 3, train part): a
progress bar with step i/N, ETA, reward, KL and seconds per step; metrics to TensorBoard through
accelerate's tracking API; a non-empty output_dir refused unless --resume or --overwrite; a step
log that stays readable (append-only, NUL bytes and a torn tail repaired on resume)."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from rich.console import Console  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from interleave_bench.cli import app  # noqa: E402
from interleave_bench.train.checkpoints import LogRepairWarning, cut_log, read_log  # noqa: E402
from interleave_bench.train.output_dir import OutputDirError, prepare_output_dir  # noqa: E402
from interleave_bench.train.progress import StepProgress, grpo_metrics, status  # noqa: E402
from interleave_bench.train.trainer import GRPOTrainer, TrainConfig  # noqa: E402
from interleave_bench.train.warmup import WarmupConfig, WarmupTrainer  # noqa: E402
from interleave_bench.types import Interleaved, Sample, Segment  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _captured() -> tuple[Console, io.StringIO]:
    """A console that behaves as a terminal (so the bar is drawn) and writes into a buffer."""
    buf = io.StringIO()
    return Console(file=buf, force_terminal=True, width=160, color_system=None), buf


def _samples(n: int = 4) -> list[Sample]:
    words = ["The cat draws", "A red fox finds", "My friend cooks", "The chef paints"]
    return [
        Sample(id=f"s{i}", benchmark="t", input=Interleaved([Segment.of_text(words[i % 4])]))
        for i in range(n)
    ]


def _length_reward(_samples, preds):
    return [len(p.output.text) / 40 for p in preds]


def _grpo(tmp_path: Path, model: Path, name: str, **kw) -> TrainConfig:
    base = dict(
        model=str(model),
        output_dir=str(tmp_path / name),
        steps=2,
        prompts_per_step=2,
        group_size=2,
        lr=1e-3,
        beta=0.04,
        generation={"max_new_tokens": 6, "temperature": 1.0, "top_p": 1.0},
        save_final=False,
    )
    return TrainConfig(**{**base, **kw})


def _warmup(tmp_path: Path, model: Path, name: str, **kw) -> WarmupConfig:
    base = dict(
        model=str(model), output_dir=str(tmp_path / name), steps=2, batch_size=2, save=False
    )
    return WarmupConfig(**{**base, **kw})


# ---------------------------------------------------------------------- progress bar


def test_progress_line_has_step_eta_reward_kl_and_seconds_per_step():
    rec = {"step": 3, "reward_mean": 0.3125, "kl": 0.00124, "seconds": 4.0}
    line = status(3, 10, [4.0, 4.0, 4.0], grpo_metrics(rec))
    assert line == "step 3/10 ETA 0:00:28 reward 0.312 kl 0.0012 4.0 s/step"

    console, buf = _captured()
    bar = StepProgress(console, total=10, start=2, metrics=grpo_metrics)
    bar.update(rec)
    bar.stop()
    shown = buf.getvalue()
    assert "step 3/10 ETA 0:00:28 reward 0.312 kl 0.0012 4.0 s/step" in shown
    assert "━" in shown  # the bar itself


def test_no_bar_when_stderr_is_not_a_terminal():
    buf = io.StringIO()
    bar = StepProgress(Console(file=buf, force_terminal=False), 4, 0, grpo_metrics)
    bar.update({"step": 1, "reward_mean": 0.5, "kl": 0.0, "seconds": 1.0})
    bar.stop()
    assert buf.getvalue() == ""


def _scalars(logdir: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found = []
    for events in logdir.rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events.parent))
        acc.Reload()
        if tag in acc.Tags()["scalars"]:
            found += [(e.step, e.value) for e in acc.Scalars(tag)]
    return sorted(found)


def test_grpo_shows_progress_and_writes_tensorboard_scalars(tiny_text, tmp_path):
    pytest.importorskip("tensorboard")
    console, buf = _captured()
    cfg = _grpo(tmp_path, tiny_text, "tb", report_to="tensorboard")
    trainer = GRPOTrainer(cfg, reward=_length_reward, samples=_samples(), console=console)
    records = read_log(trainer.train().log_path)
    shown = buf.getvalue()
    assert "step 1/2 ETA" in shown and "step 2/2 ETA 0:00:00" in shown
    assert f"reward {records[-1]['reward_mean']:.3f} kl {records[-1]['kl']:.4f}" in shown
    assert "s/step" in shown

    logdir = tmp_path / "tb" / "trackers"
    assert list(logdir.rglob("events.out.tfevents.*"))
    rewards = _scalars(logdir, "reward_mean")
    assert [s for s, _ in rewards] == [1, 2]
    for (_, value), rec in zip(rewards, records, strict=True):
        assert value == pytest.approx(rec["reward_mean"], rel=1e-6)
    assert [s for s, _ in _scalars(logdir, "kl")] == [1, 2]


def test_warmup_shows_progress_with_loss_and_writes_tensorboard_scalars(tiny_janus, tmp_path):
    pytest.importorskip("tensorboard")
    console, buf = _captured()
    cfg = _warmup(tmp_path, tiny_janus, "wu", report_to="tensorboard")
    records = WarmupTrainer(cfg, console=console).train().records
    assert f"step 2/2 ETA 0:00:00 loss {records[-1]['loss']:.4f}" in buf.getvalue()
    losses = _scalars(tmp_path / "wu" / "trackers", "loss")
    assert [s for s, _ in losses] == [1, 2]
    assert losses[-1][1] == pytest.approx(records[-1]["loss"], rel=1e-6)


def test_report_to_is_checked_when_the_recipe_is_read():
    with pytest.raises(ValueError, match="report_to: 'tensorbord' .*did you mean tensorboard"):
        TrainConfig(model="m", output_dir="o", report_to="tensorbord")


# ---------------------------------------------------------------------- the output folder


def _old_run(out: Path) -> None:
    """What an earlier run leaves: a log, a checkpoint and a final model."""
    (out / "checkpoint-000010").mkdir(parents=True)
    (out / "checkpoint-000010" / "state.pt").write_bytes(b"old")
    (out / "final").mkdir()
    (out / "log.jsonl").write_text('{"step": 1}\n')


def test_training_into_a_run_folder_is_refused_without_resume_or_overwrite(tiny_text, tmp_path):
    _old_run(tmp_path / "tb")
    before = sorted(p.name for p in (tmp_path / "tb").iterdir())
    with pytest.raises(OutputDirError, match="not empty .*--resume .*--overwrite"):
        prepare_output_dir(tmp_path / "tb")
    trainer = GRPOTrainer(
        _grpo(tmp_path, tiny_text, "tb"), reward=_length_reward, samples=_samples()
    )
    with pytest.raises(OutputDirError, match="not empty"):  # the library path refuses too
        trainer.train()
    assert sorted(p.name for p in (tmp_path / "tb").iterdir()) == before
    assert (tmp_path / "tb" / "log.jsonl").read_text() == '{"step": 1}\n'


def test_overwrite_clears_a_run_folder_but_not_any_folder(tmp_path):
    _old_run(tmp_path / "run")
    prepare_output_dir(tmp_path / "run", overwrite=True)
    assert list((tmp_path / "run").iterdir()) == []
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("x")
    with pytest.raises(OutputDirError, match="no training run"):
        prepare_output_dir(tmp_path / "mine", overwrite=True)
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "x"
    prepare_output_dir(tmp_path / "mine", resume=True)  # resume takes a non-empty folder
    prepare_output_dir(tmp_path / "new")  # a missing or empty folder is fine
    with pytest.raises(OutputDirError, match="contradict"):
        prepare_output_dir(tmp_path / "run", resume=True, overwrite=True)


@pytest.mark.parametrize("command", ["grpo", "warmup"])
def test_cli_refuses_a_non_empty_output_dir_in_one_line(tmp_path, command):
    _old_run(tmp_path / "out")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"model: some/model\noutput_dir: {tmp_path / 'out'}\nsteps: 1\n")
    args = ["train", command, "--config", str(recipe)]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 2, result.output
    message = " ".join(result.stderr.split())
    assert "error:" in message and "is not empty" in message and "--overwrite" in message
    assert "Traceback" not in result.output
    assert (tmp_path / "out" / "checkpoint-000010" / "state.pt").read_bytes() == b"old"
    both = CliRunner().invoke(app, [*args, "--resume", "--overwrite"], catch_exceptions=False)
    assert both.exit_code == 2 and "contradict" in both.stderr


def test_cli_overwrite_starts_a_clean_run(tiny_janus, tmp_path):
    out = tmp_path / "out"
    _old_run(out)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"model: {tiny_janus}\noutput_dir: {out}\nsteps: 1\nbatch_size: 2\nsave: false\n"
    )
    args = ["train", "warmup", "--config", str(recipe), "--overwrite", "--json"]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert not (out / "checkpoint-000010").exists() and not (out / "final").exists()
    assert [r["step"] for r in read_log(out / "log.jsonl")] == [1]
    assert (out / "checkpoint-000001" / "state.pt").is_file()


# ---------------------------------------------------------------------- a readable log


def test_a_checkpoint_never_lengthens_the_log_with_nul_bytes(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text('{"step": 1}\n')
    with pytest.warns(LogRepairWarning, match="shorter than the 7844"):
        cut_log(log, 7844)
    assert log.read_bytes() == b'{"step": 1}\n'


def test_read_log_skips_nul_bytes_and_a_torn_tail_with_a_warning(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_bytes(b'{"step": 1}\n{"step": 2}\n' + b"\0" * 7844 + b'{"step": 3}\n{"ste')
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert [r["step"] for r in read_log(log)] == [1, 2, 3]
    said = " ".join(str(w.message) for w in seen)
    assert "7844 NUL bytes" in said and "cut short" in said


def test_resume_repairs_a_nul_filled_log_and_finishes(tiny_janus, tmp_path):
    cfg = _warmup(tmp_path, tiny_janus, "cut", steps=3, checkpoint_every=1)
    full = WarmupTrainer(_warmup(tmp_path, tiny_janus, "full", steps=3)).train().records
    WarmupTrainer(cfg).train(stop_after=2)
    log = tmp_path / "cut" / "log.jsonl"
    first, second = log.read_bytes().splitlines(keepends=True)
    # a crash after the size was written but not the data: the last record reads as NUL bytes
    log.write_bytes(first + b"\0" * len(second))
    with pytest.raises(ValueError):  # what the old reader did with such a log
        [json.loads(line) for line in log.read_text().splitlines() if line]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        resumed = WarmupTrainer(cfg).train(resume=True).records
    assert any(f"{len(second)} NUL bytes" in str(w.message) for w in seen)
    assert b"\0" not in log.read_bytes()
    assert [r["step"] for r in resumed] == [1, 3]  # step 2's record was lost to the crash
    assert resumed[-1]["loss"] == pytest.approx(full[2]["loss"], rel=1e-5)
