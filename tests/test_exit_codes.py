"""Exit codes that tell the truth (issue 16 items 1 and 3): 0 every item scored; 1 nothing usable
or a bad input, with no "overall" printed; 3 incomplete, with one ``incomplete:`` line saying how
many items were not scored, why, and how to finish. A command that fails before its run starts
leaves no manifest, so the corrected command is not refused as "different settings"."""

from __future__ import annotations

import json
import socket

import pytest
from fake_openai import FakeOpenAI
from helpers import run_cli
from test_score_cli import mmie_predictions, score_args

from interleave_bench.benchmarks import load_benchmark


def closed_url() -> str:
    """An endpoint on 127.0.0.1 where nothing listens: a connection is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def sample_ids() -> list[str]:
    return [s.id for s in load_benchmark("mmie:sample", None, download=False)]


def write_jsonl(path, ids: list[str]) -> None:
    rows = [{"sample_id": i, "model": "m", "output": [{"type": "text", "text": "hi"}]} for i in ids]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def structure(preds, out, *extra: str) -> list[str]:
    return ["score", "--bench", "mmie:sample", "--predictions", str(preds)] + [
        "--protocol", "structure", "--out", str(out), *extra,
    ]  # fmt: skip


def incomplete_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("incomplete:")]


@pytest.mark.parametrize(
    "content",
    [
        '{"id": "x", "answer": "hello"}\n',  # wrong keys
        "this is not json\n{also not\n",  # garbage lines
        None,  # valid records of another benchmark's ids
    ],
    ids=["wrong-keys", "garbage", "other-benchmark-ids"],
)
def test_unusable_predictions_exit_1_without_an_overall(tmp_path, content):
    preds = tmp_path / "p.jsonl"
    if content is None:
        write_jsonl(preds, ["isg-0001", "isg-0002"])
    else:
        preds.write_text(content)
    result = run_cli(*structure(preds, tmp_path / "out"))
    assert result.exit_code == 1, result.output
    assert "overall" not in result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "p.jsonl" in errors[0], result.stderr
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_missing_predictions_are_no_prediction_and_the_run_is_incomplete(tmp_path):
    ids = sample_ids()
    preds = tmp_path / "p.jsonl"
    write_jsonl(preds, ids[:-5])
    result = run_cli(*structure(preds, tmp_path / "out"))
    assert result.exit_code == 3, result.output
    [banner] = incomplete_lines(result.stderr)
    assert f"5 of {len(ids)} items not scored (5 no prediction)" in banner, banner
    lines = (tmp_path / "out" / "judgments.jsonl").read_text().splitlines()
    reasons = {j["sample_id"]: j["reason"] for j in map(json.loads, lines)}
    assert all(reasons[i] == "no prediction" for i in ids[-5:]), reasons
    assert not any("generation failed" in (r or "") for r in reasons.values())
    as_json = run_cli(*structure(preds, tmp_path / "out"), "--json")
    value = json.loads(as_json.stdout)
    assert as_json.exit_code == 3
    assert value["complete"] is False and value["not_scored"] == {"no prediction": 5}


def test_a_complete_run_exits_0_and_says_complete(tmp_path):
    preds = tmp_path / "p.jsonl"
    write_jsonl(preds, sample_ids())
    result = run_cli(*structure(preds, tmp_path / "out"), "--json")
    assert result.exit_code == 0, result.output
    value = json.loads(result.stdout)
    assert value["complete"] is True and value["not_scored"] == {}
    assert not incomplete_lines(result.stderr)


def test_a_budget_cut_run_exits_3_and_a_larger_budget_finishes(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    preds, prompts = mmie_predictions(tmp_path)
    table = tmp_path / "prices.json"
    table.write_text('{"MMIE-Score": [2.0, 8.0]}')
    out = tmp_path / "out"
    with FakeOpenAI() as server:
        args = [*score_args(server, preds, prompts, out), "--price-table", str(table)]
        cut = run_cli(*args, "--max-cost", "0")
        assert cut.exit_code == 3, cut.output
        [banner] = incomplete_lines(cut.stderr)
        assert "15 of 15 items not scored (15 over the --max-cost budget)" in banner
        assert "rerun the same command with a larger --max-cost" in banner
        done = run_cli(*args, "--max-cost", "1", "--json")
        assert done.exit_code == 0, done.output
        assert json.loads(done.stdout)["complete"] is True
        assert not incomplete_lines(done.stderr)


def test_invalid_judge_replies_are_a_result_not_an_incomplete_run(tmp_path):
    """clip_score on text-only answers: every verdict invalid ('no images'), nothing to rerun."""
    from interleave_bench.scoring import not_scored
    from interleave_bench.types import Judgment

    js = [Judgment("a", "s", "v", "invalid", reason="no images")]
    js.append(Judgment("b", "s", "v", "error", reason="judge error", metadata={"detail": "x"}))
    assert not_scored(js) == {"judge error": 1}


def test_a_score_whose_judge_is_unreachable_leaves_no_manifest(tmp_path, monkeypatch):
    """The judge preflight fails: no manifest, so the command with the right URL (another
    identity) runs in the same folder instead of being refused as 'different settings'."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    preds, prompts = mmie_predictions(tmp_path)
    out = tmp_path / "out"

    class Closed:
        url = closed_url()

    failed = run_cli(*score_args(Closed, preds, prompts, out), "--max-retries", "0")
    assert failed.exit_code == 1, failed.output
    assert not (out / "manifest.json").exists()
    with FakeOpenAI() as server:
        fixed = run_cli(*score_args(server, preds, prompts, out))
    assert fixed.exit_code == 0, fixed.output
    assert json.loads((out / "manifest.json").read_text())["command"] == "score"


def test_an_eval_whose_judge_is_unreachable_leaves_no_manifest(tiny_janus, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    prompts = tmp_path / "prompts.py"
    prompts.write_text('SA_SYSTEM_PROMPT = "S. "\nPBL_SYSTEM_PROMPT = "P. "\nMSR_PROMPT = "M. "\n')
    out = tmp_path / "run"

    def args(url: str) -> list[str]:
        return [
            "eval", "--model", str(tiny_janus), "--bench", "mmie:sample", "--limit", "1",
            "--max-new-tokens", "8", "--protocol", "mmie", "--protocol-file", str(prompts),
            "--allow-unofficial", "--judge-base-url", url, "--judge-model", "gpt-4o",
            "--max-retries", "0", "--out", str(out), "--no-report",
        ]  # fmt: skip

    failed = run_cli(*args(closed_url()))
    assert failed.exit_code == 1, failed.output
    assert not (out / "manifest.json").exists()
    with FakeOpenAI() as server:
        fixed = run_cli(*args(server.url))
    assert fixed.exit_code == 0, fixed.output
    assert (out / "manifest.json").exists()
