"""ISG-Bench protocol: prompt file handling, each level's requests (images, order, dependency
skipping) against the stand-in judge server, and the aggregate against a hand computation."""

import hashlib
import json
from types import SimpleNamespace

import pytest
from fake_openai import FakeOpenAI, Reply, image_urls, user_text

from interleave_bench import load_benchmark
from interleave_bench.judges.cache import JudgmentCache
from interleave_bench.judges.client import JudgeConfig, OpenAIJudge
from interleave_bench.judges.engine import JudgeEngine
from interleave_bench.media import to_data_url
from interleave_bench.scorers import protocol_files
from interleave_bench.scorers.isg import ISGScorer, build, tag_map
from interleave_bench.scorers.isg_prompts import load_isg_prompts, own_prompts
from interleave_bench.scorers.protocol_files import ProtocolError, fetch_pinned, pinned_files
from interleave_bench.types import Interleaved, Prediction, Sample, Segment

# Our own stand-in for ISG_eval/get_judge_prompt.py: same names, our words, markers to route on.
PROMPTS_PY = """
import os
os.system("echo this file must never run")
_TEXT_TEXT_JUDGE_PROMPT = "TT {requirement} | {text1} | {text2} | {question}"
_TEXT_IMAGE_JUDGE_PROMPT = "TI {requirement} | {text} | {question}"
_IMAGE_IMAGE_JUDGE_PROMPT = "II {requirement} | {question}"
_DSG_PROMPT = "DSG {{as JSON}} {question}"
_EVALUATE_WHOLE_W_GT_PROMPT = ["HOLISTIC\\nQuery:", "Answer:", "Golden:", "Reply\\nwith {{json}}"]
VQA_dict = {"Yes_No": "REQ-YN", "Score": "REQ-SCORE"}
"""

T = Segment.of_text


@pytest.fixture(scope="module")
def prompt_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("isgp") / "get_judge_prompt.py"
    p.write_text(PROMPTS_PY)
    return p


@pytest.fixture(scope="module")
def data():
    return {s.metadata["source_id"]: s for s in load_benchmark("isg:sample")}


def test_prompt_file_is_pinned_read_with_ast_and_own_wording_is_not_comparable(
    prompt_file, capfd, monkeypatch
):
    with pytest.raises(ProtocolError, match="not the pinned 774b3259115e"):
        load_isg_prompts(prompt_file)
    ps = load_isg_prompts(prompt_file, allow_unofficial=True)
    assert not ps.official and ps.source == str(prompt_file)
    assert ps.texts["DSG"] == "DSG {{as JSON}} {question}"
    assert ps.texts["Score"] == "REQ-SCORE" and ps.texts["Yes_No"] == "REQ-YN"
    assert ps.holistic == ("HOLISTIC\nQuery:", "Answer:", "Golden:", "Reply\nwith {{json}}")
    assert "must never run" not in capfd.readouterr().out
    bad = prompt_file.with_name("bad.py")
    bad.write_text("_DSG_PROMPT = 'x'\n")
    with pytest.raises(ProtocolError, match="missing VQA_dict, _EVALUATE_WHOLE_W_GT_PROMPT"):
        load_isg_prompts(bad, allow_unofficial=True)
    bad.write_text(PROMPTS_PY.replace('"REQ-SCORE"', "os.getcwd()"))
    with pytest.raises(ProtocolError, match="VQA_dict is not a plain literal"):
        load_isg_prompts(bad, allow_unofficial=True)
    monkeypatch.setenv("IBENCH_HOME", str(prompt_file.parent / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ProtocolError, match="offline"):
        load_isg_prompts()
    own = load_isg_prompts(allow_unofficial=True)
    assert own == own_prompts() and not own.official
    # `ibench protocols fetch isg --from FILE` caches a file with the pinned hash; later runs read
    # it offline and call it official (the pin is swapped for our stand-in's hash here)
    digest = hashlib.sha256(prompt_file.read_bytes()).hexdigest()
    monkeypatch.setattr(protocol_files, "ISG_FILE_SHA256", digest)
    [pf] = pinned_files("isg")
    fetch_pinned(pf, from_file=prompt_file)
    cached = load_isg_prompts()
    assert cached.official and cached.source == pf.url and cached.texts == ps.texts


def make_scorer(server, prompt_file, tmp_path, dependencies="official", model="openai/gpt-4.1"):
    judge = OpenAIJudge(JudgeConfig(model=model, base_url=server.url, backoff_base=0.01))
    engine = JudgeEngine(judge, JudgmentCache(tmp_path / "cache.sqlite"))
    prompts = load_isg_prompts(prompt_file, allow_unofficial=True)
    return ISGScorer(engine, prompts, dependencies=dependencies)


def gold(s: Sample) -> Prediction:
    return Prediction(s.id, "m", s.gold)


class Router:
    """Scripted judge: which request is which, from the prompt markers and the images sent."""

    def __init__(self, samples, holistic):
        self.images = {}
        for s in samples:
            for tag, ref in tag_map(s.input, s.gold).items():
                if not isinstance(ref, str):
                    self.images[to_data_url(ref)] = (s.metadata["source_id"], tag)
        self.holistic = holistic  # source id -> overall score, or an int HTTP status as "error"

    def sample_of_holistic(self, text):
        return next(sid for sid, s in self.queries.items() if s in text)

    def __call__(self, body):
        text, urls = user_text(body), image_urls(body)
        if text.startswith("HOLISTIC"):
            sid = next(sid for sid, q in self.queries.items() if q in text)
            score = self.holistic[sid]
            if isinstance(score, str):
                return Reply(status=400)
            return Reply(content=json.dumps({"overall_score": score, "final_thoughts": "ok"}))
        if text.startswith("<image>DSG"):
            _, tag = self.images[urls[0]]
            yes = tag == "<gen_img1>" and "drawn" in text
            return Reply(content=json.dumps({"Judge": "Yes" if yes else "No", "Reason": "r"}))
        if "REQ-YN" in text:
            return Reply(content='{"Judge": "Yes", "Reason": "r"}')
        score = 9 if "II REQ-SCORE" in text else 6
        return Reply(content=json.dumps({"Judge": score, "Reason": "r"}))


def router(samples, holistic):
    r = Router(samples, holistic)
    r.queries = {s.metadata["source_id"]: s.input.texts[0] for s in samples}
    return r


def describe(server, r):
    """Each request as (kind, tags of its images) in the order sent."""
    seq = []
    for body in server.requests:
        text = user_text(body)
        tags = [r.images.get(u, ("?", "query-or-other"))[1] for u in image_urls(body)]
        kind = next(k for k in ("HOLISTIC", "DSG", "REQ-SCORE", "REQ-YN") if k in text)
        seq.append((kind, tags))
    return seq


def test_one_sample_levels_order_images_and_official_dependency_skipping(
    prompt_file, data, tmp_path
):
    s = data["0003"]  # Attribute Transfer: query text + image, golden text/image/text/image
    r = router([s], {"0003": 8})
    with FakeOpenAI(r) as server:
        [j] = make_scorer(server, prompt_file, tmp_path).score([s], [gold(s)])
        bodies = list(server.requests)
    assert j.status == "ok", j
    # image level first (entity questions only: the official rule never asks a question that has
    # a preliminary), then each block question with Score then Yes_No, then the holistic call
    assert describe(server, r) == [
        ("DSG", ["<gen_img1>"]),
        ("DSG", ["<gen_img2>"]),
        ("REQ-SCORE", ["<gen_img1>"]),
        ("REQ-YN", ["<gen_img1>"]),
        ("REQ-SCORE", ["<gen_img2>"]),
        ("REQ-YN", ["<gen_img2>"]),
        ("REQ-SCORE", ["<gen_img1>", "<query_img1>"]),
        ("REQ-YN", ["<gen_img1>", "<query_img1>"]),
        ("HOLISTIC", ["<query_img1>", "<gen_img1>", "<gen_img2>", "<gen_img1>", "<gen_img2>"]),
    ]
    assert image_urls(bodies[6])[1] == to_data_url(s.input.images[0])
    # every image at low detail, as the official client sends them
    sent = [c["image_url"] for b in bodies for m in b["messages"] if m["role"] == "user"
            for c in m["content"] if c["type"] == "image_url"]  # fmt: skip
    assert len(sent) == 15 and all(i["detail"] == "low" for i in sent)
    caption = s.gold.texts[0]
    assert user_text(bodies[2]) == (
        f"<image>TI REQ-SCORE | {caption} | Is <gen_text1> a caption for the image?"
    )
    assert user_text(bodies[6]).endswith(
        "II REQ-SCORE | Does the first image keep the subject of the second image?"
    )
    assert user_text(bodies[0]) == "<image>DSG {as JSON} Is a shape drawn?"
    holistic = body_parts(bodies[8])
    assert holistic[0] == "HOLISTIC Query:" and holistic[-1] == "Reply with {{json}}"
    assert holistic[1] == s.input.texts[0] and "Answer:" in holistic and "Golden:" in holistic
    assert all(b["response_format"] == {"type": "json_object"} for b in bodies)
    result = j.metadata["isg_result"]
    assert result["structure"] is True
    assert [q.get("judge", {}).get("Judge") for q in result["image"]] == ["Yes", None, "No", None]
    assert [q["VQA_judge_Score"]["Judge"] for q in result["block"][:3]] == [6, 6, 9]
    assert "VQA_judge_Score" not in result["block"][3]  # <gen_img9>: not in the answer
    assert j.scores == {"structure": 1.0, "image": 0.25, "block": 7.0, "holistic": 8.0}


def body_parts(body):
    user = next(m for m in body["messages"] if m["role"] == "user")
    return [p["text"] if p["type"] == "text" else "<image>" for p in user["content"]]


def test_answered_dependencies_ask_a_question_only_after_its_preliminary_was_yes(
    prompt_file, data, tmp_path
):
    s = data["0003"]
    r = router([s], {"0003": 8})
    with FakeOpenAI(r) as server:
        scorer = make_scorer(server, prompt_file, tmp_path, dependencies="answered")
        [j] = scorer.score([s], [gold(s)])
        dsg = [d for d in describe(server, r) if d[0] == "DSG"]
    # q0 (img1, Yes) -> q1 asked; q2 (img2, No) -> q3 skipped
    assert dsg == [("DSG", ["<gen_img1>"])] * 2 + [("DSG", ["<gen_img2>"])]
    asked = [q["Question"] for q in j.metadata["isg_result"]["image"] if "judge" in q]
    assert asked == ["Is a shape drawn?", "Is the shape filled?", "Is a shape drawn?"]
    assert not scorer.comparable
    opts = SimpleNamespace(protocol_file=prompt_file, allow_unofficial=True, extra={})
    assert build(opts, scorer.engine).dependencies == "official"
    opts.extra = {"isg_dependencies": "answered"}
    assert build(opts, scorer.engine).dependencies == "answered"
    opts.extra = {"isg_dependencies": "paper"}
    with pytest.raises(ProtocolError, match="extra.isg_dependencies: expected one of"):
        build(opts, scorer.engine)


def test_text_text_block_question_replaces_tags():
    s = Sample("x", "isg", Interleaved([T("q")]), gold=Interleaved([T("a"), T("b")]))
    scorer = ISGScorer.__new__(ISGScorer)
    scorer.prompts, scorer.store, scorer.max_tokens = own_prompts(), None, 64
    tags = tag_map(s.input, Interleaved([T("first"), T("second")]))
    q = {
        "subject": "<gen_text1>",
        "object": "<gen_text2>",
        "Question": "Does <gen_text2> follow <gen_text1>?",
    }
    reqs = scorer.block_requests(q, tags)
    assert [name for name, _ in reqs] == ["Score", "Yes_No"]
    text = reqs[0][1].parts[0].text
    assert "Text 1: first\nText 2: second\n" in text
    assert "Statement: Does  `Text 2`  follow  `Text 1` ?" in text
    assert all(len(req.parts) == 1 for _, req in reqs)


def test_bundled_sample_end_to_end_aggregate_equals_hand_computation(prompt_file, data, tmp_path):
    picked = [data[i] for i in ("0003", "0001", "0000", "0006", "0007")]
    preds = [
        gold(data["0003"]),
        gold(data["0001"]),
        Prediction(data["0000"].id, "m", Interleaved([T("only text")])),  # structure wrong
        gold(data["0006"]),  # its holistic call fails
        Prediction(data["0007"].id, "m", Interleaved([]), error="out of memory"),
    ]
    r = router(picked, {"0003": 8, "0001": 7, "0000": 3, "0006": "fail"})
    with FakeOpenAI(r) as server:
        scorer = make_scorer(server, prompt_file, tmp_path)
        judgments = scorer.score(picked, preds)
        result = scorer.aggregate(picked, judgments)
        sent = len(server.requests)
    # 0003: 2 DSG + 3x2 block + 1; 0001: 3 DSG + 3x2 + 1; 0000: holistic only; 0006: 2 + 2x2 + 1
    assert sent == 9 + 10 + 1 + 7
    status = [(j.status, j.reason) for j in judgments]
    assert status == [
        ("ok", None),
        ("ok", None),
        ("ok", None),
        ("error", "judge error"),
        ("error", "generation failed: out of memory"),
    ]
    groups = result.metadata["official"]["groups"]
    # Progressive (0003): image 1/4, block (6+6+9)/3, holistic 8
    assert groups["Progressive"] == {
        "structure": 1.0,
        "image": 0.25,
        "block": 7.0,
        "holistic": 8.0,
        "total": 1,
    }
    # Style Transfer: 0001 (III: block 9, 9, 9; image 1/6; holistic 7) and 0000 (structure wrong:
    # block 1, image 0, holistic 3)
    assert groups["Style Transfer"] == {
        "structure": 0.5,
        "image": 0.0833,
        "block": 5.0,
        "holistic": 5.0,
        "total": 2,
    }
    # Image-Text Complementation: 0006 (block 6, image 1/4, failed holistic -> 1) and 0007 (no
    # result: block 1, image 0, holistic 1)
    assert groups["Image-Text Complementation"] == {
        "structure": 0.5,
        "image": 0.125,
        "block": 3.5,
        "holistic": 1.0,
        "total": 2,
    }
    assert groups["VQA"] == {
        "structure": 0.0,
        "image": 0.0,
        "block": 0.0,
        "holistic": 0.0,
        "total": 0,
    }
    text = result.metadata["official"]["text"].splitlines()
    assert text[2] == "Style_Transer 0.5000     0.0833     5.0000     5.0000"
    honest = result.metadata["honest"]["groups"]["Image-Text Complementation"]
    assert honest["holistic"] == {"mean": None, "n": 0, "failed": 2, "not_applicable": 0}
    assert honest["block"] == {"mean": 6.0, "n": 1, "failed": 1, "not_applicable": 0}
    assert result.metadata["honest"]["comparable"] is False
    assert result.overall == 6.0  # mean holistic of the three valid judgments (8, 7, 3)
    assert result.counts == {"valid": 3, "invalid": 0, "error": 2, "total": 5}
    assert not result.comparable  # a prompt file that is not the pinned one


def test_ibench_score_protocol_isg_on_the_bundled_sample(prompt_file, tmp_path):
    from helpers import cli_json

    from interleave_bench.media import ImageStore

    data = load_benchmark("isg:sample")
    path = tmp_path / "predictions.jsonl"
    store = ImageStore(tmp_path / "images")  # images live beside the predictions file
    with open(path, "w") as f:
        for s in data:
            out = Interleaved(
                [Segment.of_image(store.put_file(x.image.path)) if x.image else x for x in s.gold]
            )
            f.write(json.dumps(Prediction(s.id, "gold", out).to_dict()) + "\n")

    def script(body):
        if "REQ-SCORE" in user_text(body):
            return Reply(content='{"Judge": 7, "Reason": "r"}')
        return Reply(content='{"Judge": "Yes", "Reason": "r", "overall_score": 5}')

    with FakeOpenAI(script) as server:
        code, result = cli_json(
            "score", "--bench", "isg:sample", "--predictions", str(path), "--protocol", "isg",
            "--protocol-file", str(prompt_file), "--allow-unofficial",
            "--judge-base-url", server.url, "--judge-model", "openai/gpt-4.1",
            "--out", str(tmp_path / "o"),
        )  # fmt: skip
    assert code == 0, result
    assert result["counts"] == {"valid": 12, "invalid": 0, "error": 0, "total": 12}
    groups = result["metadata"]["official"]["groups"]
    assert sum(g["total"] for g in groups.values()) == 12
    # every answer is the golden one: structure 1, block 7, holistic 5; image: each image's entity
    # question is asked (Yes), its attribute question never (it has a preliminary): 1/2
    for g in groups.values():
        assert (g["structure"], g["image"], g["block"], g["holistic"]) == (1.0, 0.5, 7.0, 5.0)
    assert result["comparable"] is False and result["metadata"]["prompts_official"] is False


def test_isg_leaderboard_has_sourced_rows():
    from helpers import run_cli

    r = run_cli("leaderboard", "show", "isg", "--json")
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert {row["table"] for row in rows} == {"holistic", "block", "image", "structure"}
    holistic = next(row for row in rows if row["table"] == "holistic")
    assert holistic["model"] == "ISG-Agent" and holistic["overall"] == 6.262
    assert holistic["image_decomposition"] == 7.582 and holistic["provenance"] == "published"
    assert all("de504cd" in row["source"] and row["comparable"] is False for row in rows)
