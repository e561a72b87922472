"""InterleavedEval (InterleavedBench): five aspects scored 0-5 with explanations.

By default the judge gets our own aspect rubric (written for this project, marked unofficial); the
official prompt can be supplied as a file. Replies must be a JSON object with every aspect; a reply
that fails validation gets exactly one repair request, then counts as invalid with its reason.
For image-editing and subject-driven tasks the two text aspects are left out (not zeroed).
AVG = the unweighted mean of the five aspect means, overall and per task.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..aggregate import mean, status_counts
from ..judges.engine import JudgeEngine
from ..judges.request import JudgeRequest, Part
from ..media import ImageError, ImageStore, to_data_url
from ..protocols import ProtocolSpec
from ..types import Interleaved, Judgment, Prediction, Result, Sample
from .base import PerItemScorer, json_object_in
from .protocol_files import PromptSet, load_text_prompt, user_prompt_file

ASPECTS = (
    "text_quality",
    "perceptual_quality",
    "image_coherence",
    "text_image_coherence",
    "helpfulness",
)
TEXT_ASPECTS = ("text_quality", "text_image_coherence")
_NO_TEXT_MARKERS = ("image_edit", "editing", "subject", "multi_concept", "composition")

RUBRIC = """You are grading an answer made of text and images, written for the instruction shown.
Give each aspect an integer from 0 (absent or useless) to 5 (excellent), with a short explanation:
- text_quality: is the text clear, fluent, correct and free of repetition?
- perceptual_quality: do the images look natural and well made, without visible artifacts?
- image_coherence: do the images agree with each other in style, subjects and setting?
- text_image_coherence: does each image show what the text around it says?
- helpfulness: does the whole answer do what the instruction asked, completely and usefully?
Reply with one JSON object and nothing else, in this form:
{"text_quality": {"score": 0, "explanation": "..."}, "perceptual_quality": {...},
 "image_coherence": {...}, "text_image_coherence": {...}, "helpfulness": {...}}"""

REPAIR = (
    "Your reply could not be used ({reason}). Reply again with only the JSON object: the "
    'keys {keys}, each {{"score": an integer 0-5, "explanation": a string}}.'
)


def text_aspects_apply(task: str | None) -> bool:
    """False for sequential image editing and subject-driven composition."""
    t = (task or "").lower()
    return not any(m in t for m in _NO_TEXT_MARKERS)


def parse_aspects(
    text: str | None, aspects: Sequence[str]
) -> tuple[dict[str, float] | None, str | None]:
    value, why = json_object_in(text)
    if value is None:
        return None, why
    missing = [a for a in aspects if a not in value]
    if missing:
        return None, f"missing aspects: {', '.join(missing)}"
    scores: dict[str, float] = {}
    for a in aspects:
        item = value[a]
        score = item.get("score") if isinstance(item, dict) else None
        if isinstance(score, bool) or not isinstance(score, (int, float)) or score != int(score):
            return None, f"{a}: score is not an integer"
        if not 0 <= score <= 5:
            return None, "score out of range"
        if not isinstance(item.get("explanation"), str):
            return None, f"{a}: no explanation"
        scores[a] = float(score)
    return scores, None


class InterleavedEvalScorer(PerItemScorer):
    name = "interleaved_eval"
    protocol_version = "interleaved-eval/1"

    def __init__(
        self,
        engine: JudgeEngine,
        prompt: PromptSet | None = None,
        *,
        store: ImageStore | None = None,
        max_tokens: int = 1024,
        image_max_side: int = 768,
    ) -> None:
        self.engine = engine
        self.prompt = prompt or load_text_prompt("rubric", RUBRIC, "interleave-bench rubric")
        self.store = store
        self.max_tokens = max_tokens
        self.image_max_side = image_max_side

    comparable = False  # no pinned official prompt to verify against

    def _parts(self, label: str, content: Interleaved) -> list[Part]:
        parts = [Part.of_text(f"{label}\n")]
        for seg in content:
            if seg.text is not None:
                parts.append(Part.of_text(seg.text + "\n"))
            elif seg.image is not None and not seg.image.missing:
                parts.append(
                    Part.of_image(
                        to_data_url(seg.image, store=self.store, max_side=self.image_max_side)
                    )
                )
        return parts

    async def _ask(self, request: JudgeRequest):
        return await self.engine.ask(
            request, protocol=self.protocol_version, template_sha256=self.prompt.template_sha256
        )

    async def _one(self, sample: Sample, prediction: Prediction) -> Judgment:
        if prediction.error:
            return self.error(sample.id, f"generation failed: {prediction.error}")
        with_text = text_aspects_apply(sample.task)
        aspects = ASPECTS if with_text else tuple(a for a in ASPECTS if a not in TEXT_ASPECTS)
        meta: dict[str, Any] = {"task": sample.task, "text_aspects": with_text}
        try:
            parts = self._parts("[Instruction]", sample.input) + self._parts(
                "[Answer]", prediction.output
            )
        except ImageError as e:
            return self.invalid(sample.id, "unreadable image", metadata={**meta, "detail": str(e)})
        system = next(iter(self.prompt.texts.values()))
        request = JudgeRequest(
            tuple(parts), system=system, max_tokens=self.max_tokens, json_mode=True
        )
        reply = await self._ask(request)
        cost, raws = reply.cost, [reply.text]
        if reply.status == "ok":
            scores, why = parse_aspects(reply.text, aspects)
            if scores is None:  # one bounded repair attempt
                meta["repair"] = why
                fix = REPAIR.format(reason=why, keys=", ".join(aspects))
                repair = JudgeRequest(
                    request.parts,
                    system=system,
                    max_tokens=self.max_tokens,
                    json_mode=True,
                    followup=(("assistant", reply.text or ""), ("user", fix)),
                )
                reply = await self._ask(repair)
                cost += reply.cost
                raws.append(reply.text)
                if reply.status == "ok":
                    scores, why = parse_aspects(reply.text, aspects)
        raw = "\n----- repair -----\n".join(r or "" for r in raws)
        if reply.status != "ok":
            return self.error(
                sample.id,
                "judge error",
                raw=raw,
                cost=cost,
                metadata={**meta, "detail": reply.error},
            )
        if scores is None:
            return self.invalid(sample.id, why or "invalid JSON", raw=raw, cost=cost, metadata=meta)
        full: dict[str, float | None] = {a: scores.get(a) for a in ASPECTS}
        return self.ok(
            sample.id, mean(list(scores.values())) or 0.0, full, raw=raw, cost=cost, metadata=meta
        )

    def aggregate(self, samples: Sequence[Sample], judgments: Sequence[Judgment]) -> Result:
        return aggregate_aspects(
            judgments,
            {s.id: s.task for s in samples},
            judge=self.engine.model,
            protocol=self.protocol_version,
            prompt_source=self.prompt.source,
            prompt_sha256=dict(self.prompt.hashes),
        )


def aspect_means(judgments: Sequence[Judgment]) -> tuple[dict[str, float | None], float | None]:
    """Each aspect's mean over the items where it applies, and AVG = the mean of those means."""
    means: dict[str, float | None] = {}
    for a in ASPECTS:
        values = [j.scores[a] for j in judgments if j.scores.get(a) is not None]
        means[a] = mean([float(v) for v in values if v is not None])
    present = [m for m in means.values() if m is not None]
    return means, mean(present)


def aggregate_aspects(
    judgments: Sequence[Judgment],
    task_of: dict[str, str | None],
    *,
    judge: str | None,
    protocol: str,
    prompt_source: str = "",
    prompt_sha256: dict[str, str] | None = None,
) -> Result:

    valid = [j for j in judgments if j.status == "ok"]
    counts, reasons = status_counts(judgments)
    means, avg = aspect_means(valid)
    by_task: dict[str, dict[str, Any]] = {}
    for task in sorted({task_of.get(j.sample_id) or "(none)" for j in valid}):
        js = [j for j in valid if (task_of.get(j.sample_id) or "(none)") == task]
        tmeans, tavg = aspect_means(js)
        by_task[task] = {
            "mean": None if tavg is None else round(tavg, 2),
            "n": len(js),
            "aspects": {a: None if v is None else round(v, 2) for a, v in tmeans.items()},
        }
    return Result(
        benchmark="interleavedbench",
        scorer=InterleavedEvalScorer.name,
        protocol=protocol,
        judge=judge,
        overall=None if avg is None else round(avg, 2),
        by_category=by_task,
        counts=counts,
        invalid_reasons=reasons,
        scale="0-5",
        comparable=False,
        metadata={
            "aspects": {a: None if v is None else round(v, 2) for a, v in means.items()},
            "official_aggregate": "AVG = mean of the five aspect means",
            "prompt_source": prompt_source,
            "prompt_sha256": prompt_sha256 or {},
        },
    )


def build(opts: Any, engine: JudgeEngine) -> InterleavedEvalScorer:
    """Our own rubric, or the official prompt from ``--protocol-file`` (never pinned)."""
    prompt = user_prompt_file(opts.protocol_file, "official", "interleaved_eval")
    return InterleavedEvalScorer(engine, prompt)


SPEC = ProtocolSpec(
    name="interleaved_eval",
    kind="judge",
    builder=build,
    description="InterleavedEval's five aspects (0-5), judged by a VLM",
    scale="0-5",
    benchmarks=("interleavedbench",),
    aggregation="mean of each aspect; AVG is the mean of the aspect means",
    leaderboard="interleave_bench.leaderboard.specs:INTERLEAVEDBENCH_BOARD",
)
