"""How a chat-completion request travels. The default ``sdk`` transport lets ``openai.AsyncOpenAI``
decide everything about the request (base URL and ``OPENAI_BASE_URL``, auth, organisation and
project headers, SDK headers) and sends the bytes over aiohttp, the SDK's own ``[aiohttp]``
backend; where the SDK has per-request hooks it takes the SDK's full ``post``. ``aiohttp`` is a lean
POST with a bearer token for plain OpenAI-compatible servers (vLLM, SGLang). All paths take the JSON
body as bytes and report outcomes the same way, so the retry policy lives once, in the client.
"""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import functools
import json
import math
import ssl
import time
import urllib.parse
import urllib.request
from typing import Any

TRANSPORTS = ("sdk", "aiohttp")
_PATH = "/chat/completions"


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


def _finite_seconds(text: str, scale: float = 1.0) -> float | None:
    """``text`` as a finite, non-negative number of seconds, or None when it is not one."""
    try:
        value = float(text) * scale
    except ValueError:
        return None
    return max(0.0, value) if math.isfinite(value) else None


def retry_after_seconds(headers: Any) -> float | None:
    """Seconds the server asks us to wait, from ``retry-after-ms`` or ``Retry-After`` (delta
    seconds or an HTTP date). None when absent or unparseable (``soon``): the caller backs off
    instead, so a malformed header never ends a run."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms and (wait := _finite_seconds(ms.strip(), 1e-3)) is not None:
        return wait
    value = (headers.get("retry-after") or "").strip()
    if not value:
        return None
    if (wait := _finite_seconds(value)) is not None:
        return wait
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000" or no zone: HTTP dates are always GMT
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, when.timestamp() - time.time())


def _classify(status: int, headers: Any, message: str) -> Exception:
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


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


@functools.cache
def tls_context() -> ssl.SSLContext:
    """One verified TLS context per process, made the way the SDK makes its own (CA bundle,
    ``SSL_CERT_FILE``): loading the bundle costs ~50 ms, and a judge opens clients per event loop."""
    try:
        import httpx2

        return httpx2.create_ssl_context()
    except ImportError:  # an SDK before httpx2
        return ssl.create_default_context()


def env_proxy(url: str) -> str | None:
    """The proxy ``HTTP_PROXY``/``HTTPS_PROXY``/``NO_PROXY`` name for ``url``, as the SDK's own
    client would use it; read once (aiohttp's ``trust_env`` reads it on a thread per request)."""
    parts = urllib.parse.urlsplit(url)
    if urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return urllib.request.getproxies().get(parts.scheme)


class _Poster:
    """POSTs JSON bodies to one URL with fixed headers over one aiohttp session (no connection
    limit: the client's concurrency is the limit)."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        import aiohttp
        import yarl

        self._aiohttp = aiohttp
        self._url = yarl.URL(url)  # parsed once, not on every request
        self._proxy = env_proxy(url)
        self._session = aiohttp.ClientSession(
            headers=headers, connector=aiohttp.TCPConnector(limit=0, ssl=tls_context())
        )
        self._timeouts: dict[float, Any] = {}

    async def post(self, body: bytes, timeout: float) -> Any:
        aiohttp = self._aiohttp
        client_timeout = self._timeouts.get(timeout)
        if client_timeout is None:  # one object per distinct timeout, not one per call
            client_timeout = aiohttp.ClientTimeout(total=timeout)
            if len(self._timeouts) < 8:
                self._timeouts[timeout] = client_timeout
        try:
            async with self._session.post(
                self._url, data=body, timeout=client_timeout, proxy=self._proxy
            ) as r:
                data = await r.read()
                if r.status == 200:
                    return _json_or_none(data)
                try:
                    err = json.loads(data).get("error", {})
                    message = err.get("message", "") if isinstance(err, dict) else str(err)
                except (ValueError, AttributeError):
                    message = data[:200].decode("utf-8", "replace")
                raise _classify(r.status, r.headers, message)
        except asyncio.TimeoutError:
            raise Transient("timeout") from None
        except aiohttp.ClientError as e:
            raise Transient(f"connection error ({type(e).__name__})") from None

    async def aclose(self) -> None:
        await self._session.close()


def sdk_request_is_fixed(client: Any) -> bool:
    """True where every chat-completion request of this SDK client has the same URL and headers:
    no per-request hook (providers, workload identity, key callbacks, custom auth, idempotency
    keys). Only then may the request be built once."""
    try:
        from openai._models import FinalRequestOptions  # noqa: F401
    except ImportError:
        return False
    if not hasattr(client, "_build_request"):
        return False
    hooks = ("_provider_runtime", "_workload_identity_auth", "_api_key_provider")
    if any(getattr(client, name, None) is not None for name in hooks):
        return False
    return client.custom_auth is None and not getattr(client, "_idempotency_header", None)


def sdk_request_template(client: Any) -> tuple[str, dict[str, str]]:
    """The URL and headers ``AsyncOpenAI`` puts on a chat-completion request, built by the SDK
    itself (call it inside the event loop: the headers name the async library)."""
    from openai._models import FinalRequestOptions

    request = client._build_request(
        FinalRequestOptions.construct(method="post", url=_PATH, json_data={})
    )
    headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
    return str(request.url), headers


class SDKTransport:
    """``openai.AsyncOpenAI`` with its own retries off (ours are the policy). Its typed request
    transform, response models and the httpx layer are skipped where the request is fixed: per
    call they cost more CPU than the HTTP exchange, which on a busy judge run is the bottleneck."""

    def __init__(self, base_url: str | None, api_key: str, timeout: float) -> None:
        import openai

        self._openai = openai
        self._client = openai.AsyncOpenAI(
            base_url=base_url,
            api_key=api_key or "EMPTY",
            max_retries=0,
            timeout=timeout,
            http_client=openai.DefaultAioHttpClient(verify=tls_context()),
        )
        self._fast = sdk_request_is_fixed(self._client)
        self._poster: _Poster | None = None

    async def post(self, body: bytes, timeout: float) -> Any:
        if self._fast and self._poster is None:
            try:
                self._poster = _Poster(*sdk_request_template(self._client))
            except Exception:  # an SDK whose internals moved: its own full path still works
                self._fast = False
        if self._poster is not None:
            return await self._poster.post(body, timeout)
        try:
            return await self._client.post(
                _PATH, cast_to=object, content=body, options={"timeout": timeout}
            )
        except self._openai.OpenAIError as e:
            raise from_sdk_error(e) from None

    async def aclose(self) -> None:
        if self._poster is not None:
            await self._poster.aclose()
        await self._client.close()


class AiohttpTransport(_Poster):
    """A plain JSON POST to ``{base_url}/chat/completions`` with a bearer token."""

    def __init__(self, base_url: str | None, api_key: str, timeout: float) -> None:
        base = (base_url or "https://api.openai.com/v1").rstrip("/")
        headers = {"Content-Type": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        super().__init__(f"{base}{_PATH}", headers)


def make_transport(kind: str, base_url: str | None, api_key: str, timeout: float) -> Any:
    if kind == "aiohttp":
        return AiohttpTransport(base_url, api_key, timeout)
    if kind == "sdk":
        return SDKTransport(base_url, api_key, timeout)
    raise ValueError(f"unknown transport {kind!r}; expected one of {', '.join(TRANSPORTS)}")
