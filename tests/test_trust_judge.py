"""What a judge run can be trusted with: replies without content are never kept as judgments, and a
damaged judge cache stops the run with one line that says what to do, against a real server."""

import json
import os
import subprocess
import sys

from fake_openai import FakeOpenAI, Reply, user_text
from helpers import cli_json, run_cli
from test_score_cli import mmie_predictions, score_args

NO_CONTENT = {"treehouse": Reply(content=None), "Cactus": Reply(choices=[])}


def no_content_script(body):
    text = user_text(body)
    return next((r for needle, r in NO_CONTENT.items() if needle in text), Reply())


def sent_for(server, needle):
    return sum(needle in user_text(body) for body in server.requests)


def judgments(out):
    lines = (out / "judgments.jsonl").read_text().splitlines()
    return {j["sample_id"]: j for j in map(json.loads, lines)}


def test_reply_without_content_is_an_error_and_asked_again_on_rerun(tmp_path):
    """Empty ``choices`` or a null ``content`` used to be cached as an ok reply: a rerun served
    it from the cache and never asked again."""
    preds, prompts = mmie_predictions(tmp_path)
    out = tmp_path / "out"
    with FakeOpenAI(no_content_script) as server:
        args = score_args(server, preds, prompts, out)
        code, first = cli_json(*args)
        assert {n: sent_for(server, n) for n in NO_CONTENT} == {"treehouse": 1, "Cactus": 1}
        total = len(server.requests)
        code2, again = cli_json(*args)
        # only the two items without content are sent again; the other 13 come from the cache
        assert {n: sent_for(server, n) for n in NO_CONTENT} == {"treehouse": 2, "Cactus": 2}
        assert len(server.requests) == total + 2
    assert code == 3 and code2 == 3  # judge errors leave the run incomplete
    for result in (first, again):
        assert result["counts"] == {"valid": 13, "invalid": 0, "error": 2, "total": 15}
    assert again["metadata"]["judge_stats"]["cache_hits"] == 13
    errors = [j for j in judgments(out).values() if j["status"] == "error"]
    assert len(errors) == 2 and all(j["reason"] == "judge error" for j in errors)
    assert {j["metadata"]["detail"] for j in errors} == {
        "the reply has no content (finish_reason stop)",
        "malformed response: no choices in the reply",
    }


def test_corrupt_judge_cache_is_one_line_naming_the_file(tmp_path):
    preds, prompts = mmie_predictions(tmp_path)
    out = tmp_path / "out"
    with FakeOpenAI() as server:
        args = score_args(server, preds, prompts, out)
        assert run_cli(*args).exit_code == 0
        # killed after 5 judgments were written: a rerun must reach the cache for the rest
        done = (out / "judgments.jsonl").read_bytes().splitlines(keepends=True)
        (out / "judgments.jsonl").write_bytes(b"".join(done[:5]))
        cache = out / "judgments.sqlite"
        garbage = bytes(range(256)) * 64
        cache.write_bytes(garbage)
        for stale in out.glob("judgments.sqlite-*"):  # WAL leftovers belong to the old file
            stale.unlink()
        sent = len(server.requests)
        # a fresh process, as a user's rerun is (nothing of the first run's connection in it)
        result = subprocess.run(
            [sys.executable, "-m", "interleave_bench", *args],
            env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert len(server.requests) == sent  # nothing is asked of the judge
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stdout + result.stderr
    assert str(cache) in lines[0] and "corrupt judgment cache" in lines[0]
    assert "delete this file to re-judge" in lines[0]
    assert cache.read_bytes() == garbage  # left for the user to inspect or delete
    assert (out / "results.json").is_file()  # the finished run's results are kept
