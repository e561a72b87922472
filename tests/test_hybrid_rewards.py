"""The paper's hybrid reward r = r_t + r_v + r_f as three registered protocols (issue 14 item 1):
a real judge endpoint (``fake_openai``) for the text critic, a tiny random CLIP for visual
alignment, the rule-based format check on hand-built token streams; judge failures logged by
reason in the training step record; dropout disabled so the first ratio is 1 (item 3)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fake_openai import FakeOpenAI, Reply
from PIL import Image
from test_offline_scorers import _write_tiny_clip

from interleave_bench.protocols import get_protocol, protocol_names
from interleave_bench.scorers.format_fidelity import (
    FormatFidelityScorer,
    StreamSpec,
    attach_stream,
    stream_violations,
)
from interleave_bench.scorers.text_critic import parse_critic
from interleave_bench.scorers.visual_alignment import VisualAlignmentScorer, image_contexts
from interleave_bench.train.config import TrainConfig
from interleave_bench.train.recipe_rewards import build_reward, reward_failures
from interleave_bench.types import ImageRef, Interleaved, Prediction, Sample, Segment

HYBRID = ("text_critic", "visual_alignment", "format_fidelity")


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> Path:
    pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("tiny_clip")
    _write_tiny_clip(folder)
    return folder


def sample(sid: str = "s1", text: str = "draw a red square and say what it is") -> Sample:
    return Sample(id=sid, benchmark="t", input=Interleaved([Segment.of_text(text)]))


def pred(sid: str, *segments: Segment) -> Prediction:
    return Prediction(sample_id=sid, model="m", output=Interleaved(list(segments)))


def critic(body: dict) -> Reply:
    """Score 7 for any answer, except an answer saying FAILME: a reply without a score."""
    if "FAILME" in json.dumps(body):
        return Reply(content="I would rather not rate this.")
    return Reply(content='{"reason": "on topic", "score": 7}')


def recipe(tmp_path: Path, url: str, clip: Path, **kw) -> TrainConfig:
    judge = {"judge_base_url": url, "judge_model": "critic", "max_retries": 0}
    return TrainConfig(
        model="tiny:janus",
        output_dir=str(tmp_path / "run"),
        rewards=[
            {"protocol": "text_critic", "options": judge},
            {
                "protocol": "visual_alignment",
                "options": {"backend": "clip", "clip_model": str(clip)},
            },
            {"protocol": "format_fidelity"},
        ],
        **kw,
    )


def test_the_three_protocols_are_registered():
    names = protocol_names()
    assert set(HYBRID) <= set(names)
    assert get_protocol("text_critic").kind == "judge"
    assert get_protocol("visual_alignment").kind == "offline"
    assert get_protocol("format_fidelity").kind == "offline"


def test_text_only_answer_gets_a_lower_hybrid_reward_than_text_and_image(
    tmp_path, tiny_clip, monkeypatch
):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    red = tmp_path / "red.png"
    Image.new("RGB", (24, 24), (220, 20, 20)).save(red)
    s = sample()
    text_only = pred("s1", Segment.of_text("A red square."))
    with_image = pred(
        "s1", Segment.of_text("A red square:"), Segment.of_image(ImageRef(path=str(red)))
    )
    failed = pred("s1", Segment.of_text("FAILME"), Segment.of_image(ImageRef(path=str(red))))
    with FakeOpenAI(critic) as server:
        reward = build_reward(recipe(tmp_path, server.url, tiny_clip), None)
        result = reward([s, s, s], [text_only, with_image, failed])
    assert set(result.components) == set(HYBRID)
    # unweighted sum; the text-only answer has r_v = 0.0 (the minimum), not None
    assert result.components["text_critic"][:2] == [0.7, 0.7]
    assert result.components["visual_alignment"][0] == 0.0
    assert 0.0 < result.components["visual_alignment"][1] <= 1.0
    assert result.components["format_fidelity"][:2] == [1.0, 1.0]
    assert result.total[0] == pytest.approx(1.7)
    assert result.total[1] > result.total[0]
    # a judge failure stays None (left out of the baseline) and is counted by its reason
    assert result.components["text_critic"][2] is None and result.total[2] is None
    assert reward_failures(reward) == {"text_critic: invalid: no JSON object": 1}
    backends = {
        j.metadata["backend"] for j in reward.components["visual_alignment"][0].last_judgments
    }
    assert backends == {"clip"}  # auto/clip choice recorded


def test_visual_alignment_scores_each_image_against_the_text_before_it(tmp_path, tiny_clip):
    red, blue = tmp_path / "red.png", tmp_path / "blue.png"
    Image.new("RGB", (24, 24), (220, 20, 20)).save(red)
    Image.new("RGB", (24, 24), (10, 30, 230)).save(blue)
    s = sample(text="two squares")
    out = Interleaved(
        [
            Segment.of_image(ImageRef(path=str(red))),
            Segment.of_text("a blue one"),
            Segment.of_image(ImageRef(path=str(blue))),
            Segment.of_image(ImageRef(path="nowhere.png", missing=True)),
        ]
    )
    ctx = image_contexts(s, out)
    assert [t for t, _ in ctx] == ["two squares", "a blue one", "a blue one"]
    scorer = VisualAlignmentScorer(backend="clip", clip_model=tiny_clip, device="cpu")
    [j] = scorer.score([s], [pred(s.id, *out)])
    one = scorer.score_image("two squares", ImageRef(path=str(red)))
    two = scorer.score_image("a blue one", ImageRef(path=str(blue)))
    assert j.metadata["per_image"] == pytest.approx([one, two, 0.0], abs=1e-6)
    assert j.overall == pytest.approx((one + two) / 3, abs=1e-6)
    with pytest.raises(ValueError, match="backend must be one of"):
        VisualAlignmentScorer(backend="siglip")


def test_visual_alignment_auto_falls_back_to_clip_without_image_reward(monkeypatch, tmp_path):
    monkeypatch.setenv("IBENCH_IMAGEREWARD_MODEL", str(tmp_path))
    import importlib.util

    if importlib.util.find_spec("ImageReward") is not None:
        pytest.skip("image-reward is installed here")
    assert VisualAlignmentScorer(backend="auto").backend == "clip"


JANUS = StreamSpec(frozenset({90}), frozenset({91}), frozenset({99}), image_tokens=3, max_images=1)
EMU3 = StreamSpec(frozenset({80}), frozenset({81}), frozenset({99}), delimiters_in_span=True)


def janus(ids: list[int], kinds: str | None = None):
    """A Janus-like stream; ``kinds`` marks each position t(ext) or i(mage code). By default the
    three positions after each image start (90) are codes, whatever their ids."""
    if kinds is None:
        out, left = [], 0
        for t in ids:
            out.append("i" if left else "t")
            left = 3 if (t == 90 and not left) else max(0, left - 1)
        kinds = "".join(out)
    return JANUS.of(ids, [k == "i" for k in kinds])


@pytest.mark.parametrize(
    ("ids", "violations"),
    [
        ([10, 90, 1, 2, 3, 91, 11, 99], []),  # text, a whole image, text, end
        ([10, 90, 1, 91, 90, 91, 11, 99], []),  # codes that equal delimiter ids are codes
        ([10, 90, 1, 2], ["unclosed_image", "truncated_image"]),  # stopped inside the image
        ([10, 91, 11, 99], ["stray_delimiter"]),  # image end in text
        ([10, 99, 11, 99], ["stray_delimiter"]),  # end-of-sequence before the end
        ([90, 1, 2, 3, 91, 90, 1, 2, 3, 91], ["too_many_images"]),  # max_images 1
    ],
)
def test_format_fidelity_rules_on_a_janus_token_stream(ids, violations):
    assert stream_violations(janus(ids))[0] == violations


def test_format_fidelity_empty_and_unopened_images():
    assert stream_violations(janus([10, 90, 11, 99], "tttt"))[0] == ["empty_image"]
    assert stream_violations(janus([1, 2, 3, 91, 10], "iiitt"))[0] == ["unopened_image"]


def test_format_fidelity_on_an_emu3_stream_and_the_reward_scale():
    # Emu3: the image start and end are inside the image span
    clean = EMU3.of([10, 80, 5, 6, 81, 11], [False, True, True, True, True, False])
    assert stream_violations(clean) == ([], 1)
    cut = EMU3.of([10, 80, 5, 6], [False, True, True, True])
    assert stream_violations(cut)[0] == ["unclosed_image"]
    scorer = FormatFidelityScorer()
    s = sample()
    text = Segment.of_text("ok")
    good = attach_stream(pred("s1", text), janus([10, 90, 1, 2, 3, 91, 11, 99]))
    one = attach_stream(pred("s1", text), janus([10, 91, 11, 99]))
    two = attach_stream(pred("s1", text), janus([10, 90, 1, 2]))
    no_text = attach_stream(
        pred("s1", Segment.of_image(ImageRef(path="x"))), janus([90, 1, 2, 3, 91])
    )
    got = [j.overall for j in scorer.score([s] * 4, [good, one, two, no_text])]
    assert got == [1.0, -0.5, -1.0, -0.5]  # 1 clean, -0.5 per violation, floor -1


def test_format_fidelity_on_a_plain_prediction_checks_the_segments():
    scorer = FormatFidelityScorer(max_images=1)
    s = sample()
    img = Segment.of_image(ImageRef(path="a.png"))
    lost = Segment.of_image(ImageRef(path="b.png", missing=True))
    cases = [
        pred("s1", Segment.of_text("hi"), img),
        pred("s1", Segment.of_text("hi"), lost),
        pred("s1", img, Segment.of_text(" "), img, Segment.of_text("x")),
        pred("s1", img),
    ]
    js = scorer.score([s] * 4, cases)
    assert [j.metadata["violations"] for j in js] == [
        [],
        ["truncated_image"],
        ["stray_delimiter", "too_many_images"],
        ["no_text"],
    ]
    assert {j.metadata["checked_on"] for j in js} == {"segments"}


def test_parse_critic():
    assert parse_critic('{"reason": "x", "score": 8}') == (8.0, None)
    assert parse_critic("Reasoning...\nScore: 6") == (6.0, None)
    assert parse_critic('{"score": 11}') == (None, "score out of range")
    assert parse_critic("") == (None, "empty reply")


def test_training_logs_judge_failures_by_reason_and_dropout_is_disabled(
    tiny_janus, tmp_path, tiny_clip, monkeypatch
):
    """One GRPO step on a copy of the tiny Janus with attention dropout 0.5: with
    ``disable_dropout`` (default) the first ratio is 1 (updates_per_rollout 1) and the KL to the
    reference is 0; every text_critic call fails and the step record counts it by reason."""
    from interleave_bench.train.trainer import GRPOTrainer, read_log

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    model = tmp_path / "janus-dropout"
    shutil.copytree(tiny_janus, model)
    config = json.loads((model / "config.json").read_text())
    config["text_config"]["attention_dropout"] = 0.5
    (model / "config.json").write_text(json.dumps(config))
    gen = {"max_new_tokens": 6, "temperature": 1.0, "cfg_scale": 1.0, "max_images": 1}
    with FakeOpenAI(lambda body: Reply(content="no idea")) as server:
        cfg = recipe(
            tmp_path,
            server.url,
            tiny_clip,
            steps=1,
            prompts_per_step=1,
            group_size=2,
            beta=0.1,
            reward_missing="ignore",
            generation=gen,
            save_final=False,
        )
        cfg.model = str(model)
        [rec] = read_log(GRPOTrainer(cfg).train().log_path)
    assert rec["reward_failures"] == {"text_critic: invalid: no JSON object": 2}
    assert rec["reward_failure_count"] == 2 and rec["rollout_errors"] == {}
    assert abs(rec["ratio_mean"] - 1.0) < 1e-4, rec["ratio_mean"]
    assert rec["kl"] < 1e-8


def test_visual_alignment_auto_picks_image_reward_from_the_recipes_folder(monkeypatch, tmp_path):
    """``backend: auto`` with ``imagereward_model`` given (not the environment variable) and the
    package importable chooses ImageReward; without the package, CLIP."""
    import sys
    import types

    monkeypatch.delenv("IBENCH_IMAGEREWARD_MODEL", raising=False)
    folder = tmp_path / "imagereward"
    folder.mkdir()
    monkeypatch.setitem(sys.modules, "ImageReward", types.ModuleType("ImageReward"))
    assert VisualAlignmentScorer(imagereward_model=folder).backend == "imagereward"
    assert VisualAlignmentScorer(imagereward_model=tmp_path / "absent").backend == "clip"
    monkeypatch.setitem(sys.modules, "ImageReward", None)  # the package is not installed
    assert VisualAlignmentScorer(imagereward_model=folder).backend == "clip"
