"""Cost control: a budget the engine never lets in-flight requests exceed (a rerun with a larger one
finishes the run from the cache), and ``ibench score --estimate``, which sends nothing."""

import asyncio

import pytest
from fake_openai import FakeOpenAI
from helpers import cli_json
from test_score_cli import mmie_predictions, score_args

from interleave_bench.judges.cache import JudgmentCache
from interleave_bench.judges.client import JudgeConfig, OpenAIJudge
from interleave_bench.judges.engine import JudgeEngine, in_window
from interleave_bench.judges.request import JudgeRequest, Part

# gpt-4o at $2.50 / $10 per 1M tokens; 400 characters estimate as 100 input tokens
REQS = [JudgeRequest((Part.of_text(f"{i:03d}" + "x" * 397),), max_tokens=100) for i in range(10)]
ESTIMATE = (100 * 2.5 + 100 * 10) / 1e6  # 0.00125: input estimate + max_tokens of output
ACTUAL = (100 * 2.5 + 20 * 10) / 1e6  # 0.00045: the stand-in server's usage (100 in, 20 out)


def engine(server, cache, budget, concurrency=1):
    judge = OpenAIJudge(
        JudgeConfig(model="gpt-4o", base_url=server.url, concurrency=concurrency, max_retries=0)
    )
    return JudgeEngine(judge, cache, max_cost=budget)


async def ask_in_turn(eng):
    try:
        return [await eng.ask(r, protocol="p", template_sha256="t") for r in REQS]
    finally:
        await eng.aclose()


def test_budget_stops_sending_and_a_larger_one_finishes_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    assert REQS[0].approx_prompt_tokens() == 100
    cache = JudgmentCache(tmp_path / "c.sqlite")
    with FakeOpenAI() as server:
        eng = engine(server, cache, budget=0.003)
        replies = asyncio.run(ask_in_turn(eng))
        # sent while spent + next estimate <= 0.003: 4 x 0.00045 spent, then 0.0018 + 0.00125 > it
        assert len(server.requests) == 4
        assert [r.status for r in replies] == ["ok"] * 4 + ["error"] * 6
        assert "budget of $0.003" in replies[4].error and eng.stats.over_budget == 6
        assert eng.stats.cost == pytest.approx(4 * ACTUAL)
        more = engine(server, cache, budget=1.0)
        again = asyncio.run(ask_in_turn(more))
        assert len(server.requests) == 10  # only the 6 that were not sent
    assert all(r.status == "ok" for r in again) and more.stats.cache_hits == 4


def test_concurrent_requests_never_take_the_cost_past_the_budget(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with FakeOpenAI() as server:
        eng = engine(server, None, budget=0.004, concurrency=8)

        async def go():
            try:
                return await in_window(
                    (eng.ask(r, protocol="p", template_sha256="t") for r in REQS), eng.window
                )
            finally:
                await eng.aclose()

        replies = asyncio.run(go())
        sent = len(server.requests)
    # all 10 are asked before a reply can arrive: spent alone would let 8 go at once; the
    # reserved estimates of the requests in flight cap them at 3 (3 x 0.00125 <= 0.004 < 4 x)
    assert 1 <= sent == sum(r.status == "ok" for r in replies) <= 3
    assert eng.stats.cost <= 0.004 and eng.stats.over_budget == 10 - sent


def test_estimate_sends_nothing_and_counts_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    preds, prompts = mmie_predictions(tmp_path)
    out = tmp_path / "out"
    table = tmp_path / "prices.json"
    table.write_text('{"MMIE-Score": [2.0, 8.0]}')
    with FakeOpenAI() as server:
        args = [*score_args(server, preds, prompts, out), "--price-table", str(table)]
        code, est = cli_json(*args, "--estimate")
        assert code == 0 and len(server.requests) == 0 and not out.exists()
        assert est["judge"] == "MMIE-Score" and est["priced"] is True
        assert est["items"] == 15 and est["requests"] == 15 and est["cached"] == 0
        assert est["cost_input"] == pytest.approx(est["prompt_tokens"] * 2.0 / 1e6, abs=1e-6)
        assert est["cost_max"] == pytest.approx(
            est["cost_input"] + est["max_output_tokens"] * 8.0 / 1e6, abs=1e-6
        )
        code, _ = cli_json(*args, "--max-cost", "1")  # the run itself, within budget
        assert code == 0 and len(server.requests) == 16  # preflight + 15
        code, est2 = cli_json(*args, "--estimate")
        assert len(server.requests) == 16
    assert est2["cached"] == 15 and est2["requests"] == 0 and est2["cost_max"] == 0


def test_eval_takes_the_budget_too(tiny_janus, tmp_path, monkeypatch):
    """``ibench eval --max-cost 0``: generation runs, no judge request is sent, and every judge
    item is an error that says why (a rerun with a budget judges them from the same folder)."""
    import json

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    prompts = tmp_path / "prompts.py"
    prompts.write_text('SA_SYSTEM_PROMPT = "S. "\nPBL_SYSTEM_PROMPT = "P. "\nMSR_PROMPT = "M. "\n')
    with FakeOpenAI() as server:
        args = [
            "eval", "--model", str(tiny_janus), "--bench", "mmie:sample", "--limit", "2",
            "--max-new-tokens", "8", "--protocol", "mmie", "--protocol-file", str(prompts),
            "--allow-unofficial", "--judge-base-url", server.url, "--judge-model", "gpt-4o",
            "--out", str(tmp_path / "run"), "--no-report",
        ]  # fmt: skip
        code, _ = cli_json(*args, "--max-cost", "0")
        assert code == 3 and len(server.requests) == 1  # the preflight probe only; incomplete
        lines = (tmp_path / "run" / "judgments.jsonl").read_text().splitlines()
        mmie = [j for j in map(json.loads, lines) if j["scorer"] == "mmie"]
        assert len(mmie) == 2 and all(j["status"] == "error" for j in mmie)
        assert all("budget" in j["metadata"]["detail"] for j in mmie)
        code, res = cli_json(*args, "--max-cost", "1")
        assert code == 0 and len(server.requests) == 1 + 1 + 2  # preflight again, then the two
    mmie = next(r for r in res["results"] if r["scorer"] == "mmie")
    assert mmie["counts"]["valid"] == 2 and mmie["counts"]["error"] == 0


def test_estimate_for_a_local_judge_counts_without_loading_it(tmp_path):
    """A local judge is never loaded just to count (the path here holds no model at all)."""
    preds, prompts = mmie_predictions(tmp_path)
    code, est = cli_json(
        "score", "--bench", "mmie", "--predictions", str(preds), "--protocol", "mmie",
        "--protocol-file", str(prompts), "--allow-unofficial", "--out", str(tmp_path / "out"),
        "--judge-local", str(tmp_path / "no-model-here"), "--estimate",
    )  # fmt: skip
    assert code == 0 and est["requests"] == 15 and est["cost_max"] == 0 and est["priced"]
    assert est["judge"] == str(tmp_path / "no-model-here")
