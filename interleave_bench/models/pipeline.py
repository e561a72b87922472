"""An integrated pipeline: a chat model writes the answer and marks where each picture belongs with
a description; an image generator draws each description.

This is how interleaved benchmarks compare unified models against "LLM + text-to-image" systems.
Image generators live in ``image_generators``. The chat call reuses the judge client (``OpenAIJudge``: one retry policy, key from the environment,
redacted errors); the Images API call has a small retry loop of its own over the same transient /
rejected classification, because the judge loop is tied to chat completions.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

from ..judges.client import JudgeConfig, OpenAIJudge
from ..judges.request import JudgeRequest, Part
from ..media import ImageError, ImageStore, decode_image, to_data_url
from ..scorers.base import run_sync
from ..types import ImageRef, Interleaved, Segment
from .base import GenerationOutput, GenerationSettings
from .families import FamilySpec
from .image_generators import (
    ImageGenerator,
)

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


FAMILY = FamilySpec(
    name="pipeline",
    adapter="interleave_bench.models.loading:load_pipeline",
    folder=False,
    capabilities={"generate": "interleave_bench.models.pipeline:PipelineAdapter.generate"},
    description="a chat model that describes images plus an image generator that draws them",
)
