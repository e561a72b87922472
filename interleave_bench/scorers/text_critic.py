"""r_t, textual relevance: a pointwise VLM critic scores the answer's text against the instruction.

The paper uses LLaVA-Critic as a pointwise judge of the generated text's quality and relevance.
This protocol asks any judge the engine reaches (an OpenAI-compatible endpoint or a local model)
with a rubric written for this project, in the same spirit (pointwise, 1-10, reasoned) but in our
own words; a ``protocol_file`` replaces it (placeholders ``{instruction}`` and ``{answer}`` are
filled in when present; otherwise the file is the system prompt). ``overall`` is the score / 10, in
[0.1, 1]. An answer with no text at all is ``ok`` with 0.0 (the minimum: nothing to judge is no
relevance, not a judge failure). A judge that fails or replies without a usable score is an
``error``/``invalid`` judgment, i.e. a ``None`` reward, with its reason.

``ascore_text_step`` scores one text step given the answer before it (process rewards).
"""

from __future__ import annotations

import re
from typing import Any

from ..judges.engine import JudgeEngine
from ..judges.request import JudgeRequest, Part
from ..media import ImageError, ImageStore, to_data_url
from ..protocols import ProtocolSpec
from ..types import Interleaved, Judgment, Prediction, Sample
from .base import PerItemScorer, json_object_in
from .protocol_files import PromptSet, load_text_prompt, user_prompt_file

RUBRIC = """You review the written part of an assistant's answer to a user's request, which may
come with pictures. Judge only the answer's text: does it respond to what was asked, is it
accurate with respect to the request and its pictures, is it complete, clear and free of
repetition? Pictures the answer drew are marked [picture]; do not judge them.
Think briefly, then give one overall score from 1 (irrelevant or wrong) to 10 (fully relevant,
correct and helpful). Reply with one JSON object only: {"reason": "...", "score": <1-10>}"""

SCORE_RE = re.compile(r"score\D{0,12}?(\d+(?:\.\d+)?)", re.IGNORECASE)
SCALE = 10.0
MINIMUM = 0.0


def parse_critic(text: str | None) -> tuple[float | None, str | None]:
    """(score 1-10, None) or (None, reason): the JSON ``score`` or a ``Score: N`` line."""
    value, why = json_object_in(text)
    score: Any = None
    if value is not None:
        score = value.get("score")
    elif text and (m := SCORE_RE.search(text)):
        score = float(m.group(1))
    else:
        return None, why or "no score"
    if isinstance(score, bool) or not isinstance(score, (int, float)):
        return None, "score is not a number"
    if not 1 <= score <= SCALE:
        return None, "score out of range"
    return float(score), None


def answer_text(output: Interleaved) -> str:
    """The answer as the critic reads it: text segments, each picture as ``[picture]``."""
    pieces = []
    for seg in output:
        if seg.is_image:
            pieces.append("[picture]")
        elif (seg.text or "").strip():
            pieces.append((seg.text or "").strip())
    return "\n".join(pieces)


class TextCriticScorer(PerItemScorer):
    """r_t through a judge engine (see the module notes)."""

    name = "text_critic"
    protocol_version = "text-critic/1"
    comparable = False

    def __init__(
        self,
        engine: JudgeEngine,
        prompt: PromptSet | None = None,
        *,
        store: ImageStore | None = None,
        max_tokens: int = 512,
    ) -> None:
        self.engine = engine
        self.prompt = prompt or load_text_prompt("rubric", RUBRIC, "interleave-bench text critic")
        self.store = store
        self.max_tokens = max_tokens

    def _request(self, instruction: Interleaved, answer: str) -> JudgeRequest:
        template = next(iter(self.prompt.texts.values()))
        inline = "{answer}" in template
        parts: list[Part] = []
        if not inline:
            parts.append(Part.of_text("[Request]\n"))
        for seg in instruction:
            if seg.text is not None and not inline:
                parts.append(Part.of_text(seg.text + "\n"))
            elif seg.image is not None and not seg.image.missing:
                parts.append(Part.of_image(to_data_url(seg.image, store=self.store, max_side=768)))
        if inline:
            body = template.replace("{instruction}", instruction.text).replace("{answer}", answer)
            parts.append(Part.of_text(body))
            return JudgeRequest(tuple(parts), max_tokens=self.max_tokens)
        parts.append(Part.of_text(f"[Answer]\n{answer}\n"))
        return JudgeRequest(tuple(parts), system=template, max_tokens=self.max_tokens)

    async def _judge(self, sample_id: str, instruction: Interleaved, answer: str) -> Judgment:
        if not answer.replace("[picture]", "").strip():
            return self.ok(sample_id, MINIMUM, {"score": None}, metadata={"no_text": True})
        try:
            request = self._request(instruction, answer)
        except ImageError as e:
            return self.invalid(sample_id, "unreadable image", metadata={"detail": str(e)})
        reply = await self.engine.ask(
            request, protocol=self.protocol_version, template_sha256=self.prompt.template_sha256
        )
        extra = {"cost": reply.cost, "usage": reply.usage, "raw": reply.text}
        if reply.status != "ok":
            return self.error(sample_id, "judge error", **extra, metadata={"detail": reply.error})
        score, why = parse_critic(reply.text)
        if score is None:
            return self.invalid(sample_id, why or "no score", **extra)
        return self.ok(sample_id, score / SCALE, {"score": score}, **extra)

    async def _one(self, sample: Sample, prediction: Prediction) -> Judgment:
        if prediction.error:
            return self.error(sample.id, f"generation failed: {prediction.error}")
        return await self._judge(sample.id, sample.input, answer_text(prediction.output))

    async def ascore_text_step(
        self, sample: Sample, context: Interleaved, step_text: str
    ) -> Judgment:
        """One text step in context (process rewards): the critic sees the answer so far, then
        the step, and judges the step."""
        before = answer_text(context)
        answer = f"{before}\n[the step to judge]\n{step_text}" if before else step_text
        if not step_text.strip():
            return self.ok(sample.id, MINIMUM, {"score": None}, metadata={"no_text": True})
        return await self._judge(sample.id, sample.input, answer)


def build(opts: Any, engine: JudgeEngine) -> TextCriticScorer:
    """Our rubric, or the prompt file given as ``protocol_file`` (never pinned)."""
    prompt = user_prompt_file(opts.protocol_file, "rubric", "text_critic")
    return TextCriticScorer(engine, prompt)


SPEC = ProtocolSpec(
    name="text_critic",
    kind="judge",
    builder=build,
    description="a pointwise VLM critic of the answer's text vs the instruction (r_t, 1-10)",
    scale="0-1",
)
