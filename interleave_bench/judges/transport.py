"""How a chat-completion request travels: through the ``openai`` SDK (the default: every auth and
proxy setting the SDK knows), or a lean ``aiohttp`` POST for throughput against plain
OpenAI-compatible servers (vLLM, SGLang), where the SDK's request building costs more CPU than
the call itself. Both report outcomes the same way, so the retry policy lives once, in the client.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

TRANSPORTS = ("sdk", "aiohttp")


class Transient(Exception):
    """Worth retrying: 429, 5xx, 408/409, a timeout or a dropped connection."""

    def __init__(self, what: str, wait: float | None = None) -> None:
        super().__init__(what)
        self.what, self.wait = what, wait


class Rejected(Exception):
    """Not worth retrying: any other 4xx (bad request, auth, unknown model)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status, self.message = status, message


def _classify(status: int, headers: Any, message: str) -> Exception:
    from .client import retry_after_seconds

    if status == 429:
        return Transient("429 rate limited", retry_after_seconds(headers))
    if status >= 500 or status in (408, 409):
        return Transient(f"{status} server error", retry_after_seconds(headers))
    return Rejected(status, message)


def from_sdk_error(e: Exception) -> Exception:
    """An ``openai`` SDK exception as Transient/Rejected (anything else comes back unchanged)."""
    import openai

    if isinstance(e, openai.APITimeoutError):
        return Transient("timeout")
    if isinstance(e, openai.APIConnectionError):
        return Transient(f"connection error ({type(e.__cause__ or e).__name__})")
    if isinstance(e, openai.APIStatusError):
        return _classify(e.status_code, getattr(e.response, "headers", None), e.message)
    return e


class SDKTransport:
    """``openai.AsyncOpenAI`` with its own retries off, posting the body as given (its typed
    request transform and response models are skipped: they cost more CPU than the call)."""

    def __init__(self, base_url: str | None, api_key: str, timeout: float) -> None:
        import openai

        self._openai = openai
        http_client = None
        try:  # aiohttp under the SDK roughly halves its CPU per call when installed
            import aiohttp  # noqa: F401

            http_client = openai.DefaultAioHttpClient()
        except ImportError:
            pass
        self._client = openai.AsyncOpenAI(
            base_url=base_url,
            api_key=api_key or "EMPTY",
            max_retries=0,
            timeout=timeout,
            http_client=http_client,
        )

    async def post(self, payload: dict[str, Any], timeout: float) -> Any:
        try:
            return await self._client.post(
                "/chat/completions", cast_to=object, body=payload, options={"timeout": timeout}
            )
        except self._openai.OpenAIError as e:
            raise from_sdk_error(e) from None

    async def aclose(self) -> None:
        await self._client.close()


class AiohttpTransport:
    """A plain JSON POST to ``{base_url}/chat/completions`` with a bearer token."""

    def __init__(self, base_url: str | None, api_key: str, timeout: float) -> None:
        import aiohttp

        self._aiohttp = aiohttp
        base = (base_url or "https://api.openai.com/v1").rstrip("/")
        self._url = f"{base}/chat/completions"
        headers = {"Content-Type": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._session = aiohttp.ClientSession(
            headers=headers, connector=aiohttp.TCPConnector(limit=0)
        )

    async def post(self, payload: dict[str, Any], timeout: float) -> Any:
        aiohttp = self._aiohttp
        try:
            async with self._session.post(
                self._url, data=json.dumps(payload), timeout=aiohttp.ClientTimeout(total=timeout)
            ) as r:
                body = await r.read()
                if r.status == 200:
                    try:
                        return json.loads(body)
                    except ValueError:
                        return None
                try:
                    err = json.loads(body).get("error", {})
                    message = err.get("message", "") if isinstance(err, dict) else str(err)
                except (ValueError, AttributeError):
                    message = body[:200].decode("utf-8", "replace")
                raise _classify(r.status, r.headers, message)
        except asyncio.TimeoutError:
            raise Transient("timeout") from None
        except aiohttp.ClientError as e:
            raise Transient(f"connection error ({type(e).__name__})") from None

    async def aclose(self) -> None:
        await self._session.close()


def make_transport(kind: str, base_url: str | None, api_key: str, timeout: float) -> Any:
    if kind == "aiohttp":
        return AiohttpTransport(base_url, api_key, timeout)
    if kind == "sdk":
        return SDKTransport(base_url, api_key, timeout)
    raise ValueError(f"unknown transport {kind!r}; expected one of {', '.join(TRANSPORTS)}")
