"""MMIE-Score protocol: parse rule, flattening caps, prompt bytes on the wire, aggregation."""

import asyncio
import base64
from pathlib import Path

import pytest
from fake_openai import FakeOpenAI, Reply, image_urls, user_text
from helpers import png_bytes

from interleave_bench import load_benchmark
from interleave_bench.judges.cache import JudgmentCache
from interleave_bench.judges.client import JudgeConfig, OpenAIJudge
from interleave_bench.judges.engine import JudgeEngine
from interleave_bench.judges.internvl import PHI3_CHAT_SYSTEM
from interleave_bench.scorers import protocol_files
from interleave_bench.scorers.mmie import MMIEScorer, flatten, parse_score
from interleave_bench.scorers.protocol_files import ProtocolError, load_mmie_prompts
from interleave_bench.types import ImageRef, Interleaved, Prediction, Sample, Segment

PROMPTS_PY = """
import os
os.system("echo this file must never run")
SA_SYSTEM_PROMPT = "You judge stories. "
PBL_SYSTEM_PROMPT = ("You judge " "how-to steps. ")
MSR_PROMPT = "You judge " + "math. "
"""


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("### Feedback\ngood\n### Score\n4", (4.0, None)),
        ("### Score: 4.5", (4.0, None)),  # half to even
        ("### Score: 5.5", (6.0, None)),
        ("### Score 6.5", (6.0, None)),
        ("### Score 2.5/6", (2.0, None)),
        ("### Score\n\n**3** out of 6", (3.0, None)),
        ("Feedback says 5.\n### Score\nthree, i.e. 3", (3.0, None)),
        ("### Score\n7", (None, "score out of range")),
        ("### Score\n-1", (None, "score out of range")),
        ("### Score\n6.6", (None, "score out of range")),
        ("The answer deserves 5", (None, "no score")),
        ("### score 5", (None, "no score")),  # the marker is case-sensitive
        ("", (None, "empty reply")),
        (None, (None, "empty reply")),
    ],
)
def test_parse_rule(reply, expected):
    assert parse_score(reply) == expected


def img(tmp_path, name):
    p = tmp_path / name
    p.write_bytes(png_bytes())
    return Segment.of_image(ImageRef(path=str(p), source=name))


T = Segment.of_text


def texts(pieces):
    return "".join(p if isinstance(p, str) else "<image>" for p in pieces)


def test_flatten_caps_answer_images_and_drops_later_text(tmp_path):
    q = Interleaved([T("Q"), img(tmp_path, "q0.png")])
    a = Interleaved(
        [
            T("A1"),
            img(tmp_path, "a1.png"),
            T("A2"),
            img(tmp_path, "a2.png"),
            T("A3 dropped"),
            img(tmp_path, "a3.png"),
        ]
    )
    flat = flatten(q, a)
    assert texts(flat.question) == "Q\nImage-0: <image>\n"
    assert texts(flat.answer) == "A1\nImage-1: <image>\nA2\nImage-2: <image>\n"
    assert len(flat.images) == 3


def test_flatten_question_with_three_images_keeps_first_answer_text_only(tmp_path):
    q = Interleaved([img(tmp_path, f"q{i}.png") for i in range(3)])
    a = Interleaved([T("first"), img(tmp_path, "a.png"), T("second")])
    flat = flatten(q, a)
    assert texts(flat.question) == "Image-0: <image>\nImage-1: <image>\nImage-2: <image>\n"
    assert texts(flat.answer) == "first\n"


def test_missing_images_are_skipped_without_placeholder(tmp_path):
    q = Interleaved(
        [
            T("Q"),
            Segment.of_image(ImageRef(source="gone.png", missing=True)),
            img(tmp_path, "q.png"),
        ]
    )
    flat = flatten(q, Interleaved([T("")]))
    assert texts(flat.question) == "Q\nImage-0: <image>\n"
    assert texts(flat.answer) == "\n"


@pytest.fixture
def prompts(tmp_path):
    f = tmp_path / "prompts.py"
    f.write_text(PROMPTS_PY)
    return f


def test_protocol_file_is_read_with_ast_and_pinned(prompts, capfd, monkeypatch):
    with pytest.raises(ProtocolError, match="do not match the official SHA-256"):
        load_mmie_prompts(prompts)
    ps = load_mmie_prompts(prompts, allow_unofficial=True)
    assert ps.texts == {
        "SA_SYSTEM_PROMPT": "You judge stories. ",
        "PBL_SYSTEM_PROMPT": "You judge how-to steps. ",
        "MSR_PROMPT": "You judge math. ",
    }
    assert not ps.official and set(ps.mismatched) == set(ps.texts)
    assert "must never run" not in capfd.readouterr().out
    monkeypatch.setattr(protocol_files, "MMIE_CONSTANTS", dict(ps.hashes))
    assert load_mmie_prompts(prompts).official


def test_protocol_file_errors(tmp_path):
    bad = tmp_path / "p.py"
    bad.write_text("SA_SYSTEM_PROMPT = 'x'\nPBL_SYSTEM_PROMPT = f'{1}'\nMSR_PROMPT = 'y'\n")
    with pytest.raises(ProtocolError, match="PBL_SYSTEM_PROMPT is not a plain string"):
        load_mmie_prompts(bad, allow_unofficial=True)
    bad.write_text("SA_SYSTEM_PROMPT = 'x'\n")
    with pytest.raises(ProtocolError, match="missing PBL_SYSTEM_PROMPT, MSR_PROMPT"):
        load_mmie_prompts(bad, allow_unofficial=True)
    bad.write_text("SA_SYSTEM_PROMPT = (\n")
    with pytest.raises(ProtocolError, match="not valid Python"):
        load_mmie_prompts(bad, allow_unofficial=True)
    with pytest.raises(ProtocolError, match="offline"):
        load_mmie_prompts()


def scorer(server, prompts_file, tmp_path, model="MMIE-Score"):
    judge = OpenAIJudge(JudgeConfig(model=model, base_url=server.url, backoff_base=0.01))
    engine = JudgeEngine(judge, JudgmentCache(tmp_path / "cache.sqlite"))
    return MMIEScorer(engine, load_mmie_prompts(prompts_file, allow_unofficial=True))


def gold_predictions(samples):
    return [Prediction(s.id, "gold", s.gold) for s in samples]


def test_prompt_bytes_on_the_wire(prompts, tmp_path):
    data = load_benchmark("mmie:sample")
    samples = [data[0], next(s for s in data if s.id.startswith("MSR"))]
    with FakeOpenAI() as server:
        judgments = scorer(server, prompts, tmp_path).score(samples, gold_predictions(samples))
    assert [j.status for j in judgments] == ["ok", "ok"]
    sa = next(b for b in server.requests if "stories" in user_text(b))
    expected = (
        "You judge stories. ### Question\n"
        "Continue the story with a paragraph and an image for each step.\n"
        "A girl finds a paper boat stuck in the reeds by the pond.\nImage-0: <image>\n"
        "She unfolds it and sees a map drawn in blue ink.\nImage-1: <image>\n"
        "\n### Answer\nThe story goes on the next morning.\nImage-2: <image>\n"
        "\n### Feedback\n"
    )
    # one text part, the official string with its <image> placeholders, then the images: what
    # an InternVL server renders exactly as the model's own chat() does
    user = next(m for m in sa["messages"] if m["role"] == "user")["content"]
    assert user[0] == {"type": "text", "text": expected}
    assert [p["type"] for p in user[1:]] == ["image_url"] * 3
    assert user_text(sa) == expected + "<image>" * 3
    urls = image_urls(sa)
    assert len(urls) == 3 and all(u.startswith("data:image/jpeg;base64,") for u in urls)
    first = Path(samples[0].input.images[0].path).read_bytes()
    assert base64.b64decode(urls[0].split(",", 1)[1]) == first
    msr = next(b for b in server.requests if "math" in user_text(b))
    msr_text = next(m for m in msr["messages"] if m["role"] == "user")["content"][0]["text"]
    assert msr_text.endswith(
        "### Correct Answer\nThe correct answer to this question should be: 24\n### Feedback\n"
    )
    # the system message InternVL's phi3-chat template inserts in model.chat()
    assert sa["messages"][0] == {"role": "system", "content": PHI3_CHAT_SYSTEM}
    assert [m["role"] for m in sa["messages"]] == ["system", "user"]


def test_scoring_aggregation_and_exclusions(prompts, tmp_path):
    scores = {
        "SA-1000": "4",
        "SA-1001": "5",
        "PBL-2000": "6",
        "MSR-3000": "3",
        "X-SA-9": "2",
        "PBL-2001": "no score here",
    }
    data = load_benchmark("mmie:sample")
    by_id = {s.id: s for s in data}
    samples = [by_id[i] for i in ("SA-1000", "SA-1001", "PBL-2000", "MSR-3000", "PBL-2001")]
    extra = Sample("X-SA-9", "mmie", by_id["SA-1002"].input, metadata={"gt_answer": None})
    five = Sample(
        "PBL-9999",
        "mmie",
        Interleaved([img(tmp_path, f"{i}.png") for i in range(5)]),
        category="project_based_learning",
        metadata={"gt_answer": None},
    )
    nomatch = Sample("ZZZ-1", "mmie", Interleaved([T("q")]), metadata={"gt_answer": None})
    samples += [extra, five, nomatch]
    preds = [Prediction(s.id, "m", Interleaved([T("answer")])) for s in samples]

    def script(body):
        text = user_text(body)
        for sid, q in [
            ("SA-1000", "paper boat"),
            ("SA-1001", "bakery"),
            ("PBL-2000", "Cactus"),
            ("MSR-3000", "rectangle"),
            ("PBL-2001", "Fitted Sheet"),
            ("X-SA-9", "planetarium"),
        ]:
            if q in text:
                return Reply(content=f"### Feedback\nx\n### Score\n{scores[sid]}")
        raise AssertionError(text)

    with FakeOpenAI(script) as server:
        s = scorer(server, prompts, tmp_path)
        judgments = s.score(samples, preds)
        result = s.aggregate(samples, judgments)
    status = {j.sample_id: (j.status, j.reason) for j in judgments}
    assert status["PBL-2001"] == ("invalid", "no score")
    assert status["PBL-9999"] == ("invalid", "too many images")
    assert status["ZZZ-1"] == ("invalid", "unrecognised category")
    assert len(server.requests) == 6
    # hand-computed: SA (4, 5) -> 4.5; PBL (6) -> 6; MSR (3) -> 3; overall micro incl. X-SA-9:
    # (4 + 5 + 6 + 3 + 2) / 5 = 4.0 -> 66.67 %
    assert result.by_category["situational_analysis"] == {"mean": 4.5, "n": 2, "ci": [4.0, 5.0]}
    assert result.by_category["project_based_learning"]["mean"] == 6.0
    assert result.by_category["multi_step_reasoning"]["mean"] == 3.0
    assert result.overall == 4.0 and result.overall_percent == 66.67
    assert result.counts == {"valid": 5, "invalid": 3, "error": 0, "total": 8}
    assert result.invalid_reasons == {
        "no score": 1,
        "too many images": 1,
        "unrecognised category": 1,
    }
    assert not result.comparable


def test_rerun_is_served_from_cache(prompts, tmp_path):
    data = load_benchmark("mmie:sample")
    with FakeOpenAI() as server:
        s = scorer(server, prompts, tmp_path)
        first = s.score(list(data), gold_predictions(data))
        n = len(server.requests)
        s2 = scorer(server, prompts, tmp_path)
        second = s2.score(list(data), gold_predictions(data))
    assert n == 15 and len(server.requests) == 15
    assert [j.overall for j in first] == [j.overall for j in second]
    assert s2.engine.stats.cache_hits == 15 and s2.engine.stats.calls == 0


def test_judge_failures_are_errors_not_scores(prompts, tmp_path):
    data = load_benchmark("mmie:sample", limit=3)
    with FakeOpenAI(lambda body: Reply(status=400)) as server:
        judgments = scorer(server, prompts, tmp_path).score(list(data), gold_predictions(data))
    assert all(
        j.status == "error" and j.overall is None and j.reason == "judge error" for j in judgments
    )


def test_comparable_needs_official_prompts_and_mmie_score(prompts, tmp_path, monkeypatch):
    ps = load_mmie_prompts(prompts, allow_unofficial=True)
    monkeypatch.setattr(protocol_files, "MMIE_CONSTANTS", dict(ps.hashes))
    with FakeOpenAI() as server:
        assert scorer(server, prompts, tmp_path, model="MMIE/MMIE-Score").comparable
        assert not scorer(server, prompts, tmp_path, model="gpt-4o").comparable


def test_async_interface(prompts, tmp_path):
    data = load_benchmark("mmie:sample", limit=2)
    with FakeOpenAI() as server:
        s = scorer(server, prompts, tmp_path)
        js = asyncio.run(s.ascore(list(data), gold_predictions(data)))
    assert [j.overall for j in js] == [4.0, 4.0]
