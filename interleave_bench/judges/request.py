"""What a judge is asked and what it answers, independent of the backend that answers."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol


@dataclass(frozen=True, slots=True)
class Part:
    """One piece of a user message: text, or an image as a data URL (with its content hash, so a
    cache key never has to hash megabytes of base64)."""

    kind: Literal["text", "image"]
    text: str | None = None
    url: str | None = None
    sha256: str | None = None

    @classmethod
    def of_text(cls, text: str) -> Part:
        return cls("text", text=text)

    @classmethod
    def of_image(cls, url: str, sha256: str | None = None) -> Part:
        return cls("image", url=url, sha256=sha256 or hashlib.sha256(url.encode()).hexdigest())


@dataclass(frozen=True, slots=True)
class JudgeRequest:
    """A single judge call: optional system prompt, interleaved user parts, follow-up turns (used
    for the one bounded JSON repair), and sampling settings (temperature 0 by default).

    ``image_placeholder`` (e.g. ``<image>`` for InternVL judges): on the wire the user message is
    then one text part with the placeholder where each image sits, followed by the images in
    order. A vLLM server keeps placeholders found in the text where they are (and would put the
    missing ones in front, joining separate text parts with newlines), so this is the form
    whose rendered prompt equals the one the model's own ``chat()`` builds."""

    parts: tuple[Part, ...]
    system: str | None = None
    followup: tuple[tuple[str, str], ...] = ()
    max_tokens: int = 1024
    temperature: float = 0.0
    seed: int | None = 0
    json_mode: bool = False
    image_placeholder: str | None = None
    image_detail: Literal["low", "high", "auto"] | None = None  # OpenAI's per-image detail

    def messages(self, *, placeholders: bool = True) -> list[dict[str, Any]]:
        """OpenAI chat messages; ``placeholders=False`` keeps images interleaved as parts (for an
        in-process processor that places images itself)."""
        msgs: list[dict[str, Any]] = []
        if self.system is not None:
            msgs.append({"role": "system", "content": self.system})
        content: list[dict[str, Any]] = []
        mark = self.image_placeholder if placeholders else None
        if mark is not None:
            text = "".join(p.text or "" if p.kind == "text" else mark for p in self.parts)
            content.append({"type": "text", "text": text})
        for p in self.parts:
            if p.kind == "text" and mark is None:
                content.append({"type": "text", "text": p.text})
            elif p.kind == "image":
                image: dict[str, Any] = {"url": p.url}
                if self.image_detail is not None:
                    image["detail"] = self.image_detail
                content.append({"type": "image_url", "image_url": image})
        msgs.append({"role": "user", "content": content})
        msgs.extend({"role": role, "content": text} for role, text in self.followup)
        return msgs

    def fingerprint(self) -> dict[str, Any]:
        """The request as the cache key sees it: images by hash, everything else verbatim."""
        out = {
            "system": self.system,
            "parts": [p.text if p.kind == "text" else {"image": p.sha256} for p in self.parts],
            "followup": [list(t) for t in self.followup],
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "seed": self.seed,
            "json_mode": self.json_mode,
        }
        if self.image_placeholder is not None:  # only then: other protocols keep their keys
            out["image_placeholder"] = self.image_placeholder
        if self.image_detail is not None:
            out["image_detail"] = self.image_detail
        return out

    def approx_prompt_tokens(self) -> int:
        """A cheap estimate of the input tokens: 4 characters a token, 765 an image (a 1024px
        image at high detail on GPT-4o-class judges), 85 at low detail."""
        chars = len(self.system or "") + sum(len(p.text or "") for p in self.parts)
        chars += sum(len(t) for _, t in self.followup)
        images = sum(p.kind == "image" for p in self.parts)
        return chars // 4 + (85 if self.image_detail == "low" else 765) * images

    def approx_tokens(self) -> int:
        """Input estimate plus the most the judge may write (for tokens-per-minute limits)."""
        return self.approx_prompt_tokens() + self.max_tokens


@dataclass(slots=True)
class JudgeReply:
    """What came back. ``status="error"`` means no usable answer after retries (the reason says why);
    a reply that arrived but cannot be parsed is still ``ok`` here: parsing is the scorer's job."""

    status: Literal["ok", "error"]
    text: str | None = None
    error: str | None = None
    usage: dict[str, int] = field(default_factory=dict)
    cost: float = 0.0
    attempts: int = 0
    cached: bool = False
    seconds: float = 0.0


class JudgeBackend(Protocol):
    """Anything that answers JudgeRequests: the OpenAI-compatible client or an in-process model."""

    model: str
    #: requests answered at once (an engine keeps twice that many jobs started)
    parallelism: int

    async def complete(self, request: JudgeRequest) -> JudgeReply: ...

    async def preflight(self) -> JudgeReply: ...


def cache_key(judge_model: str, protocol: str, template_sha256: str, request: JudgeRequest) -> str:
    """SHA-256 over judge model, protocol, prompt-template hash and the exact request content."""
    payload = {
        "judge": judge_model,
        "protocol": protocol,
        "template": template_sha256,
        "request": request.fingerprint(),
    }
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()
