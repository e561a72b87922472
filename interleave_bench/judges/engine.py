"""The judge engine: cache lookup, one call to the backend, cache write, and running totals.

Every judge-based scorer goes through here, so reruns are free and every run can report requests
sent, cache hits, errors, tokens and cost.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

from .cache import JudgmentCache
from .request import JudgeBackend, JudgeReply, JudgeRequest, cache_key


@dataclass
class JudgeStats:
    calls: int = 0
    attempts: int = 0
    cache_hits: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


class JudgeEngine:
    def __init__(
        self,
        backend: JudgeBackend,
        cache: JudgmentCache | None = None,
        on_reply: Callable[[JudgeReply], None] | None = None,
    ) -> None:
        self.backend = backend
        self.cache = cache
        self.stats = JudgeStats()
        self.on_reply = on_reply

    @property
    def model(self) -> str:
        return self.backend.model

    async def ask(
        self, request: JudgeRequest, *, protocol: str, template_sha256: str
    ) -> JudgeReply:
        key = cache_key(self.backend.model, protocol, template_sha256, request)
        if self.cache is not None and (hit := self.cache.get(key)) is not None:
            self.stats.cache_hits += 1
            self._notify(hit)
            return hit
        reply = await self.backend.complete(request)
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

    async def aclose(self) -> None:
        if self.cache is not None:
            self.cache.flush()
        close = getattr(self.backend, "aclose", None)
        if close is not None:
            await close()

    def _notify(self, reply: JudgeReply) -> None:
        if self.on_reply is not None:
            self.on_reply(reply)
