"""How a chat-completion request travels: through the ``openai`` SDK (the default: every auth and
proxy setting the SDK knows), or a lean ``aiohttp`` POST for plain OpenAI-compatible servers
(vLLM, SGLang). Both take the JSON body as bytes and report outcomes the same way, so the retry
policy lives once, in the client.
"""

from __future__ import annotations

import asyncio
import json
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


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


class _PrebuiltSDKRequest:
    """The SDK's own chat-completion request (URL, auth and default headers, timeouts), built once
    by ``AsyncOpenAI._build_request`` and re-sent with each body through the SDK's HTTP client;
    status errors go through the SDK's own error mapping.

    Per-request option models, header merging and URL parsing cost ~0.7 ms of CPU per call, as
    much as the HTTP exchange itself, and nothing in them varies between judge calls.
    """

    def __init__(self, client: Any) -> None:
        import openai
        from openai._httpx2 import request_exceptions, timeout_exceptions
        from openai._models import FinalRequestOptions

        self._client = client
        self._http = client._client
        self._openai = openai
        self._timeout_errors = timeout_exceptions()
        self._request_errors = request_exceptions()
        opts = FinalRequestOptions.construct(method="post", url=_PATH, json_data={})
        template = client._build_request(opts)
        self._cls = type(template)
        self._url = template.url
        self._headers = template.headers
        self._headers.pop("content-length", None)
        self._encoding = self._headers.encoding
        self._extensions = dict(template.extensions)
        self._default_timeout = client.timeout

    @staticmethod
    def usable(client: Any) -> bool:
        """Only where the SDK has no per-request hook to run (providers, workload identity, key
        callbacks, custom auth, idempotency keys); anything else takes the SDK's full ``post``."""
        try:
            from openai._httpx2 import request_exceptions, timeout_exceptions  # noqa: F401
            from openai._models import FinalRequestOptions  # noqa: F401
        except ImportError:
            return False
        needed = ("_build_request", "_client", "_make_status_error_from_response")
        if not all(hasattr(client, name) for name in needed):
            return False
        hooks = ("_provider_runtime", "_workload_identity_auth", "_api_key_provider")
        if any(getattr(client, name, None) is not None for name in hooks):
            return False
        return client.custom_auth is None and not getattr(client, "_idempotency_header", None)

    async def post(self, body: bytes, timeout: float) -> Any:
        ext = self._extensions
        if timeout != self._default_timeout:
            ext = {**ext, "timeout": dict.fromkeys(("connect", "read", "write", "pool"), timeout)}
        request = self._cls("POST", self._url, headers=self._headers, content=body, extensions=ext)
        request.headers.encoding = self._encoding  # known: skips re-detecting it per request
        try:
            response = await self._http.send(request)
        except self._timeout_errors as e:
            raise self._openai.APITimeoutError(request=request) from e
        except self._request_errors as e:
            raise self._openai.APIConnectionError(request=request) from e
        if not response.is_success:
            raise self._client._make_status_error_from_response(response)
        return _json_or_none(response.content)


class SDKTransport:
    """``openai.AsyncOpenAI`` with its own retries off (ours are the policy); its typed request
    transform and response models are skipped: they cost more CPU than the call."""

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
        self._prebuilt: _PrebuiltSDKRequest | None = None
        self._fast = _PrebuiltSDKRequest.usable(self._client)

    async def post(self, body: bytes, timeout: float) -> Any:
        try:
            if self._fast:
                if self._prebuilt is None:  # in the loop: the SDK's headers name the async library
                    self._prebuilt = _PrebuiltSDKRequest(self._client)
                return await self._prebuilt.post(body, timeout)
            return await self._client.post(
                _PATH, cast_to=object, content=body, options={"timeout": timeout}
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
        self._url = f"{base}{_PATH}"
        headers = {"Content-Type": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._session = aiohttp.ClientSession(
            headers=headers, connector=aiohttp.TCPConnector(limit=0)
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
            async with self._session.post(self._url, data=body, timeout=client_timeout) as r:
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


def make_transport(kind: str, base_url: str | None, api_key: str, timeout: float) -> Any:
    if kind == "aiohttp":
        return AiohttpTransport(base_url, api_key, timeout)
    if kind == "sdk":
        return SDKTransport(base_url, api_key, timeout)
    raise ValueError(f"unknown transport {kind!r}; expected one of {', '.join(TRANSPORTS)}")
