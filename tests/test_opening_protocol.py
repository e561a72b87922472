"""OpenING rules with hand-computed expectations, the importers, and the judge round trip."""

import asyncio
import base64
import io
import json

import pytest
from fake_openai import FakeOpenAI, Reply, image_urls, user_text
from helpers import cli_json, run_cli
from PIL import Image

from interleave_bench import load_benchmark
from interleave_bench.judges.client import JudgeConfig, OpenAIJudge
from interleave_bench.judges.engine import JudgeEngine
from interleave_bench.scorers.opening import (
    CRITERIA,
    OpenINGPairwiseScorer,
    OpenINGScoreScorer,
    parse_criteria,
    parse_verdict,
    summarize_criteria,
)
from interleave_bench.scorers.protocol_files import load_opening_prompt
from interleave_bench.types import Interleaved, Prediction, Segment


@pytest.mark.parametrize(
    "text, expected",
    [
        ("After comparing, A is better.", ("A", None)),
        ("Verdict: B is better", ("B", None)),
        ("Tie(A better)", ("Tie(A)", None)),
        ("It is a tie: Tie(B better).", ("Tie(B)", None)),
        ("tie(a)", ("Tie(A)", None)),
        ("Both are fine.", (None, "no verdict")),
        ("A is better. On reflection B is better.", (None, "ambiguous verdict")),
        ("", (None, "empty reply")),
    ],
)
def test_parse_verdict(text, expected):
    assert parse_verdict(text) == expected


def model(i, name):
    return {"id": str(i), "name": name}


PAIRS = [
    {"data_id": "1", "model_A": model(1, "X"), "model_B": model(2, "Y"), "winner": "A"},
    {"data_id": "2", "model_A": model(1, "X"), "model_B": model(2, "Y"), "winner": "Tie(A)"},
    {"data_id": "3", "model_A": model(2, "Y"), "model_B": model(1, "X"), "winner": "B"},
    {"data_id": "4", "model_A": model(2, "Y"), "model_B": model(3, "Z"), "winner": "Tie(B)"},
    {"data_id": "5", "model_A": model(1, "X"), "model_B": model(3, "Z"), "winner": "B"},
    {"data_id": "6", "model_A": model(1, "X"), "model_B": model(3, "Z"), "winner": "C"},
    {"data_id": "5", "model_A": model(1, "X"), "model_B": model(3, "Z"), "winner": "A"},
]


def test_pairwise_win_rates_hand_computed(tmp_path):
    f = tmp_path / "gpt-judge_modelAB_results.json"
    f.write_text(json.dumps(PAIRS))
    code, rates = cli_json("aggregate", str(f), "--format", "opening-pairwise")
    assert code == 0
    # the repeated key 5_1_3 keeps the last verdict (A): X beats Z there
    assert rates["fdt"] == {"X": 1.0, "Y": 0.0, "Z": 0.5}
    assert rates["without_tie"] == {"X": 1.0, "Y": 0.0, "Z": 0.0}
    assert rates["tie_0"] == {"X": 0.75, "Y": 0.0, "Z": 0.0}
    assert rates["tie_0.5"] == {"X": 0.875, "Y": 0.25, "Z": 0.25}
    result = run_cli("aggregate", str(f), "--format", "opening-pairwise")
    assert "problem: row 5, field winner" in result.stderr


def score_row(data_id, name, values):
    return {
        "data_id": data_id,
        "model": model(0, name),
        "score": {c: {"Score": v, "Justification": "because"} for c, v in values.items()},
    }


def test_opening_scores_summary_hand_computed(tmp_path):
    c = dict(zip(CRITERIA, range(7), strict=True))  # index per criterion name
    first = {
        "Completeness": 9,
        "Content Quality": 7,
        "Content Richness": 5,
        "Correctness": 7,
        "Human Preference Alignment": 9,
        "Image-Text Coherency": 3,
        "Multi-step Consistency": 6,
    }
    second = {
        "Completeness": 4,
        "Content Quality": 8,
        "Content Richness": 5,
        "Correctness": None,
        "Human Preference Alignment": 8,
        "Image-Text Coherency": 4,
        "Multi-step Consistency": 7,
    }
    thirds = [
        {k: (1 if k == "Correctness" else 2) for k in c},
        {k: (1 if k == "Correctness" else 2) for k in c},
        {k: 2 for k in c},
    ]
    rows = [score_row("1", "M1", first), score_row("2", "M1", second)]
    rows += [score_row(str(10 + i), "M2", t) for i, t in enumerate(thirds)]
    f = tmp_path / "gpt-score_results.json"
    f.write_text(json.dumps(rows))
    code, summary = cli_json("aggregate", str(f), "--format", "opening-scores")
    assert code == 0
    assert summary["M1"] == {
        "Completeness": 6.5,
        "Content Quality": 7.5,
        "Content Richness": 5.0,
        "Correctness": 7.0,
        "Human Preference Alignment": 8.5,
        "Image-Text Coherency": 3.5,
        "Multi-step Consistency": 6.5,
        "Overall": 6.36,
    }
    assert summary["M2"]["Correctness"] == 1.33 and summary["M2"]["Overall"] == 1.9


def test_overall_uses_rounded_criterion_means():
    # criterion means 0.125 -> 0.12 (half-even on the float) and 0.335 -> 0.34 (float repr)
    rows = [("M", {"a": 0.125}), ("M", {"b": 0.335})]
    out = summarize_criteria(rows)["M"]
    assert out["Overall"] == round((out["a"] + out["b"]) / 2, 2)


def test_mmie_feedback_import_hand_computed(tmp_path):
    rows = [
        {"id": "SA-1", "model": "m", "gpt_feedback": "### Score\n4"},
        {"id": "SA-2", "model": "m", "gpt_feedback": "### Score: 4.5"},
        {"id": "PBL-1", "model": "m", "gpt_feedback": "### Feedback\nok\n### Score 6"},
        {"id": "MSR-1", "model": "m", "gpt_feedback": "### Score 7"},
        {"id": "MSR-2", "model": "m", "gpt_feedback": "no score at all"},
        {"id": "X-1", "model": "m", "gpt_feedback": "### Score 1"},
        {"model": "m", "gpt_feedback": "### Score 1"},
    ]
    f = tmp_path / "eval_result.json"
    f.write_text(json.dumps(rows))
    code, r = cli_json("aggregate", str(f), "--format", "mmie-feedback")
    assert code == 0
    assert r["overall"] == 3.75 and r["overall_percent"] == 62.5
    assert r["by_category"]["situational_analysis"]["mean"] == 4.0
    assert r["by_category"]["project_based_learning"] == {"mean": 6.0, "n": 1}
    assert "multi_step_reasoning" not in r["by_category"]
    assert r["counts"] == {"valid": 4, "invalid": 2, "error": 0, "total": 6}
    assert r["invalid_reasons"] == {"no score": 1, "score out of range": 1}


def test_aggregate_bad_file_is_clear(tmp_path):
    f = tmp_path / "x.json"
    f.write_text("{not json")
    result = run_cli("aggregate", str(f), "--format", "opening-scores")
    assert result.exit_code == 1 and "x.json" in result.stderr and "invalid JSON" in result.stderr
    assert run_cli("aggregate", str(f), "--format", "nope").exit_code == 2


def test_parse_criteria_strict():
    full = {c: {"Score": 7, "Justification": "x"} for c in CRITERIA}
    assert parse_criteria("```json\n" + json.dumps(full) + "\n```")[0]["Correctness"] == 7.0
    partial = dict(full)
    partial.pop("Completeness")
    assert parse_criteria(json.dumps(partial)) == (None, "missing criteria: Completeness")
    bad = dict(full, Correctness={"Score": 11})
    assert parse_criteria(json.dumps(bad)) == (None, "score out of range")
    assert parse_criteria("{oops}") == (None, "invalid JSON")
    assert parse_criteria("I refuse.") == (None, "no JSON object")


def engine(server):
    return JudgeEngine(
        OpenAIJudge(JudgeConfig(model="gpt-4o", base_url=server.url, backoff_base=0.01))
    )


def prompt(tmp_path, kind, text):
    f = tmp_path / f"{kind}.txt"
    f.write_text(text)
    return load_opening_prompt(kind, f, allow_unofficial=True)


def test_pairwise_judging_with_swap(tmp_path):
    data = load_benchmark("opening:sample", limit=3)
    samples = list(data)
    good = [Prediction(s.id, "good", s.gold) for s in samples]
    bad = [Prediction(s.id, "bad", Interleaved([Segment.of_text("no idea")])) for s in samples]

    def script(body):
        text = user_text(body)
        if samples[2].input.text.split()[0] in text and "Answer of Model A]\nno idea" in text:
            return Reply(content="Hard to say.")
        a_part = text.split("[Answer of Model A]")[1].split("[Answer of Model B]")[0]
        return Reply(content="B is better" if "no idea" in a_part else "A is better")

    with FakeOpenAI(script) as server:
        s = OpenINGPairwiseScorer(
            engine(server), prompt(tmp_path, "judge_system", "Judge A vs B."), swap=True
        )
        js = asyncio.run(s.ascore_pairs(samples, good, bad))
    assert len(js) == 6 and len(server.requests) == 6
    ok = [j for j in js if j.status == "ok"]
    assert all(j.metadata["winner"] == "A" for j in ok)  # mapped back to the original order
    invalid = [j for j in js if j.status == "invalid"]
    assert len(invalid) == 1 and invalid[0].reason == "no verdict" and invalid[0].overall is None
    rates = OpenINGPairwiseScorer.rates(js)
    assert rates["fdt"] == {"bad": 0.0, "good": 1.0}
    body = server.requests[0]
    assert body["messages"][0] == {"role": "system", "content": "Judge A vs B."}
    urls = image_urls(body)
    assert urls and all(u.startswith("data:image/jpeg;base64,") for u in urls)
    img = Image.open(io.BytesIO(base64.b64decode(urls[0].split(",", 1)[1])))
    assert img.size == (512, 512)
    assert "<IMG_1>" in user_text(body) and "</IMG_1>" in user_text(body)


def test_score_judging_invalid_json_and_missing_aspects(tmp_path):
    data = load_benchmark("opening:sample", limit=3)
    samples = list(data)
    preds = [Prediction(s.id, "m", s.gold) for s in samples]
    full = {c: {"Score": 8, "Justification": "x"} for c in CRITERIA}
    partial = {c: v for c, v in full.items() if c != "Correctness"}
    replies = iter([json.dumps(full), json.dumps(partial), "not json"])
    with FakeOpenAI(lambda body: Reply(content=next(replies))) as server:
        s = OpenINGScoreScorer(engine(server), prompt(tmp_path, "detailed_score_system", "Score."))
        js = s.score(samples, preds)
    assert sorted(j.status for j in js) == ["invalid", "invalid", "ok"]
    assert {j.reason for j in js if j.status == "invalid"} == {
        "missing criteria: Correctness",
        "no JSON object",
    }
    assert OpenINGScoreScorer.summary(js)["m"]["Overall"] == 8.0
    assert all(b["response_format"] == {"type": "json_object"} for b in server.requests)
