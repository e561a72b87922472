"""Process-level rewards: one reward per modality step (each text block, each image) of an
answer, from the same scorers the evaluation uses, each step judged in the context it was
generated in. Their normalisation into per-token advantages is ``grpo.process_advantages``."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import Any, Literal

from ..scorers.base import Scorer, run_sync
from ..types import Interleaved, Prediction, Sample, Segment
from .rewards import NativeReward, RewardList, judgment_reward
from .steps import Step, rollout_steps, structure_of_steps


def _step_records(
    sample: Sample, prediction: Prediction, k: int, context: str, with_text: bool = False
) -> tuple[Sample, Prediction]:
    """Segment ``k`` of the answer as its own (sample, prediction) pair.

    With ``context="prefix"`` the sub-sample's input is the original input followed by the
    answer's earlier segments, so a scorer sees each step in the context it was generated in
    (an image with the text before it, as the method's visual reward asks); with "input" the
    sample is left as it is. ``with_text``: an image step's prediction also holds the nearest
    non-blank text segment before it in the answer (when there is one), so a scorer that aligns
    each image with its preceding text *in the answer* scores exactly this image against the
    text the outcome reward uses for it (``visual_alignment.image_contexts``), also when images
    follow each other.
    """
    step_id = f"{sample.id}#step{k}"
    segs = prediction.output.segments
    lead: list[Segment] = []
    cut = k  # the answer segments before this step's own ones
    if with_text and segs[k].is_image:
        texts = [i for i in range(k) if not segs[i].is_image and (segs[i].text or "").strip()]
        if texts:
            cut = texts[-1]
            lead = [segs[cut]]
    prefix = list(segs[:cut]) if context == "prefix" else []
    sub_sample = Sample(
        id=step_id,
        benchmark=sample.benchmark,
        input=Interleaved([*sample.input.segments, *prefix]),
        gold=sample.gold,
        category=sample.category,
        task=sample.task,
        metadata={**sample.metadata, "parent_id": sample.id, "step": k},
    )
    sub_prediction = Prediction(
        sample_id=step_id,
        model=prediction.model,
        output=Interleaved([*lead, segs[k]]),
        settings=prediction.settings,
        error=prediction.error,
    )
    return sub_sample, sub_prediction


async def aprocess_rewards(
    text_scorer: Scorer | None,
    image_scorer: Scorer | None,
    samples: Sequence[Sample],
    predictions: Sequence[Prediction],
    *,
    context: Literal["prefix", "input"] = "prefix",
    key: str | None = None,
) -> list[RewardList]:
    """One reward per output segment of each prediction: ``result[i][k]`` is for
    ``predictions[i].output[k]`` (and so for ``DecodeTrace.segments[k]`` of its rollout).

    Text segments go to ``text_scorer``, images to ``image_scorer``, each as a one-segment
    prediction (see ``_step_records``); all steps of the batch go to each scorer in one call. A
    modality without a scorer, and every invalid/error judgment, gives ``None``.
    """
    if context not in ("prefix", "input"):
        raise ValueError(f"context must be 'prefix' or 'input', got {context!r}")
    if len(samples) != len(predictions):
        raise ValueError(f"{len(samples)} samples but {len(predictions)} predictions")
    out: list[RewardList] = [[None] * len(p.output) for p in predictions]
    jobs = []
    for scorer, is_image in ((text_scorer, False), (image_scorer, True)):
        if scorer is None:
            continue
        where = [
            (i, k)
            for i, p in enumerate(predictions)
            for k, seg in enumerate(p.output)
            if seg.is_image == is_image
        ]
        if where:
            pairs = [_step_records(samples[i], predictions[i], k, context) for i, k in where]
            jobs.append((where, NativeReward(scorer, key=key).acall(*zip(*pairs, strict=True))))
    results = await asyncio.gather(*(job for _, job in jobs))
    for (where, _), rewards in zip(jobs, results, strict=True):
        for (i, k), r in zip(where, rewards, strict=True):
            out[i][k] = r
    return out


def process_rewards_batch(
    text_scorer: Scorer | None,
    image_scorer: Scorer | None,
    samples: Sequence[Sample],
    predictions: Sequence[Prediction],
    *,
    context: Literal["prefix", "input"] = "prefix",
    key: str | None = None,
) -> list[RewardList]:
    """Sync ``aprocess_rewards``; closes the scorers' connections afterwards."""

    async def run() -> list[RewardList]:
        try:
            return await aprocess_rewards(
                text_scorer, image_scorer, samples, predictions, context=context, key=key
            )
        finally:
            for scorer in {id(s): s for s in (text_scorer, image_scorer) if s}.values():
                await scorer.aclose()

    return run_sync(run())


def process_rewards(
    text_scorer: Scorer | None,
    image_scorer: Scorer | None,
    sample: Sample,
    prediction: Prediction,
    *,
    context: Literal["prefix", "input"] = "prefix",
    key: str | None = None,
) -> RewardList:
    """The per-segment rewards of one prediction (see ``aprocess_rewards``)."""
    return process_rewards_batch(
        text_scorer, image_scorer, [sample], [prediction], context=context, key=key
    )[0]


async def astep_rewards(
    text: NativeReward | None,
    image: NativeReward | None,
    samples: Sequence[Sample],
    predictions: Sequence[Prediction],
    steps: Sequence[Sequence[Step]],
    *,
    context: Literal["prefix", "input"] = "prefix",
    failures: dict[str, int] | None = None,
) -> list[RewardList]:
    """One reward per step (``train.steps``) of each rollout: ``result[i][j]`` is for
    ``steps[i][j]``, ready for ``grpo.process_advantages``. ``failures`` (when given) counts
    the step judgments that were not ok, as ``"process <reward>: <status>: <reason>"``.

    Text steps go to ``text`` (r_t on that text block, in the context of the input and the
    answer's earlier segments), image steps to ``image`` (r_v of that image against the text
    before it: the sub-prediction holds that text and the image). Each reward sees all steps of
    the batch in one call. ``None``: a step without an output segment (an image that failed to
    decode, text that decoded to nothing), a modality without a reward, or a failed judgment.
    """
    if not len(samples) == len(predictions) == len(steps):
        raise ValueError(
            f"{len(samples)} samples, {len(predictions)} predictions, {len(steps)} step lists"
        )
    out: list[RewardList] = [[None] * len(s) for s in steps]
    jobs = []
    for reward, kind in ((text, "text"), (image, "image")):
        where = [
            (i, j, st.segment)
            for i, row in enumerate(steps)
            for j, st in enumerate(row)
            if st.kind == kind and st.segment is not None
        ]
        if reward is None or not where:
            continue
        if kind == "text" and hasattr(reward.scorer, "ascore_text_step"):
            jobs.append((where, _text_steps(reward, samples, predictions, where)))
            continue
        pairs = [
            _step_records(samples[i], predictions[i], k, context, with_text=True)
            for i, _, k in where
        ]
        jobs.append((where, reward.acall(*zip(*pairs, strict=True))))
    results = await asyncio.gather(*(job for _, job in jobs))
    for (where, _), rewards in zip(jobs, results, strict=True):
        for (i, j, _), r in zip(where, rewards, strict=True):
            out[i][j] = r
    if failures is not None:  # each reward ran once above, so its last judgments are the steps'
        for reward in {id(r): r for r in (text, image) if r is not None}.values():
            for jd in reward.last_judgments:
                if jd.status != "ok":
                    why = f"process {reward.__name__}: {jd.status}: {jd.reason or 'no reason'}"
                    failures[why] = failures.get(why, 0) + 1
    return out


async def _text_steps(
    reward: NativeReward,
    samples: Sequence[Sample],
    predictions: Sequence[Prediction],
    where: list[tuple[int, int, int]],
) -> RewardList:
    """Text steps through the scorer's own step judge (``text_critic.ascore_text_step``: the
    critic sees the answer before the step, then judges the step)."""
    scorer: Any = reward.scorer
    jobs = []
    for i, _, k in where:
        segs = predictions[i].output.segments
        text = segs[k].text or ""
        jobs.append(scorer.ascore_text_step(samples[i], Interleaved(list(segs[:k])), text))
    judgments = await scorer.gather(jobs)
    reward.last_judgments = list(judgments)
    return [judgment_reward(j, reward.key) for j in judgments]


def step_rewards(
    text: NativeReward | None,
    image: NativeReward | None,
    samples: Sequence[Sample],
    predictions: Sequence[Prediction],
    steps: Sequence[Sequence[Step]],
    *,
    context: Literal["prefix", "input"] = "prefix",
    failures: dict[str, int] | None = None,
) -> list[RewardList]:
    """Sync ``astep_rewards``; closes the rewards' connections afterwards."""

    async def run() -> list[RewardList]:
        try:
            return await astep_rewards(
                text, image, samples, predictions, steps, context=context, failures=failures
            )
        finally:
            for reward in {id(r): r for r in (text, image) if r}.values():
                await reward.aclose()

    return run_sync(run())


def prefix_structure_reward(prefix: str, expected: str) -> float:
    """Per-segment (process) structure reward: 1 when the answer so far is a prefix of the
    expected structure (after collapsing text runs), else 0."""
    collapsed: list[str] = []
    for c in prefix:
        if not (c == "T" and collapsed and collapsed[-1] == "T"):
            collapsed.append(c)
    return 1.0 if expected.startswith("".join(collapsed)) else 0.0


# --------------------------------------------------------------------------- in the trainer

#: the reward protocols whose scorers give process rewards: text steps, image steps
TEXT_STEP_PROTOCOL, IMAGE_STEP_PROTOCOL = "text_critic", "visual_alignment"


def step_components(
    specs: Sequence[dict[str, Any]] | None, reward: Any
) -> tuple[NativeReward | None, NativeReward | None]:
    """The run's own reward components that score text steps (``text_critic``) and image steps
    (``visual_alignment``), found by protocol in the recipe's ``rewards``: the same scorer objects
    (and judgment caches) as the outcome reward."""
    found: dict[str, NativeReward | None] = {TEXT_STEP_PROTOCOL: None, IMAGE_STEP_PROTOCOL: None}
    parts = getattr(reward, "components", None)
    for spec in specs or []:
        protocol = spec.get("protocol")
        if protocol not in found:
            continue
        name = str(spec.get("name") or protocol)
        part = parts[name][0] if parts is not None and name in parts else reward
        found[protocol] = part if isinstance(part, NativeReward) else None
    return found[TEXT_STEP_PROTOCOL], found[IMAGE_STEP_PROTOCOL]


class ProcessSupervision:
    """Per-token process advantages for a GRPO step (``advantage: process|both``).

    Each rollout's steps come from ``train.steps.rollout_steps`` (one list for the trace and the
    output); each step's reward from ``step_rewards`` with the recipe's ``text_critic`` and
    ``visual_alignment`` components (``process_reward: scorers``), or the structure check that
    the steps so far follow ``expected`` (``structure``); ``grpo.process_advantages`` turns them
    into a ``(B, T)`` tensor.
    """

    def __init__(self, cfg: Any, adapter: Any, reward: Any, structural: frozenset[int]) -> None:
        self.cfg = cfg
        self.structural = structural
        self.failures: dict[str, int] = {}  # the latest step's failed step judgments, by reason
        tok = getattr(getattr(adapter, "processor", None), "tokenizer", None)
        self.text_of = None if tok is None else _decoder(tok)
        self.text, self.image = step_components(cfg.rewards, reward)
        mode = cfg.process_reward
        if mode == "auto":
            mode = "scorers" if (self.text or self.image) else "structure"
        if mode == "scorers" and not (self.text or self.image):
            raise ValueError(
                "process_reward: scorers needs a rewards component with protocol "
                f"{TEXT_STEP_PROTOCOL} or {IMAGE_STEP_PROTOCOL}"
            )
        self.mode = mode

    def steps(self, rolls: Sequence[Any]) -> list[list[Step]]:
        return [
            rollout_steps(r.trace, r.output, self.structural, text_of=self.text_of) for r in rolls
        ]

    def rewards(
        self, samples: Sequence[Sample], predictions: Sequence[Prediction], steps: list[list[Step]]
    ) -> list[RewardList]:
        self.failures = {}
        if self.mode == "structure":
            expected = self.cfg.expected or ""
            return [
                [
                    prefix_structure_reward(structure_of_steps(row[: k + 1]), expected)
                    for k in range(len(row))
                ]
                for row in steps
            ]
        return step_rewards(
            self.text, self.image, samples, predictions, steps, failures=self.failures
        )

    def advantages(
        self, samples: Sequence[Sample], rolls: Sequence[Any], width: int
    ) -> tuple[Any, dict[str, float]]:
        """``(advantages (B, width), metrics)``: ``reward/process_<kind>/mean`` and
        ``/none_frac`` over the step rewards of each kind, ``reward/process/steps`` per rollout."""
        from .grpo import process_advantages
        from .rollout import rollout_predictions

        reps, preds = rollout_predictions(rolls, samples, self.cfg.model)
        steps = self.steps(rolls)
        values = self.rewards(reps, preds, steps)
        adv = process_advantages(
            values, [[s.span for s in row] for row in steps], self.cfg.group_size, width
        )
        metrics: dict[str, float] = {
            "reward/process/steps": sum(map(len, steps)) / max(1, len(steps))
        }
        for kind in ("text", "image"):  # always both keys: every process logs the same ones
            got = [
                v
                for row, vals in zip(steps, values, strict=True)
                for s, v in zip(row, vals, strict=True)
                if s.kind == kind
            ]
            ok = [v for v in got if v is not None]
            metrics[f"reward/process_{kind}/mean"] = sum(ok) / len(ok) if ok else math.nan
            metrics[f"reward/process_{kind}/none_frac"] = 1 - len(ok) / len(got) if got else 0.0
        return adv, metrics


def _decoder(tokenizer: Any) -> Any:
    def text_of(ids: Sequence[int]) -> str:
        return str(tokenizer.decode(list(ids), skip_special_tokens=True))

    return text_of
