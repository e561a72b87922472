"""The MMIE-Score protocol, exactly as the official scorer builds, parses and aggregates it.

Flattening: question segments in order (text + newline; an existing image as ``Image-k: <image>``,
k from 0; a missing file skipped silently); then answer segments with the 3-image cap that also drops
later answer text; rows with more than 4 images are not judged. The prompt is the category system
prompt (chosen by substring SA, PBL, MSR in that order) followed directly by the question/answer
template. Score: the first number after ``### Score``, float then round-half-even, kept in 0..6.

Transport: the prompt's ``<image>`` placeholders become image parts at the same positions of the
request (data URLs of the original bytes; the judge does its own tiling). On the wire the text keeps
its ``<image>`` placeholders in one text part, followed by the images, so that an InternVL server
renders the very string ``chat()`` does. The system message is the one InternVL's ``phi3-chat``
template inserts (``model.chat()`` always sends it), unless the run overrides or omits it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..aggregate import summarize
from ..judges.engine import JudgeEngine
from ..judges.internvl import PHI3_CHAT_SYSTEM, PLACEHOLDER
from ..judges.request import JudgeRequest, Part
from ..media import ImageError, ImageStore, ref_path, to_data_url
from ..protocols import ProtocolSpec
from ..types import ImageRef, Interleaved, Judgment, Prediction, Result, Sample
from .base import PerItemScorer
from .protocol_files import MMIE_CONSTANTS, MMIE_URL, PromptSet

PROMPT_FOR = (("SA", "SA_SYSTEM_PROMPT"), ("PBL", "PBL_SYSTEM_PROMPT"), ("MSR", "MSR_PROMPT"))
TEMPLATE = "### Question\n{question}\n### Answer\n{answer}\n### Feedback\n"
MSR_TEMPLATE = (
    "### Question\n{question}\n### Answer\n{answer}\n### Correct Answer\n"
    "The correct answer to this question should be: {gt_answer}\n### Feedback\n"
)
SCORE_RE = re.compile(r"### Score.*?(-?\d+(\.\d+)?)", re.DOTALL)
ANSWER_CAP = 2  # stop once more than this many images are taken (k > 2)
MAX_IMAGES = 4
IMAGE = object()  # placeholder marker inside a piece list

Piece = str | ImageRef


def parse_score(reply: str | None) -> tuple[float | None, str | None]:
    """The official parse rule: (score, None) or (None, reason)."""
    if not reply or not reply.strip():
        return None, "empty reply"
    m = SCORE_RE.search(reply)
    if m is None:
        return None, "no score"
    value = round(float(m.group(1)))  # Python's round: half to even, as the official code
    if not 0 <= value <= 6:
        return None, "score out of range"
    return float(value), None


def prompt_key(sample_id: str) -> tuple[str, str] | None:
    for needle, key in PROMPT_FOR:
        if needle in sample_id:
            return needle, key
    return None


def _exists(ref: ImageRef, store: ImageStore | None) -> bool:
    if ref.missing:
        return False
    try:
        return ref_path(ref, store).is_file()
    except ImageError:
        return False


@dataclass
class Flattened:
    question: list[Piece]
    answer: list[Piece]
    images: list[ImageRef]


def flatten(
    question: Interleaved, answer: Interleaved, store: ImageStore | None = None
) -> Flattened:
    """Build the question and answer texts with ``Image-k`` placeholders under the official caps."""
    k = 0
    images: list[ImageRef] = []
    q: list[Piece] = []
    for seg in question:
        if seg.text is not None:
            q.append(seg.text + "\n")
        elif seg.image is not None and _exists(seg.image, store):
            q.extend([f"Image-{k}: ", seg.image, "\n"])
            images.append(seg.image)
            k += 1
    a: list[Piece] = []
    for seg in answer:
        if seg.text is not None:
            a.append(seg.text + "\n")
            if k > ANSWER_CAP:
                break
        else:
            if k > ANSWER_CAP:
                break
            if seg.image is not None and _exists(seg.image, store):
                a.extend([f"Image-{k}: ", seg.image, "\n"])
                images.append(seg.image)
                k += 1
            if k > ANSWER_CAP:
                break
    return Flattened(q, a, images)


def _text(pieces: list[Piece]) -> str:
    return "".join(p if isinstance(p, str) else "<image>" for p in pieces)


class MMIEScorer(PerItemScorer):
    name = "mmie"
    protocol_version = "mmie-score@eb0fd6e"

    def __init__(
        self,
        engine: JudgeEngine,
        prompts: PromptSet,
        *,
        store: ImageStore | None = None,
        max_tokens: int = 1024,
        system_prompt: str | None = PHI3_CHAT_SYSTEM,
    ) -> None:
        self.engine = engine
        self.prompts = prompts
        self.store = store
        self.max_tokens = max_tokens
        self.system_prompt = system_prompt  # None: no system message is sent

    @property
    def comparable(self) -> bool:  # type: ignore[override]
        return self.prompts.official and "mmie-score" in self.engine.model.lower()

    def build(
        self, sample: Sample, prediction: Prediction
    ) -> tuple[JudgeRequest | None, str, dict]:
        """The judge request for one item, or (None, reason) when the protocol excludes it."""
        choice = prompt_key(sample.id)
        if choice is None:
            return None, "unrecognised category", {}
        flat = flatten(sample.input, prediction.output, self.store)
        if len(flat.images) > MAX_IMAGES:
            return None, "too many images", {"images": len(flat.images)}
        needle, key = choice
        gt = sample.metadata.get("gt_answer")
        template = MSR_TEMPLATE if needle == "MSR" else TEMPLATE
        head, _, tail = template.partition("{question}")
        mid, _, end = tail.partition("{answer}")
        pieces: list[Piece] = [
            self.prompts.texts[key] + head,
            *flat.question,
            mid,
            *flat.answer,
            end.format(gt_answer=gt) if needle == "MSR" else end,
        ]
        parts: list[Part] = []
        buf = ""
        for p in pieces:
            if isinstance(p, str):
                buf += p
                continue
            if buf:
                parts.append(Part.of_text(buf))
                buf = ""
            parts.append(Part.of_image(to_data_url(p, store=self.store)))
        if buf:
            parts.append(Part.of_text(buf))
        meta = {"images": len(flat.images), "prompt": key}
        request = JudgeRequest(
            tuple(parts),
            system=self.system_prompt,
            max_tokens=self.max_tokens,
            image_placeholder=PLACEHOLDER,
        )
        return request, "", meta

    @staticmethod
    def prompt_text(request: JudgeRequest) -> str:
        """The prompt as one string with ``<image>`` where each image part sits."""
        return "".join(p.text if p.kind == "text" else "<image>" for p in request.parts)

    async def _one(self, sample: Sample, prediction: Prediction) -> Judgment:
        if prediction.error:
            return self.error(sample.id, f"generation failed: {prediction.error}")
        try:
            request, reason, meta = self.build(sample, prediction)
        except ImageError as e:
            return self.invalid(sample.id, "unreadable image", metadata={"detail": str(e)})
        if request is None:
            return self.invalid(sample.id, reason, metadata=meta)
        reply = await self.engine.ask(
            request, protocol=self.protocol_version, template_sha256=self.prompts.template_sha256
        )
        extra = {
            "cost": reply.cost,
            "usage": reply.usage,
            "raw": reply.text,
            "metadata": {**meta, "cached": reply.cached},
        }
        if reply.status != "ok":
            return self.error(
                sample.id,
                "judge error",
                **{**extra, "metadata": {**extra["metadata"], "detail": reply.error}},
            )
        score, why = parse_score(reply.text)
        if score is None:
            return self.invalid(sample.id, why or "no score", **extra)
        return self.ok(sample.id, score, {"score": score}, **extra)

    def aggregate(self, samples: Sequence[Sample], judgments: Sequence[Judgment]) -> Result:
        """Per-category means and the micro-averaged overall on 0-6 (3 decimals) and percent."""
        return summarize(
            judgments,
            {s.id: s.category for s in samples},
            benchmark="mmie",
            scorer=self.name,
            protocol=self.protocol_version,
            judge=self.engine.model,
            scale="0-6",
            comparable=self.comparable,
            decimals=3,
            percent_of=6.0,
            metadata={
                "prompt_source": self.prompts.source,
                "prompts_official": self.prompts.official,
                "prompt_sha256": dict(self.prompts.hashes),
                "judge_stats": self.engine.stats.to_dict(),
            },
        )


def build(opts: Any, engine: JudgeEngine) -> MMIEScorer:
    """The scorer ``ibench score --protocol mmie`` runs (official prompts, pinned hashes)."""
    from . import protocol_files as pf

    prompts = pf.load_mmie_prompts(opts.protocol_file, allow_unofficial=opts.allow_unofficial)
    return MMIEScorer(engine, prompts, system_prompt=system_prompt(opts))


def system_prompt(opts: Any) -> str | None:
    """``--judge-system-prompt``: unset means the InternVL template's own message, ``none``
    sends no system message, any other text is sent as it is."""
    given = getattr(getattr(opts, "judge", None), "judge_system_prompt", None)
    if given is None:
        return PHI3_CHAT_SYSTEM
    return None if given.strip().lower() == "none" else given


SPEC = ProtocolSpec(
    name="mmie",
    kind="judge",
    builder=build,
    description="MMIE's official 0-6 rubric per category, judged by MMIE-Score",
    scale="0-100",
    benchmarks=("mmie",),
    prompt_source=MMIE_URL,
    prompt_sha256=MMIE_CONSTANTS,
    aggregation="mean 0-6 score per category and overall, as a percentage of 6",
    leaderboard="interleave_bench.leaderboard.specs:MMIE_BOARD",
    importers={"mmie-feedback": "interleave_bench.importers:aggregate_mmie_feedback"},
)
