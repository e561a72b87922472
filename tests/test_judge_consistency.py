"""`ibench judge consistency`: a finished `ibench score` run re-judged K times against the stand-in
judge server, whose score moves with the request seed for some items and never for others."""

import hashlib
from collections import defaultdict

import pytest
from fake_openai import FakeOpenAI, Reply, user_text
from helpers import cli_json, run_cli
from test_score_cli import mmie_predictions, score_args

KEY = "sk-test-consistency"
STEADY = 4.0  # what the judge says at seed 0 (the run) and always on a steady item


def _score(body) -> float:
    """Deterministic: a third of the items (by prompt hash) never move; the others move with
    the seed (consecutive seeds always give different scores)."""
    h = int(hashlib.sha256(user_text(body).encode()).hexdigest(), 16)
    seed = body.get("seed")
    if h % 3 == 0 or not seed:
        return STEADY
    return float(1 + (seed + h) % 6)


def _script(body) -> Reply:
    return Reply(f"### Feedback\nSeeded.\n### Score\n{_score(body):g}")


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """One scored MMIE run (15 items, seed 0) and the server that judged it, kept running."""
    tmp = tmp_path_factory.mktemp("consistency")
    with pytest.MonkeyPatch.context() as mp, FakeOpenAI(_script) as server:
        mp.setenv("OPENAI_API_KEY", KEY)
        preds, prompts = mmie_predictions(tmp)
        run = tmp / "run"
        code, _ = cli_json(*score_args(server, preds, prompts, run))
        assert code == 0
        yield run, server


def _consistency(run, *args):
    return cli_json("judge", "consistency", str(run), *args)


def test_repeats_bypass_the_cache_with_recorded_seeds(scored):
    run, server = scored
    cache = (run / "judgments.sqlite").read_bytes()
    before = len(server.requests)
    code, res = _consistency(run, "--repeats", "3", "--sample", "4", "--seed", "5")
    sent = server.requests[before:]
    assert code == 0
    assert res["seeds"] == [5, 6, 7] and res["repeats"] == 3
    assert len(sent) == 12  # 4 items x 3 repeats, every one sent: no cache, no preflight
    by_prompt = defaultdict(list)
    for body in sent:
        by_prompt[user_text(body)].append(body)
    assert len(by_prompt) == 4
    assert all(sorted(b["seed"] for b in bs) == [5, 6, 7] for bs in by_prompt.values())
    # each item's scores are what the judge said for that prompt at seeds 5, 6, 7
    expected = sorted(
        [_score(b) for b in sorted(bs, key=lambda b: b["seed"])] for bs in by_prompt.values()
    )
    assert sorted(it["scores"] for it in res["items"]) == expected
    moved = [s for s in expected if len(set(s)) > 1]
    assert res["n"] == 4 and res["share_changed"] == len(moved) / 4
    variances = [sum((x - sum(s) / 3) ** 2 for x in s) / 3 for s in expected]
    assert res["mean_variance"] == pytest.approx(sum(variances) / 4, rel=1e-12)
    assert all(it["original"] == STEADY for it in res["items"])  # the run's own verdicts
    assert all(it["changed"] == (len(set(it["scores"])) > 1) for it in res["items"])
    assert res["counts"] == {"ok": 12, "invalid": 0, "error": 0} and res["not_scored"] == {}
    assert (run / "judgments.sqlite").read_bytes() == cache  # the run's files are untouched
    # the same seed picks the same items
    _, again = _consistency(run, "--repeats", "2", "--sample", "4", "--seed", "5")
    assert [i["sample_id"] for i in again["items"]] == [i["sample_id"] for i in res["items"]]


def test_estimate_sends_nothing_and_the_budget_stops_the_repeats(scored, tmp_path):
    run, server = scored
    prices = tmp_path / "prices.json"
    prices.write_text('{"MMIE-Score": [2.0, 8.0]}')
    before = len(server.requests)
    code, est = _consistency(
        run, "--repeats", "2", "--sample", "4", "--estimate", "--price-table", str(prices)
    )
    assert code == 0 and len(server.requests) == before
    assert est["requests"] == 8 and est["items"] == 4 and est["priced"] is True
    budget = est["cost_max"] / 2  # room for about half the requests at their upper bound
    code, res = _consistency(
        run, "--repeats", "2", "--sample", "4", "--price-table", str(prices),
        "--max-cost", f"{budget:.8f}", "--concurrency", "2",
    )  # fmt: skip
    sent = len(server.requests) - before
    assert code == 3  # incomplete: the budget left items without a verdict
    assert 0 < sent < 8 and res["judge_stats"]["cost"] <= budget
    assert res["counts"]["error"] == 8 - sent
    assert res["not_scored"] == {"over the --max-cost budget": 8 - sent}


def test_bad_run_folder_and_usage_errors(scored, tmp_path):
    run, _ = scored
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run_cli("judge", "consistency", str(empty), "--repeats", "2", "--sample", "1")
    assert r.exit_code == 1 and "no manifest.json" in r.stderr and "Traceback" not in r.output
    r = run_cli("judge", "consistency", str(run), "--repeats", "1", "--sample", "1")
    assert r.exit_code == 2


def test_a_protocols_own_settings_are_part_of_the_run_and_rejudged_as_run(tmp_path):
    """``ScoreConfig.extra`` (e.g. ISG's dependency rule) is in the run's identity, so a rerun
    with another setting is refused rather than mixed in, and consistency re-judges with it."""
    import json

    from interleave_bench.judges.consistency import ConsistencyConfig, score_config
    from interleave_bench.scoring import ScoreConfig, score_identity

    opts = ScoreConfig(
        bench="isg:sample", predictions=tmp_path / "p", protocol="isg", out=tmp_path / "run",
        extra={"isg_dependencies": "answered"},
    )  # fmt: skip
    ident = score_identity(opts)
    assert ident["extra"] == {"isg_dependencies": "answered"}
    assert "extra" not in score_identity(
        ScoreConfig("isg:sample", opts.predictions, "isg", opts.out)
    )
    (tmp_path / "p").mkdir()
    opts.out.mkdir()
    manifest = {"command": "score", "identity": {**ident, "judge_model": "j"}}
    (opts.out / "manifest.json").write_text(json.dumps(manifest))
    again = score_config(ConsistencyConfig(run=opts.out, repeats=2, sample=1))
    assert again.extra == {"isg_dependencies": "answered"} and again.protocol == "isg"
