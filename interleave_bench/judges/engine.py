"""The judge engine: cache lookup, one call to the backend, cache write, and running totals.

Every judge-based scorer goes through here, so reruns are free and every run can report requests
sent, cache hits, errors, tokens and cost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from .cache import JudgmentCache
from .request import JudgeBackend, JudgeReply, JudgeRequest, cache_key

T = TypeVar("T")
START_GROUP = 8  # workers started per event-loop turn by in_window


async def in_window(jobs: Iterable[Awaitable[T]], window: int) -> list[T]:
    """Await ``jobs`` with at most ``window`` of them started at once; results in job order.

    A job not yet started has not built its request either (images read and base64-encoded), so
    memory stays bounded on large benchmarks and the first requests leave at once instead of after
    every job's preparation. Workers start ``START_GROUP`` per loop turn: the first requests are
    on the wire while later ones still prepare and connect, and the first round does not leave as
    one burst (replies come back as they left, so a burst recurs every round). The first exception
    cancels the rest and is raised.
    """
    pending = list(jobs)
    results: list[Any] = [None] * len(pending)
    queue = iter(enumerate(pending))

    async def worker() -> None:
        for i, job in queue:
            results[i] = await job

    workers: list[asyncio.Future[None]] = []
    try:
        for k in range(min(max(1, window), len(pending))):
            if k and k % START_GROUP == 0:
                await asyncio.sleep(0)
            workers.append(asyncio.ensure_future(worker()))
        await asyncio.gather(*workers)
    except BaseException:
        for w in workers:
            w.cancel()
        for _, job in queue:  # never started: close them so nothing warns
            close = getattr(job, "close", None)
            if close is not None:
                close()
        raise
    return results


@dataclass
class JudgeStats:
    calls: int = 0
    attempts: int = 0
    cache_hits: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    over_budget: int = 0

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


class JudgeEngine:
    def __init__(
        self,
        backend: JudgeBackend,
        cache: JudgmentCache | None = None,
        on_reply: Callable[[JudgeReply], None] | None = None,
        max_cost: float | None = None,
    ) -> None:
        self.backend = backend
        self.cache = cache
        self.stats = JudgeStats()
        self.on_reply = on_reply
        self.max_cost = max_cost
        self._reserved = 0.0  # upper-bound cost of the requests in flight

    @property
    def model(self) -> str:
        return self.backend.model

    @property
    def window(self) -> int:
        """How many judge jobs a scorer keeps started: twice what the backend runs at once, so a
        prepared request is waiting whenever a slot frees."""
        return 2 * max(1, int(getattr(self.backend, "parallelism", 16)))

    async def ask(
        self, request: JudgeRequest, *, protocol: str, template_sha256: str
    ) -> JudgeReply:
        key = cache_key(self.backend.model, protocol, template_sha256, request)
        if self.cache is not None and (hit := self.cache.get(key)) is not None:
            self.stats.cache_hits += 1
            self._notify(hit)
            return hit
        need = 0.0
        if self.max_cost is not None:
            need = self.estimate_cost(request)
            if self.stats.cost + self._reserved + need > self.max_cost:
                self.stats.over_budget += 1
                reply = JudgeReply(
                    "error",
                    error=f"not sent: it could take the cost past the budget of "
                    f"${self.max_cost:g} (${self.stats.cost:.4f} spent)",
                )
                self._notify(reply)
                return reply
            self._reserved += need
        try:
            reply = await self.backend.complete(request)
        finally:
            self._reserved -= need
        self.stats.calls += 1
        self.stats.attempts += reply.attempts
        self.stats.prompt_tokens += reply.usage.get("prompt_tokens", 0)
        self.stats.completion_tokens += reply.usage.get("completion_tokens", 0)
        self.stats.cost += reply.cost
        if reply.status != "ok":
            self.stats.errors += 1
        elif self.cache is not None:
            self.cache.put(key, reply, judge=self.backend.model, protocol=protocol)
        self._notify(reply)
        return reply

    def estimate_cost(self, request: JudgeRequest) -> float:
        """The backend's upper-bound cost of ``request`` (0 for a backend without prices)."""
        estimate = getattr(self.backend, "estimate_cost", None)
        return 0.0 if estimate is None else float(estimate(request))

    async def aclose(self) -> None:
        if self.cache is not None:
            self.cache.close()
        close = getattr(self.backend, "aclose", None)
        if close is not None:
            await close()

    def _notify(self, reply: JudgeReply) -> None:
        if self.on_reply is not None:
            self.on_reply(reply)
