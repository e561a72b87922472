"""InterleavedEval: strict aspect JSON, one bounded repair, the text-aspect rule, AVG."""

import json

import pytest
from fake_openai import FakeOpenAI, Reply, user_text

from interleave_bench import load_benchmark
from interleave_bench.judges.client import JudgeConfig, OpenAIJudge
from interleave_bench.judges.engine import JudgeEngine
from interleave_bench.scorers.interleaved_eval import (
    ASPECTS,
    RUBRIC,
    InterleavedEvalScorer,
    parse_aspects,
    text_aspects_apply,
)
from interleave_bench.scorers.protocol_files import load_text_prompt
from interleave_bench.types import Prediction


def reply(**scores):
    return json.dumps({a: {"score": s, "explanation": "why"} for a, s in scores.items()})


def test_parse_aspects_strict():
    ok = reply(**{a: 3 for a in ASPECTS})
    assert parse_aspects(ok, ASPECTS)[0] == {a: 3.0 for a in ASPECTS}
    assert parse_aspects(reply(text_quality=3), ASPECTS)[1].startswith("missing aspects:")
    assert parse_aspects(reply(**{a: 6 for a in ASPECTS}), ASPECTS) == (None, "score out of range")
    assert parse_aspects(reply(**{a: 2.5 for a in ASPECTS}), ASPECTS)[1].endswith("not an integer")
    assert parse_aspects("Great answer, 5/5", ASPECTS) == (None, "no JSON object")


def test_text_aspect_rule():
    assert not text_aspects_apply("sequential_image_editing")
    assert not text_aspects_apply("subject_driven_generation")
    assert text_aspects_apply("wikihow_next_step") and text_aspects_apply(None)


def scorer(server, prompt=None):
    judge = OpenAIJudge(JudgeConfig(model="gpt-4o", base_url=server.url, backoff_base=0.01))
    return InterleavedEvalScorer(JudgeEngine(judge), prompt)


def test_scores_repair_and_avg_hand_computed():
    data = load_benchmark("interleavedbench:sample")
    by_task = {}
    for s in data:
        by_task.setdefault(s.task, s)
    samples = [
        by_task["wikihow_next_step"],
        by_task["sequential_image_editing"],
        by_task["report_generation"],
        by_task["marketing_generation"],
    ]
    preds = [Prediction(s.id, "m", s.gold) for s in samples]
    wiki, edit, report, market = (s.input.texts[0][:20] for s in samples)
    seen = {"report": 0}

    def script(body):
        text = user_text(body)
        if wiki in text:
            return Reply(
                content=reply(
                    text_quality=4,
                    perceptual_quality=3,
                    image_coherence=2,
                    text_image_coherence=5,
                    helpfulness=4,
                )
            )
        if edit in text:  # text aspects returned as 0: must be left out, not averaged
            return Reply(
                content=reply(
                    text_quality=0,
                    perceptual_quality=5,
                    image_coherence=4,
                    text_image_coherence=0,
                    helpfulness=3,
                )
            )
        if market in text:  # broken first, repaired on the one retry
            if len(body["messages"]) == 2:
                return Reply(content="Sure! Scores: 4, 4, 4, 4, 4")
            assert body["messages"][-1]["role"] == "user"
            assert "no JSON object" in body["messages"][-1]["content"]
            return Reply(content=reply(**{a: 2 for a in ASPECTS}))
        seen["report"] += 1
        return Reply(content=reply(text_quality=3))  # missing aspects, twice

    with FakeOpenAI(script) as server:
        s = scorer(server)
        js = s.score(samples, preds)
        result = s.aggregate(samples, js)
    status = {j.sample_id: j for j in js}
    rep = status[samples[2].id]
    assert rep.status == "invalid" and rep.reason.startswith("missing aspects")
    assert seen["report"] == 2  # exactly one repair attempt
    assert status[samples[1].id].scores["text_quality"] is None
    assert status[samples[3].id].metadata["repair"] == "no JSON object"
    # aspect means: tq (4, 2) = 3; pq (3, 5, 2) = 3.333; ic (2, 4, 2) = 2.667; tic (5, 2) = 3.5;
    # help (4, 3, 2) = 3 -> AVG = 15.5 / 5 = 3.1
    assert result.metadata["aspects"] == {
        "text_quality": 3.0,
        "perceptual_quality": 3.33,
        "image_coherence": 2.67,
        "text_image_coherence": 3.5,
        "helpfulness": 3.0,
    }
    assert result.overall == 3.1
    assert result.by_category["sequential_image_editing"]["aspects"]["text_quality"] is None
    assert result.by_category["sequential_image_editing"]["mean"] == 4.0
    assert result.counts == {"valid": 3, "invalid": 1, "error": 0, "total": 4}
    assert not result.comparable
    assert server.requests[0]["messages"][0]["content"] == RUBRIC


def test_supplied_prompt_sent_byte_for_byte(tmp_path):
    text = "Official-style rubric\nwith unicode: é — and {braces}\n"
    f = tmp_path / "official.txt"
    f.write_bytes(text.encode())
    prompt = load_text_prompt("official", f.read_text(encoding="utf-8"), str(f))
    data = load_benchmark("interleavedbench:sample", limit=1)
    with FakeOpenAI(lambda b: Reply(content=reply(**{a: 1 for a in ASPECTS}))) as server:
        js = scorer(server, prompt).score(list(data), [Prediction(s.id, "m", s.gold) for s in data])
    assert js[0].status == "ok"
    sent = server.requests[0]["messages"][0]["content"]
    assert sent.encode() == text.encode()


@pytest.mark.parametrize("fault", [Reply(content=""), Reply(status=400)])
def test_empty_and_failed_replies(fault):
    data = load_benchmark("interleavedbench:sample", limit=1)
    with FakeOpenAI(lambda b: fault) as server:
        js = scorer(server).score(list(data), [Prediction(s.id, "m", s.gold) for s in data])
    assert js[0].overall is None and js[0].status in ("invalid", "error")
