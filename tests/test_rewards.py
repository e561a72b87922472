"""Scorers as rewards: TRL and native shapes, hybrid combinations, per-segment process rewards."""

from __future__ import annotations

import asyncio
import inspect
import math
from collections.abc import Sequence

import pytest

from interleave_bench.scorers.base import Scorer, check_aligned
from interleave_bench.scorers.structure import StructureScorer
from interleave_bench.train.process import process_rewards, process_rewards_batch
from interleave_bench.train.rewards import (
    HybridReward,
    NativeReward,
    as_async_trl_reward,
    as_trl_reward,
    group_normalise,
    interleaved_from_chat,
    trl_sample,
)
from interleave_bench.types import ImageRef, Interleaved, Judgment, Prediction, Sample, Segment

IMG = ImageRef(sha256="0" * 64)


def answer(text: str) -> Interleaved:
    """Text with ``<img>`` markers as an interleaved answer (markers become image segments)."""
    segments: list[Segment] = []
    for k, piece in enumerate(text.split("<img>")):
        if k:
            segments.append(Segment.of_image(IMG))
        if piece.strip():
            segments.append(Segment.of_text(piece))
    return Interleaved(segments)


def marker_prediction(sample: Sample, completion, ids) -> Prediction:
    return Prediction(sample.id, "policy", answer(completion))


PROMPTS = ["Draw a cat, then describe it."] * 4
COMPLETIONS = ["<img> A cat.", "A cat.", "<img><img> Two cats.", "A cat. <img>"]


def native_records() -> tuple[list[Sample], list[Prediction]]:
    samples = [
        Sample(f"trl-{i}", "trl", Interleaved([Segment.of_text(p)])) for i, p in enumerate(PROMPTS)
    ]
    preds = [
        Prediction(s.id, "policy", answer(c)) for s, c in zip(samples, COMPLETIONS, strict=True)
    ]
    return samples, preds


def test_structure_scorer_gives_the_same_rewards_in_both_shapes():
    scorer = StructureScorer(expected="IT")
    trl = as_trl_reward(scorer, build_prediction=marker_prediction)
    native = NativeReward(scorer)
    from_trl = trl(prompts=PROMPTS, completions=COMPLETIONS)
    from_native = native(*native_records())
    assert from_trl == from_native
    assert from_trl[0] == 1.0  # exactly one image followed by text
    assert all(r is not None and 0.0 <= r < 1.0 for r in from_trl[1:])
    assert trl.__name__ == "structure" and native.__name__ == "structure"
    # and the numbers are the scorer's own overall
    judgments = scorer.score(*native_records())
    assert from_native == [j.overall for j in judgments]


def test_default_trl_builders_read_columns_and_chat_messages():
    scorer = StructureScorer()  # reference from the gold column
    reward = as_trl_reward(scorer)
    prompts = [[{"role": "user", "content": "Say hi"}]] * 2
    completions = [[{"role": "assistant", "content": "hi"}], [{"role": "assistant", "content": ""}]]
    out = reward(
        prompts=prompts,
        completions=completions,
        completion_ids=[[1], []],
        gold=["hello", "hello"],
        id=["a", "a"],
        trainer_state=object(),  # not a per-row column: passed through unchanged
    )
    assert out[0] == 1.0  # "T" against "T"
    assert out[1] is not None and out[1] < 1.0  # an empty answer is a real, poor answer
    sample = trl_sample(0, prompts[0], {"id": "x", "gold": [{"type": "text", "text": "g"}]})
    assert sample.id == "x" and sample.input.text == "Say hi" and sample.gold.text == "g"
    multi = [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image"}]}]
    assert interleaved_from_chat(multi).structure() == "T"


def test_invalid_and_error_judgments_are_none_never_zero():
    scorer = StructureScorer()  # no expected structure: samples without gold are invalid
    reward = as_trl_reward(scorer)
    assert reward(prompts=["p", "p"], completions=["a", "b"]) == [None, None]
    samples, preds = native_records()
    preds[1] = Prediction(preds[1].sample_id, "policy", Interleaved(), error="OOM")
    native = NativeReward(StructureScorer(expected="IT"))
    out = native(samples, preds)
    assert out[1] is None and out[0] == 1.0
    # the judgment behind a None stays available for logging
    assert native.last_judgments[1].status == "error"
    assert "OOM" in (native.last_judgments[1].reason or "")


class FixedScorer(Scorer):
    """Judgments given in advance (ok with a value, or an invalid/error reason)."""

    name = "fixed"

    def __init__(self, values: Sequence[float | str | None]) -> None:
        self.values = list(values)
        self.calls = 0

    async def ascore(self, samples, predictions) -> list[Judgment]:
        check_aligned(samples, predictions)
        self.calls += 1
        out = []
        for s, v in zip(samples, self.values, strict=False):
            if isinstance(v, str):
                out.append(self.error(s.id, v) if v == "error" else self.invalid(s.id, v))
            else:
                out.append(self.ok(s.id, v, {"aspect": None if v is None else 2 * v}))
        return out


def test_status_mapping_and_sub_score_key():
    samples, preds = native_records()
    scorer = FixedScorer([0.25, "error", "unparseable", 0.0])
    assert NativeReward(scorer)(samples, preds) == [0.25, None, None, 0.0]
    assert NativeReward(scorer, key="aspect")(samples, preds) == [0.5, None, None, 0.0]
    assert NativeReward(scorer, key="absent")(samples, preds) == [None] * 4


def test_async_trl_reward_inside_a_running_loop():
    scorer = StructureScorer(expected="IT")
    areward = as_async_trl_reward(scorer, build_prediction=marker_prediction)
    sync_reward = as_trl_reward(scorer, build_prediction=marker_prediction)
    assert inspect.iscoroutinefunction(areward)
    assert not inspect.iscoroutinefunction(sync_reward)

    async def main():
        a, b = await asyncio.gather(
            areward(PROMPTS, COMPLETIONS), areward(prompts=PROMPTS[:1], completions=COMPLETIONS[:1])
        )
        c = sync_reward(PROMPTS, COMPLETIONS)  # the sync shape also works inside a loop
        await areward.native.aclose()
        return a, b, c

    a, b, c = asyncio.run(main())
    assert a == c == NativeReward(scorer)(*native_records())
    assert b == [1.0]


def test_trl_reward_checks_lengths():
    reward = as_trl_reward(StructureScorer(expected="T"))
    with pytest.raises(ValueError, match="prompts"):
        reward(prompts=["a"], completions=["x", "y"])


# --------------------------------------------------------------------------- hybrid

A = [1.0, 0.0, 1.0, 1.0]
B = [0.5, 1.0, None, 0.0]


def test_hybrid_sum_then_normalise_by_hand():
    h = HybridReward({"a": (lambda s, p: A, 1.0), "b": (lambda s, p: B, 2.0)})
    assert h.combine({"a": A, "b": B}).total == [2.0, 2.0, None, 1.0]
    ignore = HybridReward({"a": (None, 1.0), "b": (None, 2.0)}, missing="ignore")
    assert ignore.combine({"a": A, "b": B}).total == [2.0, 2.0, 1.0, 1.0]
    filled = HybridReward({"a": (None, 1.0), "b": (None, 2.0)}, fill={"b": 0.0})
    assert filled.combine({"a": A, "b": B}).total == [2.0, 2.0, 1.0, 1.0]
    # through a real call (sync, own loop), with the per-component values kept for logging
    samples, preds = native_records()
    result = h(samples, preds)
    assert result.total == [2.0, 2.0, None, 1.0]
    assert result.components == {"a": A, "b": B}
    m = result.metrics()
    assert m["reward/a/mean"] == 0.75
    assert m["reward/b/none_frac"] == 0.25
    assert m["reward/total/mean"] == pytest.approx(5 / 3)


def test_hybrid_normalise_then_sum_by_hand():
    # G=2. a: group [1, 0] -> mean 0.5, std sqrt(0.5) -> +-0.5/(sqrt(0.5)+eps); group [1, 1] -> 0
    #      b: group [0.5, 1] -> mean 0.75, std sqrt(0.125) -> -+0.25/(sqrt(0.125)+eps);
    #         group [None, 0] -> one value: None stays None, 0 -> 0
    h = HybridReward({"a": (None, 1.0), "b": (None, 2.0)}, mode="normalise_then_sum", group_size=2)
    result = h.combine({"a": A, "b": B})
    za = 0.5 / (math.sqrt(0.5) + 1e-4)
    zb = 0.25 / (math.sqrt(0.125) + 1e-4)
    assert result.normalised["a"] == pytest.approx([za, -za, 0.0, 0.0])
    assert result.normalised["b"][2] is None
    assert result.total[0] == pytest.approx(za - 2 * zb)
    assert result.total[1] == pytest.approx(-za + 2 * zb)
    assert result.total[2] is None
    assert result.total[3] == 0.0
    with pytest.raises(ValueError, match="group_size"):
        HybridReward({"a": (None, 1.0)}, mode="normalise_then_sum")


def test_hybrid_mixes_scorers_and_async_callables():
    samples, preds = native_records()
    structure = NativeReward(StructureScorer(expected="IT"))

    async def constant(s, p):
        return [0.5] * len(p)

    h = HybridReward({"format": (structure, 1.0), "text": (constant, 1.0)})
    result = h(samples, preds)
    expected = [r + 0.5 for r in structure(samples, preds)]
    assert result.total == pytest.approx(expected)


def test_group_normalise_matches_outcome_advantages():
    torch = pytest.importorskip("torch")  # noqa: F841
    from interleave_bench.train.grpo import outcome_advantages

    values = [1.0, None, 3.0, 2.0, 2.0, 7.0]
    adv, _ = outcome_advantages(values, 3)
    ours = group_normalise(values, 3)
    assert [0.0 if v is None else v for v in ours] == pytest.approx(adv.tolist(), abs=1e-6)


# --------------------------------------------------------------------------- process rewards


class TextLengthScorer(Scorer):
    """ok with len(text)/10 for one-segment text answers; records the sub-samples it saw."""

    name = "text_length"

    def __init__(self) -> None:
        self.seen: list[tuple[Sample, Prediction]] = []

    async def ascore(self, samples, predictions):
        check_aligned(samples, predictions)
        out = []
        for s, p in zip(samples, predictions, strict=True):
            self.seen.append((s, p))
            text = p.output.text.strip()
            out.append(self.ok(s.id, len(text) / 10) if text else self.invalid(s.id, "blank"))
        return out


def test_process_rewards_one_per_segment():
    sample = Sample("s1", "b", Interleaved([Segment.of_text("Tell a story.")]))
    pred = Prediction("s1", "policy", answer("Once upon <img> a time <img>"))
    assert pred.output.structure() == "TITI"
    text = TextLengthScorer()
    image = StructureScorer(expected="I", prefer_gold=False)
    rewards = process_rewards(text, image, sample, pred)
    assert rewards == [0.9, 1.0, 0.6, 1.0]  # "Once upon", image, "a time", image
    # each step was scored alone, in the context of the input plus the earlier segments
    seen = {s.id: (s, p) for s, p in text.seen}
    step2, p2 = seen["s1#step2"]
    assert p2.output.texts == [" a time "]
    assert step2.input.structure() == "TTI" and step2.metadata["parent_id"] == "s1"
    # "input" context leaves the sample as it was; no scorer for a modality gives None
    text.seen.clear()
    assert process_rewards(text, None, sample, pred, context="input") == [0.9, None, 0.6, None]
    assert all(s.input == sample.input for s, _ in text.seen)


def test_process_rewards_batch_and_failures():
    samples = [Sample(f"s{i}", "b", Interleaved([Segment.of_text("q")])) for i in range(2)]
    preds = [
        Prediction("s0", "policy", answer("<img>Long text here")),
        Prediction("s1", "policy", Interleaved([Segment.of_text("   ")]), error=None),
    ]
    out = process_rewards_batch(TextLengthScorer(), StructureScorer(expected="I"), samples, preds)
    assert out == [[1.0, 1.4], [None]]  # a blank text block is invalid for this scorer: None
