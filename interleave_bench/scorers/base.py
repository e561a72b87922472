"""The one scorer interface shared by evaluation and RL rewards.

A scorer turns aligned ``(Sample, Prediction)`` pairs into ``Judgment``s with one batched,
async-capable call. Failures are judgments with ``status`` invalid/error and a reason, never a score.
"""

from __future__ import annotations

import asyncio
import json
import threading
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from typing import Any, TypeVar

from ..judges.engine import in_window
from ..types import Judgment, Prediction, Sample

T = TypeVar("T")
DEFAULT_WINDOW = 64  # jobs started at once by a scorer without a judge engine


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine from sync code, also when an event loop is already running (notebooks,
    async trainers): then it runs on a helper thread with its own loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as e:  # re-raised in the caller's thread
            box["error"] = e

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def check_aligned(samples: Sequence[Sample], predictions: Sequence[Prediction]) -> None:
    if len(samples) != len(predictions):
        raise ValueError(f"{len(samples)} samples but {len(predictions)} predictions")
    for s, p in zip(samples, predictions, strict=True):
        if s.id != p.sample_id:
            raise ValueError(f"prediction for {p.sample_id!r} is aligned with sample {s.id!r}")


class JudgmentMaker:
    """What every scoring object shares: identity, progress reporting, connection cleanup and
    the helpers that make judgments. ``Scorer`` and ``PairwiseScorer`` are its two interfaces."""

    name: str = "scorer"
    protocol_version: str = "1"
    #: True when the scores can sit next to the benchmark's published numbers
    comparable: bool = False
    #: called with each judgment as soon as it exists (progress bars, append-as-you-go files)
    on_judgment: Callable[[Judgment], None] | None = None

    async def aclose(self) -> None:
        """Release connections held for the running event loop (judge clients)."""
        engine = getattr(self, "engine", None)
        if engine is not None:
            await engine.aclose()

    # helpers for subclasses ------------------------------------------------------------------
    async def gather(self, jobs: Iterable[Awaitable[Judgment]]) -> list[Judgment]:
        """Run judgment coroutines concurrently (a bounded window of them: see ``in_window``),
        results in order, reporting each one as it finishes."""

        async def report(job: Awaitable[Judgment]) -> Judgment:
            judgment = await job
            if self.on_judgment is not None:
                self.on_judgment(judgment)
            return judgment

        engine = getattr(self, "engine", None)
        window = engine.window if engine is not None else DEFAULT_WINDOW
        return await in_window((report(j) for j in jobs), window)

    def ok(
        self,
        sample_id: str,
        overall: float,
        scores: dict[str, float | None] | None = None,
        **extra: Any,
    ) -> Judgment:
        return Judgment(
            sample_id,
            self.name,
            self.protocol_version,
            "ok",
            scores=scores or {},
            overall=overall,
            **extra,
        )

    def invalid(self, sample_id: str, reason: str, **extra: Any) -> Judgment:
        return Judgment(
            sample_id, self.name, self.protocol_version, "invalid", reason=reason, **extra
        )

    def error(self, sample_id: str, reason: str, **extra: Any) -> Judgment:
        return Judgment(
            sample_id, self.name, self.protocol_version, "error", reason=reason, **extra
        )


class Scorer(JudgmentMaker, ABC):
    """One prediction per sample. Subclasses implement ``ascore``; ``score`` is the sync wrapper."""

    @abstractmethod
    async def ascore(
        self, samples: Sequence[Sample], predictions: Sequence[Prediction]
    ) -> list[Judgment]:
        """Judge each prediction against its sample (same order, same length)."""

    def score(self, samples: Sequence[Sample], predictions: Sequence[Prediction]) -> list[Judgment]:
        """Sync wrapper: runs ``ascore`` on its own event loop and closes connections after."""

        async def run() -> list[Judgment]:
            try:
                return await self.ascore(samples, predictions)
            finally:
                await self.aclose()

        return run_sync(run())


class PairwiseScorer(JudgmentMaker, ABC):
    """Two models' predictions per sample, judged against each other (an arena). Not a
    ``Scorer``: it has no one-prediction call, so it cannot be handed where one is expected
    (``ibench eval``'s scorers, a training reward)."""

    @abstractmethod
    async def ascore_pairs(
        self,
        samples: Sequence[Sample],
        preds_a: Sequence[Prediction],
        preds_b: Sequence[Prediction],
    ) -> list[Judgment]:
        """Judge A against B on each sample (all three aligned)."""

    @staticmethod
    @abstractmethod
    def rates(judgments: Iterable[Judgment]) -> dict[str, dict[str, float | None]]:
        """Win rates by way of counting -> model -> rate, from the valid judgments."""

    def score_pairs(
        self,
        samples: Sequence[Sample],
        preds_a: Sequence[Prediction],
        preds_b: Sequence[Prediction],
    ) -> list[Judgment]:
        """Sync wrapper of ``ascore_pairs``; closes connections after."""

        async def run() -> list[Judgment]:
            try:
                return await self.ascore_pairs(samples, preds_a, preds_b)
            finally:
                await self.aclose()

        return run_sync(run())


def json_object_in(text: str | None) -> tuple[dict[str, Any] | None, str | None]:
    """The JSON object a judge reply holds (code fences and prose around it tolerated), or the
    reason there is none: ``empty reply``, ``no JSON object`` or ``invalid JSON``."""
    if not text or not text.strip():
        return None, "empty reply"
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return None, "no JSON object"
    try:
        value = json.loads(text[start : end + 1])
    except json.JSONDecodeError:
        return None, "invalid JSON"
    if not isinstance(value, dict):
        return None, "invalid JSON"
    return value, None


class PerItemScorer(Scorer):
    """A scorer that judges each (sample, prediction) pair on its own, all concurrently: the
    judge protocols implement ``_one`` and inherit the batched call."""

    @abstractmethod
    async def _one(self, sample: Sample, prediction: Prediction) -> Judgment:
        """Judge one pair; failures are invalid/error judgments, never exceptions."""

    async def ascore(
        self, samples: Sequence[Sample], predictions: Sequence[Prediction]
    ) -> list[Judgment]:
        check_aligned(samples, predictions)
        return await self.gather(self._one(s, p) for s, p in zip(samples, predictions, strict=True))
