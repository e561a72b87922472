"""Image generators for the integrated pipeline: the OpenAI Images API (any compatible endpoint)
or a local ``diffusers`` text-to-image pipeline, behind one small async interface."""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import os
import random
import threading
from pathlib import Path
from typing import Any, Protocol

from ..judges.transport import Rejected, Transient, from_sdk_error

log = logging.getLogger(__name__)


class ImageGenerationError(RuntimeError):
    """One picture could not be drawn (after retries where retrying could help)."""


# --------------------------------------------------------------------------- image generators


class ImageGenerator(Protocol):
    """Draws one picture from a description; returns encoded image bytes (PNG/JPEG/WebP)."""

    model_id: str

    async def render(self, description: str, *, size: int | None, seed: int) -> bytes:
        """``size`` is a square side from the settings (None: the generator's own size)."""
        ...

    async def aclose(self) -> None: ...


def _redact(text: str, key: str) -> str:
    return text.replace(key, "***") if key and len(key) >= 4 else text


class OpenAIImageGenerator:
    """Any OpenAI-compatible Images API (``images.generate``, base64 JSON answers).

    Retries 429/5xx/timeouts with exponential backoff, jitter and ``Retry-After``, sleeping outside
    the concurrency slot; other 4xx fail at once. Endpoints that refuse ``response_format`` (the
    gpt-image models always answer in base64) are retried once without it.
    """

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        size: str | None = None,
        *,
        concurrency: int = 4,
        max_retries: int = 6,
        timeout: float = 300.0,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
    ) -> None:
        self.model, self.base_url, self.size = model, base_url, size
        self.model_id = f"openai-images:{model}"
        self.concurrency, self.max_retries, self.timeout = concurrency, max_retries, timeout
        self.backoff_base, self.backoff_max = backoff_base, backoff_max
        self._key = os.environ.get(api_key_env) or ""
        self._send_format = True
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: Any = None
        self._slots: asyncio.Semaphore | None = None

    def _ensure_loop_state(self) -> None:
        """HTTP pools and semaphores belong to one event loop: make them for the running one."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            import openai

            self._loop = loop
            self._client = openai.AsyncOpenAI(
                base_url=self.base_url,
                api_key=self._key or "EMPTY",
                max_retries=0,
                timeout=self.timeout,
            )
            self._slots = asyncio.Semaphore(self.concurrency)

    async def _call(self, description: str, size: str | None) -> Any:
        import openai

        kw: dict[str, Any] = {"model": self.model, "prompt": description, "n": 1}
        if size:
            kw["size"] = size
        if self._send_format:
            kw["response_format"] = "b64_json"
        try:
            return await self._client.images.generate(**kw)
        except openai.OpenAIError as e:
            raise from_sdk_error(e) from None

    async def render(self, description: str, *, size: int | None = None, seed: int = 0) -> bytes:
        self._ensure_loop_state()
        assert self._slots is not None
        wanted = f"{size}x{size}" if size else self.size
        attempts = 0
        while True:
            attempts += 1
            try:
                async with self._slots:
                    resp = await self._call(description, wanted)
                return self._decode(resp)
            except Transient as e:
                if attempts > self.max_retries:
                    raise ImageGenerationError(
                        _redact(
                            f"gave up after {attempts} attempts; last error: {e.what}", self._key
                        )
                    ) from None
                wait = e.wait
            except Rejected as e:
                if e.status == 400 and "response_format" in e.message and self._send_format:
                    self._send_format = False
                    attempts -= 1
                    continue
                raise ImageGenerationError(_redact(str(e), self._key)) from None
            if wait is None:
                wait = min(self.backoff_max, self.backoff_base * 2 ** (attempts - 1))
                wait *= random.uniform(0.5, 1.0)
            await asyncio.sleep(wait)

    @staticmethod
    def _decode(resp: Any) -> bytes:
        data = getattr(resp, "data", None) or []
        b64 = getattr(data[0], "b64_json", None) if data else None
        if not b64:
            raise ImageGenerationError("the Images API answer holds no b64_json image")
        try:
            return base64.b64decode(b64, validate=True)
        except ValueError:
            raise ImageGenerationError("the Images API answer is not valid base64") from None

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client, self._loop = self._client, None, None
            await client.close()


class DiffusersImageGenerator:
    """A local ``diffusers`` text-to-image pipeline (imported and loaded on first use).

    Calls run on a worker thread, one at a time (a pipeline is not thread-safe), so chat calls for
    other prompts keep flowing meanwhile. Each picture is seeded, so reruns draw the same image.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        steps: int = 30,
        guidance: float | None = 7.5,
        size: int | tuple[int, int] | None = None,
        device: str | None = None,
        *,
        dtype: str | None = None,
        negative_prompt: str | None = None,
    ) -> None:
        self.path, self.steps, self.guidance = str(path), steps, guidance
        self.size, self.device, self.dtype = size, device, dtype
        self.negative_prompt = negative_prompt
        self.model_id = f"diffusers:{Path(self.path).name or self.path}"
        self._pipe: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        if self._pipe is None:
            import torch
            from diffusers import DiffusionPipeline

            device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
            kw: dict[str, Any] = {}
            if self.dtype:
                kw["torch_dtype"] = getattr(torch, self.dtype)
            pipe = DiffusionPipeline.from_pretrained(self.path, **kw).to(device)
            pipe.set_progress_bar_config(disable=True)
            self._pipe, self.device = pipe, device
        return self._pipe

    def _draw(self, description: str, size: int | None, seed: int) -> bytes:
        import torch

        with self._lock:
            pipe = self._load()
            kw: dict[str, Any] = {"num_inference_steps": self.steps, "output_type": "pil"}
            if self.guidance is not None:
                kw["guidance_scale"] = self.guidance
            if self.negative_prompt is not None:
                kw["negative_prompt"] = self.negative_prompt
            side = size or self.size
            if side is not None:
                kw["width"], kw["height"] = (side, side) if isinstance(side, int) else side
            generator = torch.Generator(device="cpu").manual_seed(seed)
            image = pipe(prompt=description, generator=generator, **kw).images[0]
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return buf.getvalue()

    async def render(self, description: str, *, size: int | None = None, seed: int = 0) -> bytes:
        try:
            return await asyncio.to_thread(self._draw, description, size, seed)
        except ImportError as e:
            raise ImageGenerationError(f"diffusers is not installed ({e})") from None
        except Exception as e:  # a failed draw is this prompt's error, never the batch's
            raise ImageGenerationError(f"{type(e).__name__}: {e}") from None

    async def aclose(self) -> None:
        return None
