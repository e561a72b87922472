"""An integrated pipeline: a chat model writes the answer and marks where each picture belongs with
a description; an image generator draws each description.

This is how interleaved benchmarks compare unified models against "LLM + text-to-image" systems.
The chat call reuses the judge client (``OpenAIJudge``: one retry policy, key from the environment,
redacted errors); the Images API call has a small retry loop of its own over the same transient /
rejected classification, because the judge loop is tied to chat completions.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import logging
import os
import random
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..judges.client import JudgeConfig, OpenAIJudge
from ..judges.request import JudgeRequest, Part
from ..judges.transport import Rejected, Transient, _classify
from ..media import ImageError, ImageStore, decode_image, to_data_url
from ..scorers.base import run_sync
from ..types import ImageRef, Interleaved, Segment
from .base import GenerationOutput, GenerationSettings

log = logging.getLogger(__name__)

DEFAULT_SYSTEM_PROMPT = (
    "You write answers that mix prose and pictures. You cannot draw, but an illustrator reads "
    "your answer and draws every picture you ask for. To ask for one, put a description of it "
    "between <image> and </image> at the exact place where it should appear, for example: "
    "<image>a red bicycle leaning on a brick wall at dusk, watercolour</image>. Describe what "
    "should be visible (subjects, setting, colours, style) in one self-contained sentence, "
    "because the illustrator sees nothing else of the conversation. Use the markers for nothing "
    "else, never nest them, and ask for at most {max_images} pictures."
)

_TAG = re.compile(r"<\s*(/?)\s*image\s*>", re.IGNORECASE)
_JOIN_MARK = "\x00"  # where a removed marker joined two pieces of text
_JOIN = re.compile(r"(\s*)\x00(\s*)")


class ImageGenerationError(RuntimeError):
    """One picture could not be drawn (after retries where retrying could help)."""


class _Failed(Exception):
    """A prompt's failure whose message is already the reason to report."""


# --------------------------------------------------------------------------- reply parsing


@dataclass
class ParsedReply:
    """The chat reply as ordered pieces: ``("text", str)`` or ``("image", description)``."""

    pieces: list[tuple[str, str]] = field(default_factory=list)
    dropped: int = 0  # markers past the cap, or with an empty description
    unclosed: bool = False  # the reply ended inside a marker (cut off mid-description)

    @property
    def descriptions(self) -> list[str]:
        return [text for kind, text in self.pieces if kind == "image"]


def _tidy_joins(text: str) -> str:
    """Where a marker was removed, keep one whitespace run (the one with more line breaks)."""
    return _JOIN.sub(
        lambda m: max(m.group(1), m.group(2), key=lambda w: (w.count("\n"), len(w))) or " ",
        text,
    )


def parse_reply(reply: str, max_images: int) -> ParsedReply:
    """Split a reply at ``<image>…</image>`` markers, keeping at most ``max_images`` pictures.

    Forgiving by design, since chat models do not always follow the format: tags match in any
    case and with inner spaces; a stray ``</image>`` is dropped; an ``<image>`` reopened before it
    closes gives its words back to the text; a marker still open at the end (a reply cut off by
    the token limit) is dropped with its partial description. Markers past the cap, or with an
    empty description, are removed without splitting the text around them.
    """
    reply = reply.replace(_JOIN_MARK, "")
    out = ParsedReply()
    text: list[str] = []
    inside = False
    pos = 0

    def flush() -> None:
        joined = _tidy_joins("".join(text)).strip()
        if joined:
            out.pieces.append(("text", joined))
        text.clear()

    for m in _TAG.finditer(reply):
        chunk, closing, pos = reply[pos : m.start()], m.group(1) == "/", m.end()
        if not inside:
            text.append(chunk)
            if closing:  # a stray closing tag is simply dropped
                text.append(_JOIN_MARK)
            inside = not closing
            continue
        if not closing:  # reopened before closing: the earlier words were prose after all
            text += [_JOIN_MARK, chunk]
            continue
        inside = False
        description = " ".join(chunk.split())
        if description and len(out.descriptions) < max_images:
            flush()
            out.pieces.append(("image", description))
        else:
            out.dropped += 1
            text.append(_JOIN_MARK)
    if inside:
        out.unclosed = True
        out.dropped += 1
    else:
        text.append(reply[pos:])
    flush()
    return out


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
        except openai.APITimeoutError:
            raise Transient("timeout") from None
        except openai.APIConnectionError as e:
            raise Transient(f"connection error ({type(e.__cause__ or e).__name__})") from None
        except openai.APIStatusError as e:
            raise _classify(
                e.status_code, getattr(e.response, "headers", None), e.message
            ) from None

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


# --------------------------------------------------------------------------- the adapter


class PipelineAdapter:
    """A ModelAdapter (family ``pipeline``): chat model + image generator."""

    family = "pipeline"

    def __init__(
        self,
        chat_model: str,
        chat_base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        *,
        generator: ImageGenerator,
        system_prompt: str | None = None,
        concurrency: int = 8,
        max_retries: int = 6,
        timeout: float = 120.0,
        backoff_base: float = 1.0,
    ) -> None:
        self.chat_model, self.chat_base_url = chat_model, chat_base_url
        self.generator = generator
        self.system_prompt = system_prompt
        self.concurrency = concurrency
        self.model_id = f"pipeline:{chat_model}+{generator.model_id}"
        self._chat = OpenAIJudge(
            JudgeConfig(
                model=chat_model,
                base_url=chat_base_url,
                api_key_env=api_key_env,
                concurrency=concurrency,
                max_retries=max_retries,
                timeout=timeout,
                backoff_base=backoff_base,
            )
        )

    def system_text(self, max_images: int) -> str:
        """The system prompt sent; ``{max_images}`` in it is replaced by the cap."""
        template = DEFAULT_SYSTEM_PROMPT if self.system_prompt is None else self.system_prompt
        return template.replace("{max_images}", str(max_images))

    def describe(self) -> dict[str, Any]:
        """What a run manifest records (never the key)."""
        template = DEFAULT_SYSTEM_PROMPT if self.system_prompt is None else self.system_prompt
        return {
            "family": self.family,
            "chat_model": self.chat_model,
            "chat_base_url": self.chat_base_url,
            "image_generator": self.generator.model_id,
            "system_prompt_sha256": hashlib.sha256(template.encode()).hexdigest(),
        }

    def generate(
        self,
        prompts: list[Interleaved],
        settings: GenerationSettings,
        store: ImageStore,
        *,
        return_trace: bool = False,
    ) -> list[GenerationOutput]:
        if return_trace:
            raise ValueError("the pipeline adapter has no token log-probs: no decode traces")
        return run_sync(self.agenerate(prompts, settings, store))

    async def agenerate(
        self, prompts: list[Interleaved], settings: GenerationSettings, store: ImageStore
    ) -> list[GenerationOutput]:
        slots = asyncio.Semaphore(self.concurrency)
        try:
            return list(
                await asyncio.gather(*(self._one(p, settings, store, slots) for p in prompts))
            )
        finally:
            await self._chat.aclose()
            await self.generator.aclose()

    async def _one(
        self,
        prompt: Interleaved,
        settings: GenerationSettings,
        store: ImageStore,
        slots: asyncio.Semaphore,
    ) -> GenerationOutput:
        async with slots:
            t0 = time.perf_counter()
            try:
                output = await self._answer(prompt, settings, store)
            except Exception as e:  # one prompt's failure never loses the batch
                why = str(e) if isinstance(e, _Failed) else f"{type(e).__name__}: {e}"
                return GenerationOutput(
                    Interleaved(), error=self._chat.redact(why), seconds=time.perf_counter() - t0
                )
            return GenerationOutput(output, seconds=time.perf_counter() - t0)

    async def _answer(
        self, prompt: Interleaved, settings: GenerationSettings, store: ImageStore
    ) -> Interleaved:
        try:
            parts = self._parts(prompt, store)
        except ImageError as e:
            raise _Failed(f"input image: {e}") from None
        request = JudgeRequest(
            tuple(parts),
            system=self.system_text(settings.max_images),
            max_tokens=settings.max_new_tokens,
            temperature=settings.temperature,
            seed=settings.seed,
        )
        reply = await self._chat.complete(request)
        if reply.status != "ok":
            raise _Failed(f"chat: {reply.error}")
        parsed = parse_reply(reply.text or "", settings.max_images)
        if parsed.dropped:
            log.debug("%d image marker(s) dropped from a reply", parsed.dropped)
        drawn = await asyncio.gather(
            *(self._draw(d, k, settings, store) for k, d in enumerate(parsed.descriptions)),
            return_exceptions=True,
        )
        refs: list[ImageRef] = []
        for k, result in enumerate(drawn):
            if isinstance(result, ImageRef):
                refs.append(result)
            elif isinstance(result, Exception):
                raise _Failed(f"image {k + 1} ({parsed.descriptions[k]!r}): {result}")
            else:
                raise result  # cancellation and the like
        it = iter(refs)
        return Interleaved(
            Segment.of_text(text) if kind == "text" else Segment.of_image(next(it))
            for kind, text in parsed.pieces
        )

    @staticmethod
    def _parts(prompt: Interleaved, store: ImageStore) -> list[Part]:
        parts: list[Part] = []
        for seg in prompt:
            if seg.image is not None:
                parts.append(Part.of_image(to_data_url(seg.image, store=store), seg.image.sha256))
            elif seg.text:
                parts.append(Part.of_text(seg.text))
        return parts

    async def _draw(
        self, description: str, k: int, settings: GenerationSettings, store: ImageStore
    ) -> ImageRef:
        data = await self.generator.render(
            description, size=settings.image_size, seed=settings.seed + k
        )
        decode_image(data, store.limits, "generated image")  # refuse a corrupt or truncated one
        return store.put_bytes(data)
