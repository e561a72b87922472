"""Any scorer as a reward: the evaluation's own ``Scorer`` objects, with no second scoring path.

A reward is ``judgment.overall`` (or one named sub-score) of an ``ok`` judgment; an ``invalid`` or
``error`` judgment is ``None``, never 0, so the advantage code can leave it out of the group
baseline instead of punishing the policy for a judge that failed.

Shapes:

- ``as_trl_reward`` / ``as_async_trl_reward``: TRL's reward-function signature
  ``(prompts, completions, completion_ids=None, **columns) -> list[float | None]``; text only,
  since TRL hands rewards no images.
- ``NativeReward``: ``(samples, predictions) -> list[float | None]`` on our own records, images
  included.
- ``HybridReward``: weighted text/visual/format components, summed before or after group
  normalisation, with per-component values kept for logging.
- ``process_rewards`` (in ``train.process``): one reward per modality segment (each text block,
  each image), from the same scorers applied to one segment at a time.
"""

from __future__ import annotations

import asyncio
import inspect
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..scorers.base import Scorer, run_sync
from ..types import Interleaved, Judgment, Prediction, Sample, Segment

RewardList = list[float | None]
SampleBuilder = Callable[[int, Any, Mapping[str, Any]], Sample]
PredictionBuilder = Callable[[Sample, Any, Sequence[int] | None], Prediction]
HybridMode = Literal["sum_then_normalise", "normalise_then_sum"]
#: a reward component: a NativeReward, or any callable (samples, predictions) -> rewards, sync or
#: async
RewardLike = Callable[[Sequence[Sample], Sequence[Prediction]], Any]


def judgment_reward(judgment: Judgment, key: str | None = None) -> float | None:
    """The reward a judgment gives: ``overall`` (or ``scores[key]``) when ok, else ``None``."""
    if judgment.status != "ok":
        return None
    value = judgment.overall if key is None else judgment.scores.get(key)
    if value is None or not math.isfinite(value):
        return None
    return float(value)


# --------------------------------------------------------------------------- native shape


class NativeReward:
    """A scorer as a reward on ``Sample``s and interleaved ``Prediction``s (images included).

    Args:
        scorer: any ``Scorer`` (the object ``ibench eval`` uses).
        key: reward with ``judgment.scores[key]`` instead of ``overall`` (one aspect of a
            multi-aspect judge); a judgment without that key gives ``None``.
        name: the name logs show; default the scorer's name (and key).

    ``last_judgments`` keeps the latest call's judgments, so a trainer can log why a reward is
    ``None``. The sync call closes the scorer's connections afterwards (it runs its own event
    loop); ``acall`` leaves them to the caller's loop and ``aclose``.
    """

    def __init__(self, scorer: Scorer, *, key: str | None = None, name: str | None = None) -> None:
        self.scorer = scorer
        self.key = key
        self.__name__ = name or (scorer.name if key is None else f"{scorer.name}.{key}")
        self.last_judgments: list[Judgment] = []

    def _rewards(self, judgments: list[Judgment], n: int) -> RewardList:
        if len(judgments) != n:
            raise RuntimeError(f"{self.__name__}: {len(judgments)} judgments for {n} predictions")
        self.last_judgments = judgments
        return [judgment_reward(j, self.key) for j in judgments]

    async def acall(
        self, samples: Sequence[Sample], predictions: Sequence[Prediction]
    ) -> RewardList:
        return self._rewards(await self.scorer.ascore(samples, predictions), len(predictions))

    def __call__(self, samples: Sequence[Sample], predictions: Sequence[Prediction]) -> RewardList:
        return self._rewards(self.scorer.score(samples, predictions), len(predictions))

    async def aclose(self) -> None:
        await self.scorer.aclose()


# --------------------------------------------------------------------------- TRL shape


def interleaved_from_chat(value: Any) -> Interleaved:
    """Text segments from a TRL prompt or completion: a string, one message, or a list of
    messages whose ``content`` is a string or a list of parts. Non-text parts are left out:
    TRL never hands reward functions the images themselves."""
    if isinstance(value, Interleaved):
        return value
    if isinstance(value, str):
        return Interleaved([Segment.of_text(value)])
    messages = [value] if isinstance(value, Mapping) else list(value)
    segments: list[Segment] = []
    for message in messages:
        content = message.get("content") if isinstance(message, Mapping) else message
        if isinstance(content, str):
            segments.append(Segment.of_text(content))
        elif isinstance(content, Sequence):
            for part in content:
                if isinstance(part, Mapping) and part.get("type") == "text":
                    segments.append(Segment.of_text(str(part.get("text", ""))))
                elif isinstance(part, str):
                    segments.append(Segment.of_text(part))
    return Interleaved(segments)


def _as_interleaved(value: Any) -> Interleaved | None:
    if value is None or isinstance(value, Interleaved):
        return value
    if isinstance(value, str):
        return Interleaved([Segment.of_text(value)])
    return Interleaved.from_list(list(value), "gold")


def trl_sample(index: int, prompt: Any, row: Mapping[str, Any]) -> Sample:
    """The default ``Sample`` for one TRL row.

    A ``sample`` column (a ``Sample`` or its JSON form) is used as is; otherwise the sample is
    built from the prompt, with ``id``, ``benchmark``, ``category``, ``task``, ``gold`` (text,
    or a segment list in our schema) and ``metadata`` taken from same-named columns if present.
    """
    given = row.get("sample")
    if isinstance(given, Sample):
        return given
    if isinstance(given, Mapping):
        return Sample.from_dict(given, "sample")
    metadata = row.get("metadata")
    return Sample(
        id=str(row.get("id", row.get("sample_id", f"trl-{index}"))),
        benchmark=str(row.get("benchmark", "trl")),
        input=interleaved_from_chat(prompt),
        gold=_as_interleaved(row.get("gold")),
        category=row.get("category") if isinstance(row.get("category"), str) else None,
        task=row.get("task") if isinstance(row.get("task"), str) else None,
        metadata=dict(metadata) if isinstance(metadata, Mapping) else {},
    )


def trl_prediction(
    sample: Sample, completion: Any, completion_ids: Sequence[int] | None
) -> Prediction:
    """The default ``Prediction``: the completion's text as an interleaved answer."""
    return Prediction(sample_id=sample.id, model="policy", output=interleaved_from_chat(completion))


def _trl_batch(
    prompts: Sequence[Any],
    completions: Sequence[Any],
    completion_ids: Sequence[Sequence[int]] | None,
    columns: Mapping[str, Any],
    build_sample: SampleBuilder,
    build_prediction: PredictionBuilder,
) -> tuple[list[Sample], list[Prediction]]:
    n = len(completions)
    if len(prompts) != n:
        raise ValueError(f"{len(prompts)} prompts but {n} completions")
    if completion_ids is not None and len(completion_ids) != n:
        raise ValueError(f"{len(completion_ids)} completion_ids but {n} completions")
    samples, predictions = [], []
    for i in range(n):
        # per-row columns are lists of length n (TRL repeats them per generation); anything
        # else (trainer_state, step) is passed to every row unchanged
        row = {
            k: v[i] if isinstance(v, (list, tuple)) and len(v) == n else v
            for k, v in columns.items()
        }
        sample = build_sample(i, prompts[i], row)
        ids = None if completion_ids is None else completion_ids[i]
        prediction = build_prediction(sample, completions[i], ids)
        if prediction.sample_id != sample.id:  # keep the scorer's alignment check satisfied
            raise ValueError(
                f"build_prediction gave sample_id {prediction.sample_id!r} for {sample.id!r}"
            )
        samples.append(sample)
        predictions.append(prediction)
    return samples, predictions


def as_trl_reward(
    scorer: Scorer,
    *,
    build_sample: SampleBuilder = trl_sample,
    build_prediction: PredictionBuilder = trl_prediction,
    key: str | None = None,
    name: str | None = None,
) -> Callable[..., RewardList]:
    """A TRL reward function (sync) backed by ``scorer``; ``None`` where the judgment is not ok.

    ``build_sample(index, prompt, row)`` and ``build_prediction(sample, completion, ids)`` turn
    a TRL row into our records (``row`` maps each dataset column to this row's value); the
    defaults are ``trl_sample`` and ``trl_prediction``. The function's ``__name__`` is the
    reward's name, which TRL uses as the logging key. Safe to call inside a running event loop.
    """
    native = NativeReward(scorer, key=key, name=name)

    def reward(
        prompts: Sequence[Any],
        completions: Sequence[Any],
        completion_ids: Sequence[Sequence[int]] | None = None,
        **columns: Any,
    ) -> RewardList:
        samples, predictions = _trl_batch(
            prompts, completions, completion_ids, columns, build_sample, build_prediction
        )
        return native(samples, predictions)

    reward.__name__ = reward.__qualname__ = native.__name__
    reward.native = native  # type: ignore[attr-defined]
    return reward


def as_async_trl_reward(
    scorer: Scorer,
    *,
    build_sample: SampleBuilder = trl_sample,
    build_prediction: PredictionBuilder = trl_prediction,
    key: str | None = None,
    name: str | None = None,
) -> Callable[..., Awaitable[RewardList]]:
    """Like ``as_trl_reward`` but an ``async def``, so judge calls of several reward functions
    overlap (TRL awaits async reward functions concurrently). Connections stay open on the
    calling loop for reuse; ``await reward.native.aclose()`` releases them."""
    native = NativeReward(scorer, key=key, name=name)

    async def reward(
        prompts: Sequence[Any],
        completions: Sequence[Any],
        completion_ids: Sequence[Sequence[int]] | None = None,
        **columns: Any,
    ) -> RewardList:
        samples, predictions = _trl_batch(
            prompts, completions, completion_ids, columns, build_sample, build_prediction
        )
        return await native.acall(samples, predictions)

    reward.__name__ = reward.__qualname__ = native.__name__
    reward.native = native  # type: ignore[attr-defined]
    return reward


# --------------------------------------------------------------------------- hybrid rewards


def group_normalise(
    values: Sequence[float | None], group_size: int, *, eps: float = 1e-4
) -> RewardList:
    """``(r - mean) / (std + eps)`` within each group of ``group_size`` adjacent values, ``None``
    left out of the statistics and kept: ``grpo.group_normalise`` (one implementation)."""
    from .grpo import group_normalise as normalise  # torch only when a hybrid normalises

    return normalise(values, group_size, eps=eps)


def _mean_std(values: Sequence[float | None]) -> tuple[float, float, float]:
    """(mean, unbiased std, share of None) for logging; NaN mean when nothing applies."""
    valid = [v for v in values if v is not None]
    if not valid:
        return math.nan, math.nan, 1.0 if values else 0.0
    mean = sum(valid) / len(valid)
    var = sum((v - mean) ** 2 for v in valid) / (len(valid) - 1) if len(valid) > 1 else 0.0
    return mean, math.sqrt(var), 1.0 - len(valid) / len(values)


@dataclass
class HybridResult:
    """What ``HybridReward`` returns: the total per completion and each component's values.

    ``components`` are the raw rewards (after ``fill``); ``normalised`` the group-normalised
    ones in "normalise_then_sum" mode (empty otherwise).
    """

    total: RewardList
    components: dict[str, RewardList]
    normalised: dict[str, RewardList] = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        """``reward/<name>/mean``, ``/std``, ``/none_frac`` per component and for the total."""
        out: dict[str, float] = {}
        for name, values in [*self.components.items(), ("total", self.total)]:
            mean, std, none_frac = _mean_std(values)
            out[f"reward/{name}/mean"] = mean
            out[f"reward/{name}/std"] = std
            out[f"reward/{name}/none_frac"] = none_frac
        return out


class HybridReward:
    """Weighted components (for example text, visual and format rewards) as one reward.

    Args:
        components: ``{name: (reward, weight)}``; a reward is a ``NativeReward`` or any callable
            ``(samples, predictions) -> list[float | None]``, sync or async.
        mode: "sum_then_normalise": the total is ``sum_k w_k * r_k`` of the raw rewards and the
            advantage step normalises it within the group (the paper's unweighted sum, TRL's
            weighted sum). "normalise_then_sum": each component is first normalised within its
            group (``group_normalise``), then ``sum_k w_k * z_k``; a component on a large scale
            (a 0-10 judge next to a 0-1 format check) then cannot drown the others. The total is
            already in group-normalised units; the advantage step may normalise it again.
        group_size: completions per prompt, needed by "normalise_then_sum".
        missing: what a ``None`` component does to the total. "drop" (default): the total is
            ``None`` (the completion is left out of the baseline), so a failed judge never
            counts as a low score. "ignore": the sum runs over the components present (TRL's
            ``nansum``), ``None`` only when every component is missing.
        fill: ``{name: value}`` used instead of ``None`` for that component, before anything
            else (for example ``{"visual": 0.0}`` when an answer without images should score 0
            on image-text alignment rather than be "not applicable").
        eps: the normalisation's ``eps``.
    """

    def __init__(
        self,
        components: Mapping[str, tuple[RewardLike, float]],
        mode: HybridMode = "sum_then_normalise",
        *,
        group_size: int | None = None,
        missing: Literal["drop", "ignore"] = "drop",
        fill: Mapping[str, float] | None = None,
        eps: float = 1e-4,
    ) -> None:
        if not components:
            raise ValueError("HybridReward needs at least one component")
        if mode not in ("sum_then_normalise", "normalise_then_sum"):
            raise ValueError(f"unknown mode {mode!r}")
        if mode == "normalise_then_sum" and (group_size is None or group_size < 1):
            raise ValueError("mode 'normalise_then_sum' needs group_size >= 1")
        if missing not in ("drop", "ignore"):
            raise ValueError(f"missing must be 'drop' or 'ignore', got {missing!r}")
        for name, (_, weight) in components.items():
            if not math.isfinite(weight):
                raise ValueError(f"component {name!r}: weight must be finite, got {weight}")
        unknown = set(fill or {}) - set(components)
        if unknown:
            raise ValueError(f"fill names unknown components: {sorted(unknown)}")
        self.components = dict(components)
        self.mode = mode
        self.group_size = group_size
        self.missing = missing
        self.fill = dict(fill or {})
        self.eps = eps
        self.__name__ = "hybrid"

    async def _one(self, reward: RewardLike, samples: Any, predictions: Any) -> RewardList:
        acall = getattr(reward, "acall", None)
        if acall is not None:
            values = await acall(samples, predictions)
        else:
            values = reward(samples, predictions)
            if inspect.isawaitable(values):
                values = await values
        values = list(values)
        if len(values) != len(predictions):
            raise RuntimeError(f"a reward gave {len(values)} values for {len(predictions)}")
        return [None if v is None or math.isnan(float(v)) else float(v) for v in values]

    async def acall(
        self, samples: Sequence[Sample], predictions: Sequence[Prediction]
    ) -> HybridResult:
        """Score with every component concurrently and combine."""
        names = list(self.components)
        results = await asyncio.gather(
            *(self._one(self.components[n][0], samples, predictions) for n in names)
        )
        return self.combine(dict(zip(names, results, strict=True)))

    def __call__(
        self, samples: Sequence[Sample], predictions: Sequence[Prediction]
    ) -> HybridResult:
        async def run() -> HybridResult:
            try:
                return await self.acall(samples, predictions)
            finally:
                await self.aclose()

        return run_sync(run())

    async def aclose(self) -> None:
        for reward, _ in self.components.values():
            close = getattr(reward, "aclose", None)
            if close is not None:
                await close()

    def combine(self, raw: Mapping[str, RewardList]) -> HybridResult:
        """The total from per-component values (``fill`` applied here); public so a trainer can
        combine values it already has and tests can check the arithmetic by hand."""
        if set(raw) != set(self.components):
            raise ValueError(f"expected components {sorted(self.components)}, got {sorted(raw)}")
        raw = {
            n: [self.fill[n] if v is None and n in self.fill else v for v in values]
            for n, values in raw.items()
        }
        normalised: dict[str, RewardList] = {}
        terms = dict(raw)
        if self.mode == "normalise_then_sum":
            assert self.group_size is not None
            normalised = {
                n: group_normalise(v, self.group_size, eps=self.eps) for n, v in raw.items()
            }
            terms = normalised
        n_items = len(next(iter(raw.values())))
        total: RewardList = []
        for i in range(n_items):
            parts = [(terms[n][i], self.components[n][1]) for n in terms]
            present = [w * v for v, w in parts if v is not None]
            if not present or (self.missing == "drop" and len(present) < len(parts)):
                total.append(None)
            else:
                total.append(sum(present))
        return HybridResult(total=total, components=dict(raw), normalised=normalised)


# --------------------------------------------------------------------------- process rewards
