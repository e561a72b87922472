"""An async judge client for any OpenAI-compatible endpoint.

What the existing harnesses get wrong and this gets right: many requests in flight (a concurrency
limit, optional requests- and tokens-per-minute limits), retries only where a retry can help (429,
5xx, timeouts, dropped connections) with exponential backoff, jitter and ``Retry-After`` (seconds
or an HTTP date; an unparseable one falls back to backoff), each wait capped by ``max_retry_wait``
and never run past the overall deadline, sleeping *outside* the concurrency slot; other 4xx fail
at once; a reply without content is an error, never a judgment; token usage and cost per call.
The API key comes from an environment variable and is redacted from every message we produce.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from .request import JudgeReply, JudgeRequest, Part
from .transport import Rejected, Transient, make_transport

#: USD per million tokens (input, output); override with ``prices=`` or ``--price-table``
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-2024-08-06": (2.50, 10.00),
    "gpt-4o-2024-05-13": (5.00, 15.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
}


class JudgeUnavailable(RuntimeError):
    """The preflight probe failed: wrong URL, model or key. Raised before a long run starts."""


@dataclass
class JudgeConfig:
    model: str
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 16
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    max_retries: int = 6
    timeout: float = 120.0
    deadline: float | None = None
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    #: the longest one wait between attempts may be, whatever ``Retry-After`` asks for
    max_retry_wait: float = 60.0
    transport: str = "sdk"
    prices: dict[str, tuple[float, float]] = field(default_factory=lambda: dict(DEFAULT_PRICES))


async def _let_follow_ups_leave() -> None:
    """Yield three loop turns after a reply freed its slot: the woken waiter calls ``post`` in the
    first, aiohttp writes its body in the second (a task before Python 3.12), so every follow-up
    request of a burst of replies is on the wire before any reply is post-processed (parsing, the
    cache, the scorer). Each round trip then waits for the sends ahead of it, not the work."""
    for _ in range(3):
        await asyncio.sleep(0)


class RateLimiter:
    """Token buckets for requests and tokens per minute; waiting happens before a slot is taken."""

    def __init__(self, rpm: float | None, tpm: float | None) -> None:
        self.rpm, self.tpm = rpm, tpm
        self._req = rpm or 0.0
        self._tok = tpm or 0.0
        self._last = time.monotonic()
        self._lock = asyncio.Lock()
        self.active = bool(rpm or tpm)

    async def acquire(self, tokens: int) -> None:
        if not self.active:
            return
        async with self._lock:
            while True:
                now = time.monotonic()
                dt, self._last = now - self._last, now
                if self.rpm:
                    self._req = min(self.rpm, self._req + dt * self.rpm / 60)
                if self.tpm:
                    self._tok = min(self.tpm, self._tok + dt * self.tpm / 60)
                need_tok = min(tokens, self.tpm) if self.tpm else 0
                waits = []
                if self.rpm and self._req < 1:
                    waits.append((1 - self._req) * 60 / self.rpm)
                if self.tpm and self._tok < need_tok:
                    waits.append((need_tok - self._tok) * 60 / self.tpm)
                if not waits:
                    if self.rpm:
                        self._req -= 1
                    if self.tpm:
                        self._tok -= need_tok
                    return
                await asyncio.sleep(max(waits))


def _reply_text(resp: dict[str, Any]) -> tuple[str | None, str]:
    """The first choice's message text, or None and why there is none (no choices, a null
    content, a refusal); the reason names ``finish_reason`` so a content filter is told apart."""
    choices = resp.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None, "malformed response: no choices in the reply"
    first = choices[0]
    finish = first.get("finish_reason")
    why = f" (finish_reason {finish})" if finish else ""
    message = first.get("message")
    if not isinstance(message, dict):
        return None, f"malformed response: the first choice has no message{why}"
    text = message.get("content")
    if isinstance(text, str):
        return text, ""
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        return None, f"the judge refused{why}: {refusal[:200]}"
    return None, f"the reply has no content{why}"


class OpenAIJudge:
    """A JudgeBackend over ``openai.AsyncOpenAI`` (its own retries off: ours are the policy)."""

    def __init__(self, config: JudgeConfig) -> None:
        self.config = config
        self.model = config.model
        self._key = os.environ.get(config.api_key_env) or ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: Any = None
        self._slots: asyncio.Semaphore | None = None
        self._limiter: RateLimiter | None = None
        self._seed_ok = True
        self._started = time.monotonic()
        #: how waits between attempts are slept (tests swap in a recorder)
        self.sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep

    @property
    def parallelism(self) -> int:
        """Requests in flight at once (the engine sizes its window of started jobs from it)."""
        return self.config.concurrency

    # ------------------------------------------------------------------------------ helpers
    def redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key and len(self._key) >= 4 else text

    def cost(self, usage: dict[str, int]) -> float:
        price = self.config.prices.get(self.model)
        if price is None:
            return 0.0
        return (
            usage.get("prompt_tokens", 0) * price[0] + usage.get("completion_tokens", 0) * price[1]
        ) / 1e6

    def estimate_cost(self, request: JudgeRequest) -> float:
        """What ``request`` may cost at most: its estimated input plus ``max_tokens`` of output."""
        return self.cost(
            {
                "prompt_tokens": request.approx_prompt_tokens(),
                "completion_tokens": request.max_tokens,
            }
        )

    def _remaining(self) -> float | None:
        if self.config.deadline is None:
            return None
        return self.config.deadline - (time.monotonic() - self._started)

    def _ensure_loop_state(self) -> None:
        """HTTP pools and semaphores belong to one event loop: make them for the running one."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop = loop
            self._client = make_transport(
                self.config.transport, self.config.base_url, self._key, self.config.timeout
            )
            self._slots = asyncio.Semaphore(self.config.concurrency)
            self._limiter = RateLimiter(
                self.config.requests_per_minute, self.config.tokens_per_minute
            )

    def _body(self, request: JudgeRequest) -> tuple[bytes, bool]:
        """The JSON request body, serialised once per request (retries re-send the same bytes),
        and whether it carries ``seed``."""
        kw: dict[str, Any] = {
            "model": self.model,
            "messages": request.messages(),
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
        }
        if request.seed is not None and self._seed_ok:
            kw["seed"] = request.seed
        if request.json_mode:
            kw["response_format"] = {"type": "json_object"}
        return json.dumps(kw, separators=(",", ":")).encode(), "seed" in kw

    # ------------------------------------------------------------------------------ calls
    async def complete(self, request: JudgeRequest) -> JudgeReply:
        self._ensure_loop_state()
        assert self._slots is not None and self._limiter is not None
        t0 = time.monotonic()
        attempts = 0
        last_error = "no attempt made"
        body, with_seed = self._body(request)
        while True:
            remaining = self._remaining()
            if remaining is not None and remaining <= 0:
                return JudgeReply(
                    "error",
                    error=f"deadline exceeded after {attempts} attempt(s); "
                    f"last error: {last_error}",
                    attempts=attempts,
                    seconds=time.monotonic() - t0,
                )
            if self._limiter.active:
                await self._limiter.acquire(request.approx_tokens())
            attempts += 1
            wait: float | None = None
            try:
                async with self._slots:
                    timeout = self.config.timeout
                    if remaining is not None:
                        timeout = max(0.1, min(timeout, remaining))
                    resp = await self._client.post(body, timeout)
            except Transient as e:
                last_error, wait = e.what, e.wait
            except Rejected as e:
                if e.status == 400 and with_seed and "seed" in e.message.lower():
                    self._seed_ok = False  # the endpoint rejects `seed`: go on without it
                    body, with_seed = self._body(request)
                    attempts -= 1
                    continue
                return JudgeReply(
                    "error",
                    error=self.redact(str(e)),
                    attempts=attempts,
                    seconds=time.monotonic() - t0,
                )
            else:
                await _let_follow_ups_leave()
                return self._reply(resp, attempts, time.monotonic() - t0)
            if attempts > self.config.max_retries:
                return JudgeReply(
                    "error",
                    error=self.redact(
                        f"gave up after {attempts} attempts; last error: {last_error}"
                    ),
                    attempts=attempts,
                    seconds=time.monotonic() - t0,
                )
            if wait is None:  # no usable Retry-After: exponential backoff with jitter
                wait = min(
                    self.config.backoff_max, self.config.backoff_base * 2 ** (attempts - 1)
                ) * random.uniform(0.5, 1.0)
            wait = min(wait, max(0.0, self.config.max_retry_wait))
            if (remaining := self._remaining()) is not None and wait >= remaining:
                return JudgeReply(  # the next attempt could only start after the deadline
                    "error",
                    error=self.redact(
                        f"deadline exceeded: a retry would wait {wait:.1f}s with "
                        f"{max(0.0, remaining):.1f}s left after {attempts} attempt(s); "
                        f"last error: {last_error}"
                    ),
                    attempts=attempts,
                    seconds=time.monotonic() - t0,
                )
            await self.sleep(wait)

    def _reply(self, resp: Any, attempts: int, seconds: float) -> JudgeReply:
        """Read the JSON body directly: the SDK's typed parsing costs more CPU than the call."""
        if not isinstance(resp, dict):
            return JudgeReply(
                "error",
                error="malformed response (not a JSON object)",
                attempts=attempts,
                seconds=seconds,
            )
        raw_usage = resp.get("usage") or {}
        usage = {
            k: int(raw_usage.get(k) or 0)
            for k in ("prompt_tokens", "completion_tokens")
            if isinstance(raw_usage, dict)
        }
        cost = self.cost(usage)
        text, missing = _reply_text(resp)
        if text is None:  # nothing to judge from: an error, so no cache keeps it from a rerun
            return JudgeReply(
                "error",
                error=self.redact(missing),
                usage=usage,
                cost=cost,
                attempts=attempts,
                seconds=seconds,
            )
        return JudgeReply(
            "ok", text=text, usage=usage, cost=cost, attempts=attempts, seconds=seconds
        )

    async def preflight(self) -> JudgeReply:
        """One tiny request; raises JudgeUnavailable with the reason when it fails."""
        probe = JudgeRequest((Part.of_text("Reply with the single word OK."),), max_tokens=5)
        saved = self.config.max_retries
        self.config.max_retries = min(saved, 2)
        try:
            reply = await self.complete(probe)
        finally:
            self.config.max_retries = saved
        if reply.status != "ok":
            raise JudgeUnavailable(
                f"judge {self.model} at {self.config.base_url or 'OpenAI'} "
                f"is not usable: {reply.error}"
            )
        return reply

    async def aclose(self) -> None:
        """Close the HTTP pool of the running loop (call it on the loop that used the judge)."""
        if self._client is not None:
            client, self._client, self._loop = self._client, None, None
            await client.aclose()
