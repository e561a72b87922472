"""Process-level supervision (issue 14 item 2): one step list for trace and output, step rewards
from the scorers, DeepSeekMath per-token advantages, and their use in the trainer."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from interleave_bench import load_benchmark  # noqa: E402
from interleave_bench.media import ImageStore  # noqa: E402
from interleave_bench.models.base import DecodeTrace, GenerationSettings  # noqa: E402
from interleave_bench.models.prompts import build_prompt  # noqa: E402
from interleave_bench.scorers.base import Scorer, check_aligned  # noqa: E402
from interleave_bench.train.config import TrainConfig  # noqa: E402
from interleave_bench.train.grpo import process_advantages  # noqa: E402
from interleave_bench.train.process import step_rewards  # noqa: E402
from interleave_bench.train.rewards import HybridReward, NativeReward  # noqa: E402
from interleave_bench.train.rollout import rollout  # noqa: E402
from interleave_bench.train.steps import Step, StepAlignmentError, rollout_steps  # noqa: E402
from interleave_bench.types import ImageRef, Interleaved, Sample, Segment  # noqa: E402

F64 = torch.float64
IMG = ImageRef(sha256="1" * 64)
BOI, EOI, EOS = 1, 2, 3
JANUS_STRUCTURAL = frozenset({BOI, EOI, EOS})
GEN = {"max_new_tokens": 16, "temperature": 0.3, "top_p": 1.0, "cfg_scale": 5.0, "max_images": 2}
EMU3_GEN = {"max_new_tokens": 60, "temperature": 0.7, "max_image_tokens": 4, "cfg_scale": 3.0}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------- steps


def janus_iit_trace() -> DecodeTrace:
    """What Janus's decode loop records for image, image, text: ``<boi>`` | 4 codes |
    ``<eoi><boi>`` | 4 codes | ``<eoi>`` text text ``<eos>`` (five trace segments)."""
    ids = [BOI, 7, 8, 9, 1, EOI, BOI, 5, 6, 2, 3, EOI, 40, 41, EOS]
    segments = [
        ("text", 0, 1),
        ("image", 1, 5),
        ("text", 5, 7),
        ("image", 7, 11),
        ("text", 11, 15),
    ]
    image = [False] + [True] * 4 + [False, False] + [True] * 4 + [False] * 4
    return DecodeTrace(token_ids=ids, logprobs=[0.0] * 15, image_mask=image, segments=segments)


def test_delimiter_segments_are_not_steps_and_steps_pair_with_output():
    """The issue's "IIT" rollout: 5 trace segments, 3 output segments; now 3 steps, each with
    its output segment (image codes equal to a structural id do not make a step vanish)."""
    output = Interleaved([Segment.of_image(IMG), Segment.of_image(IMG), Segment.of_text("a cat")])
    steps = rollout_steps(janus_iit_trace(), output, JANUS_STRUCTURAL)
    assert steps == [Step("image", 1, 5, 0), Step("image", 7, 11, 1), Step("text", 11, 15, 2)]


def test_an_image_missing_from_the_output_keeps_its_step_without_a_segment():
    """An image that failed to decode (left out of the output) is still a step of the trace, with
    no segment; the text after it still pairs with its own segment. Text that decodes to blank
    gets no segment either; extra output segments are an error."""
    only_text = Interleaved([Segment.of_image(IMG), Segment.of_text("a cat")])
    steps = rollout_steps(janus_iit_trace(), only_text, JANUS_STRUCTURAL)
    assert [(s.kind, s.segment) for s in steps] == [("image", 0), ("image", None), ("text", 1)]
    two_images = Interleaved([Segment.of_image(IMG), Segment.of_image(IMG)])
    steps = rollout_steps(janus_iit_trace(), two_images, JANUS_STRUCTURAL, text_of=lambda ids: " ")
    assert [s.segment for s in steps] == [0, 1, None]
    with pytest.raises(StepAlignmentError, match="no step"):
        rollout_steps(janus_iit_trace(), Interleaved([*only_text, *two_images]), JANUS_STRUCTURAL)


def _check_aligned(adapter, rolls, structural) -> int:
    """Every step pairs with the output segment of its kind, in order, every output segment has
    a step, and a text step's tokens decode to that segment's text. Returns the images seen."""
    tok = adapter.processor.tokenizer
    images = 0
    for r in rolls:
        steps = rollout_steps(
            r.trace,
            r.output,
            structural,
            text_of=lambda ids: tok.decode(ids, skip_special_tokens=True),
        )
        segs = list(r.output)
        assert [s.segment for s in steps if s.segment is not None] == list(range(len(segs)))
        for s in steps:
            ids = r.trace.token_ids[s.start : s.end]
            if s.kind == "text":
                assert any(t not in structural for t in ids)  # never delimiter-only
            if s.segment is None:
                continue
            seg = segs[s.segment]
            assert seg.is_image == (s.kind == "image")
            if s.kind == "text":
                assert tok.decode(ids, skip_special_tokens=True).strip() == seg.text.strip()
            images += seg.is_image
    return images


def _rollouts(adapter, tmp_path, n_prompts=2, g=4, seed=5, gen=GEN):
    samples = load_benchmark("mmie:sample").samples[:n_prompts]
    settings = GenerationSettings(**gen)
    store = ImageStore(tmp_path / "images")
    rolls = rollout(adapter, [build_prompt(s) for s in samples], settings, g, store, seed=seed)
    return samples, rolls


@pytest.fixture(scope="module")
def janus_adapter(tiny_janus):
    from interleave_bench.models.janus import JanusAdapter

    return JanusAdapter(tiny_janus, device="cpu")


@pytest.fixture(scope="module")
def emu3_adapter(tiny_emu3):
    from interleave_bench.models.emu3 import Emu3Adapter

    return Emu3Adapter(str(tiny_emu3), device="cpu")


def test_trace_and_output_steps_align_on_tiny_janus(janus_adapter, tmp_path):
    from interleave_bench.train.rollout import janus_structural_ids

    _, rolls = _rollouts(janus_adapter, tmp_path)
    assert all(r.error is None for r in rolls)
    assert _check_aligned(janus_adapter, rolls, janus_structural_ids(janus_adapter)) > 0


def test_trace_and_output_steps_align_on_tiny_emu3(emu3_adapter, tmp_path):
    from interleave_bench.train.rollout import emu3_structural_ids

    _, rolls = _rollouts(emu3_adapter, tmp_path, n_prompts=1, g=3, gen=EMU3_GEN)
    assert all(r.error is None for r in rolls)
    assert _check_aligned(emu3_adapter, rolls, emu3_structural_ids(emu3_adapter)) > 0


def test_an_image_that_fails_to_decode_gives_no_misplaced_step(
    janus_adapter, tmp_path, monkeypatch
):
    """A rollout whose image cannot be decoded: whatever the decoder keeps of it, its steps and
    its output stay paired (today the rollout is an error with an empty trace: no steps, reward
    None, advantage 0), and the others of the group still align."""
    from interleave_bench.train.rollout import janus_structural_ids

    model = janus_adapter.model
    real, calls = model.decode_image_tokens, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("VQ decode failed")
        return real(*args, **kwargs)

    monkeypatch.setattr(model, "decode_image_tokens", flaky)
    _, rolls = _rollouts(janus_adapter, tmp_path)
    assert calls, "no image sampled: the check would be weak"
    structural = janus_structural_ids(janus_adapter)
    tok = janus_adapter.processor.tokenizer
    failed = [
        r
        for r in rolls
        if r.error is not None
        or any(
            s.kind == "image" and s.segment is None
            for s in rollout_steps(
                r.trace,
                r.output,
                structural,
                text_of=lambda ids: tok.decode(ids, skip_special_tokens=True),
            )
        )
    ]
    assert failed and len(failed) < len(rolls)
    _check_aligned(janus_adapter, rolls, structural)


# --------------------------------------------------------------------------- advantages by hand


def test_process_advantages_equal_a_hand_computation():
    """A group of two "IIT"-style answers scored step by step, computed by hand.

    Answer 0: steps image [1,5) r=0.5, image [7,11) r=None (not decoded), text [11,14) r=1.0;
    tokens 0 (``<boi>``), 5-6 (``<eoi><boi>``) are delimiters, 14 the final EOS.
    Answer 1: text [0,3) r=0.0, image [4,8) r=0.25; token 3 a delimiter, then padding.
    Applicable rewards of the group: [0.5, 1.0, 0.0, 0.25]: mean 0.4375,
    unbiased var = (0.0625² + 0.5625² + 0.4375² + 0.1875²) / 3 = 0.546875 / 3,
    s = sqrt(that) + 1e-4; normalised: n(x) = (x - 0.4375) / s; None -> 0.
    A token's advantage: the sum over the steps ending at or after it."""
    steps = [
        [Step("image", 1, 5, 0), Step("image", 7, 11, None), Step("text", 11, 14, 1)],
        [Step("text", 0, 3, 0), Step("image", 4, 8, 1)],
    ]
    rewards = [[0.5, None, 1.0], [0.0, 0.25]]
    adv = process_advantages(rewards, [[s.span for s in row] for row in steps], 2, 15)
    s = math.sqrt(0.546875 / 3) + 1e-4

    def n(x: float) -> float:
        return (x - 0.4375) / s

    a0 = [n(0.5) + 0 + n(1.0)] * 5 + [0 + n(1.0)] * 6 + [n(1.0)] * 3 + [0.0]
    a1 = [n(0.0) + n(0.25)] * 3 + [n(0.25)] * 5 + [0.0] * 7
    expected = torch.tensor([a0, a1], dtype=F64).float()
    assert adv.dtype == torch.float32
    assert torch.equal(adv, expected)


# --------------------------------------------------------------------------- scorer step rewards


class TextLength(Scorer):
    """r_t stand-in: the length of the one text segment / 10, in context."""

    name = "text_critic"

    def __init__(self) -> None:
        self.seen: list = []

    async def ascore(self, samples, predictions):
        check_aligned(samples, predictions)
        out = []
        for s, p in zip(samples, predictions, strict=True):
            self.seen.append((s, p))
            out.append(self.ok(s.id, len(p.output.text.strip()) / 10))
        return out


class PrecededImage(Scorer):
    """r_v stand-in: for one image step, 1 when its prediction holds the text before it, else
    0.2; 0.5 for a whole answer (the outcome reward)."""

    name = "visual_alignment"

    async def ascore(self, samples, predictions):
        check_aligned(samples, predictions)
        out = []
        for s, p in zip(samples, predictions, strict=True):
            segs = list(p.output)
            if not (segs and segs[-1].is_image and len(segs) <= 2):  # a whole answer
                out.append(self.ok(s.id, 0.5))
                continue
            out.append(self.ok(s.id, 1.0 if len(segs) == 2 else 0.2))
        return out


def test_step_rewards_come_from_the_scorers_in_context():
    from interleave_bench.types import Prediction

    sample = Sample("s", "b", Interleaved([Segment.of_text("Draw then tell.")]))
    out = Interleaved([Segment.of_image(IMG), Segment.of_text("a red barn"), Segment.of_image(IMG)])
    steps = [[Step("image", 1, 5, 0), Step("text", 6, 9, 1), Step("image", 10, 14, 2)]]
    steps[0].insert(1, Step("image", 5, 6, None))  # an image that did not decode
    text = TextLength()
    got = step_rewards(
        NativeReward(text),
        NativeReward(PrecededImage()),
        [sample],
        [Prediction("s", "m", out)],
        steps,
    )
    assert got == [[0.2, None, 1.0, 1.0]]
    ((sub, pred),) = text.seen  # the text step, judged after the input and the first image
    assert pred.output.texts == ["a red barn"] and sub.input.structure() == "TI"


def test_an_image_after_an_image_is_scored_against_the_text_the_outcome_uses():
    """The step of an image that follows another image gets the answer's nearest earlier text,
    as ``visual_alignment`` does for the outcome reward (not the input plus the whole answer)."""
    from interleave_bench.types import Prediction

    sample = Sample("s", "b", Interleaved([Segment.of_text("Tell, then draw twice.")]))
    out = Interleaved([Segment.of_text("a red barn"), Segment.of_image(IMG), Segment.of_image(IMG)])
    steps = [[Step("text", 0, 3, 0), Step("image", 4, 8, 1), Step("image", 9, 13, 2)]]
    got = step_rewards(
        None, NativeReward(PrecededImage()), [sample], [Prediction("s", "m", out)], steps
    )
    assert got == [[None, 1.0, 1.0]]  # both images with "a red barn" before them


class StepCritic(TextLength):
    """A critic with a step judge, as ``text_critic`` has: it gets the answer before the step."""

    async def ascore_text_step(self, sample, context, step_text):
        self.seen.append((sample, context, step_text))
        return self.ok(sample.id, 0.3)


def test_text_steps_use_the_critics_step_judge_when_it_has_one():
    from interleave_bench.types import Prediction

    sample = Sample("s", "b", Interleaved([Segment.of_text("Tell, draw, tell.")]))
    out = Interleaved([Segment.of_text("one"), Segment.of_image(IMG), Segment.of_text("two")])
    steps = [[Step("text", 0, 2, 0), Step("image", 3, 7, 1), Step("text", 8, 9, 2)]]
    critic = StepCritic()
    got = step_rewards(NativeReward(critic), None, [sample], [Prediction("s", "m", out)], steps)
    assert got == [[0.3, None, 0.3]]
    assert [(s.id, c.structure(), t) for s, c, t in critic.seen] == [
        ("s", "", "one"),
        ("s", "TI", "two"),
    ]


class FailingStepCritic(TextLength):
    """A step judge whose every call fails with a reason, as an unreachable judge does."""

    async def ascore_text_step(self, sample, context, step_text):
        return self.error(sample.id, "judge unreachable")


class FailingImage(PrecededImage):
    async def ascore(self, samples, predictions):
        return [self.invalid(s.id, "no score in the reply") for s in samples]


def test_failed_step_judgments_are_none_and_counted_by_reason():
    from interleave_bench.types import Prediction

    sample = Sample("s", "b", Interleaved([Segment.of_text("Tell, draw, tell.")]))
    out = Interleaved([Segment.of_text("one"), Segment.of_image(IMG), Segment.of_text("two")])
    steps = [[Step("text", 0, 2, 0), Step("image", 3, 7, 1), Step("text", 8, 9, 2)]]
    failures: dict[str, int] = {}
    got = step_rewards(
        NativeReward(FailingStepCritic(), name="text"),
        NativeReward(FailingImage(), name="visual"),
        [sample],
        [Prediction("s", "m", out)],
        steps,
        failures=failures,
    )
    assert got == [[None, None, None]]  # a failed judge is never a score
    assert failures == {
        "process text: error: judge unreachable": 2,
        "process visual: invalid: no score in the reply": 1,
    }


# --------------------------------------------------------------------------- in the trainer


def test_trainer_uses_scorer_step_rewards_for_process_advantages(tiny_janus, tmp_path):
    """``advantage: process`` with r_t/r_v components: the trainer's advantages equal
    ``process_advantages`` of the stand-in scorers' rewards on each rollout's steps, and the log
    carries the process reward metrics."""
    from interleave_bench.train.rollout import janus_structural_ids
    from interleave_bench.train.trainer import GRPOTrainer

    cfg = TrainConfig(
        model=str(tiny_janus),
        output_dir=str(tmp_path / "run"),
        steps=1,
        prompts_per_step=2,
        group_size=4,
        beta=0.0,
        advantage="process",
        rewards=[
            {"protocol": "text_critic", "name": "text"},
            {"protocol": "visual_alignment", "name": "visual"},
        ],
        generation=dict(GEN),
        save_final=False,
    )
    reward = HybridReward(
        {"text": (NativeReward(TextLength()), 1.0), "visual": (NativeReward(PrecededImage()), 1.0)},
        missing="ignore",
    )
    trainer = GRPOTrainer(cfg, reward=reward)
    picked, rolls, rewards, _ = trainer._collect(0)
    width = max(len(r.trace.token_ids) for r in rolls)
    adv, stats = trainer._advantages(rolls, rewards, width, picked)
    tok = trainer.adapter.processor.tokenizer
    structural = janus_structural_ids(trainer.adapter)
    by_hand, spans = [], []
    for r in rolls:  # r_t: text length / 10; r_v: 1 after text in the answer, else 0.2
        steps = rollout_steps(
            r.trace,
            r.output,
            structural,
            text_of=lambda ids: tok.decode(ids, skip_special_tokens=True),
        )
        segs = list(r.output)
        row = []
        for st in steps:
            seg = None if st.segment is None else segs[st.segment]
            if seg is None:  # text that decoded to blank: no reward
                row.append(None)
            elif st.kind == "text":
                row.append(len(seg.text.strip()) / 10)
            else:
                row.append(1.0 if st.segment > 0 and not segs[st.segment - 1].is_image else 0.2)
        by_hand.append(row)
        spans.append([st.span for st in steps])
    assert any(len(row) > 1 for row in by_hand)
    assert torch.equal(adv, process_advantages(by_hand, spans, 4, width))
    assert stats["reward/process/steps"] == sum(map(len, by_hand)) / len(rolls)
    record = trainer.train_step()
    assert "reward/process_text/mean" in record or "reward/process_image/mean" in record
    # a step judge that fails is logged by reason in the step record, like the outcome's
    trainer.process.text = NativeReward(FailingStepCritic(), name="text")
    record = trainer.train_step()
    failed = {k: n for k, n in record["reward_failures"].items() if k.startswith("process")}
    assert (
        set(failed) == {"process text: error: judge unreachable"}
        and failed["process text: error: judge unreachable"] >= 1
    )
    assert record["reward_failure_count"] >= failed["process text: error: judge unreachable"]


def test_process_options_are_checked_when_the_recipe_loads(tmp_path):
    base = {"model": "m", "output_dir": str(tmp_path)}
    assert TrainConfig(**base).advantage == "outcome"
    assert TrainConfig(**base, process_weight=0.5).advantage == "both"  # older recipes
    with pytest.raises(ValueError, match="process_weight > 0"):
        TrainConfig(**base, advantage="both")
    with pytest.raises(ValueError, match="text_critic"):
        TrainConfig(**base, advantage="process", process_reward="scorers")
    with pytest.raises(ValueError, match="advantage"):
        TrainConfig(**base, advantage="procss")
