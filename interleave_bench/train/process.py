"""Process-level rewards: one reward per modality step (each text block, each image) of an
answer, from the same scorers the evaluation uses, each step judged in the context it was
generated in. Their normalisation into per-token advantages is ``grpo.process_advantages``."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Literal

from ..scorers.base import Scorer, run_sync
from ..types import Interleaved, Prediction, Sample
from .rewards import NativeReward, RewardList


def _step_records(
    sample: Sample, prediction: Prediction, k: int, context: str
) -> tuple[Sample, Prediction]:
    """Segment ``k`` of the answer as its own (sample, prediction) pair.

    With ``context="prefix"`` the sub-sample's input is the original input followed by the
    answer's earlier segments, so a scorer sees each step in the context it was generated in
    (an image with the text before it, as the method's visual reward asks); with "input" the
    sample is left as it is.
    """
    step_id = f"{sample.id}#step{k}"
    prefix = list(prediction.output.segments[:k]) if context == "prefix" else []
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
        output=Interleaved([prediction.output.segments[k]]),
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


def segment_letter(tokens: list[int], seg: tuple[str, int, int], structural: frozenset[int]) -> str:
    """ "I" for an image segment, "T" for a text one holding real text, "" for one holding only
    structure tokens (the ``<begin_of_image>`` that opens an image, the final EOS)."""
    kind, start, end = seg
    if kind == "image":
        return "I"
    return "T" if any(t not in structural for t in tokens[start:end]) else ""


def prefix_structure_reward(prefix: str, expected: str) -> float:
    """Per-segment (process) structure reward: 1 when the answer so far is a prefix of the
    expected structure (after collapsing text runs), else 0."""
    collapsed: list[str] = []
    for c in prefix:
        if not (c == "T" and collapsed and collapsed[-1] == "T"):
            collapsed.append(c)
    return 1.0 if expected.startswith("".join(collapsed)) else 0.0
