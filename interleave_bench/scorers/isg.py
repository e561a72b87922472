"""The ISG-Bench protocol (``--protocol isg``): four levels, as the official ``ISG-eval.py`` at
commit de504cd runs them, aggregated by ``isg_aggregate`` exactly as ``calculate_performance.py``.

Per sample, in this order and one call at a time (the image level depends on earlier verdicts):

1. structure: the answer's text/image type sequence equals the golden one (no judge call);
   levels 2 and 3 run only when it does, on a tag map ``<gen_textN>``/``<gen_imgN>`` (answer)
   and ``<query_textN>``/``<query_imgN>`` (query);
2. image level: ``predict.image_qa`` (a list, or a dict whose first value is the list) in order;
   a question is asked about its image with the DSG prompt unless a preliminary blocks it; a
   "Yes" verdict unblocks later questions. Official rule (the default): a preliminary must be a
   key of the tag map *and* answered "Yes"; ids are numbers, so any question with a preliminary is
   never asked. ``dependencies="answered"`` (not comparable) asks it when every preliminary
   was answered "Yes", the rule the ISG paper describes;
3. block level: each ``predict.block_qa.questions`` item whose subject and object are in the tag map
   is asked twice (requirement "Score", then "Yes_No"): Image-Image (both images, then the
   text), Text-Text (question with the tags replaced by `Text 1`/`Text 2`), Text-Image (the image,
   then the text; the official code replaces the text's *content* in the question, kept as is);
4. holistic: the four holistic pieces around the query, the answer and the golden answer, every
   text with newlines turned into spaces.

Replies are parsed as the official client does (the whole reply as JSON; otherwise
``{"error", "raw_output"}``); a failed call is None. An unreadable image at level 2 or 3 makes the
sample's result ``{"error": ...}`` as the official try/except does. Not reproduced: the official
client sends images with ``detail: "low"``, our request type has no such field.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

from ..aggregate import status_counts
from ..judges.engine import JudgeEngine
from ..judges.request import JudgeRequest, Part
from ..media import ImageError, ImageStore, to_data_url
from ..protocols import ProtocolSpec
from ..types import ImageRef, Interleaved, Judgment, Prediction, Result, Sample
from .base import PerItemScorer
from .isg_aggregate import LEVELS, aggregate_rows, official_row
from .isg_prompts import ISG_FILE_SHA256, ISG_URL, ISGPrompts

REQUIREMENTS = ("Score", "Yes_No")
DEPENDENCIES = ("official", "answered")
Content = str | ImageRef


def shape(seq: Interleaved) -> list[str]:
    return ["text" if s.text is not None else "image" for s in seq]


def tag_map(query: Interleaved, answer: Interleaved) -> dict[str, Content]:
    """``<gen_text1>``... for the answer and ``<query_img1>``... for the query, counted by kind."""
    tags: dict[str, Content] = {}
    for prefix, seq in (("gen", answer), ("query", query)):
        n = {"text": 0, "img": 0}
        for seg in seq:
            kind = "text" if seg.text is not None else "img"
            n[kind] += 1
            content = seg.text if seg.text is not None else seg.image
            tags[f"<{prefix}_{kind}{n[kind]}>"] = content  # type: ignore[assignment]
    return tags


def image_questions(predict: Any) -> list[dict[str, Any]] | None:
    """``predict.image_qa`` as the official code reads it (None when absent)."""
    if not isinstance(predict, dict) or "image_qa" not in predict:
        return None
    qa = predict["image_qa"]
    if isinstance(qa, dict):
        qa = next(iter(qa.values()), [])
    return [dict(q) for q in qa if isinstance(q, dict)] if isinstance(qa, list) else []


def block_questions(predict: Any) -> list[dict[str, Any]]:
    try:
        qs = predict["block_qa"]["questions"]
    except (KeyError, TypeError):
        return []
    return [dict(q) for q in qs if isinstance(q, dict)] if isinstance(qs, list) else []


def parse_reply(text: str | None) -> Any:
    """The official client's parse: the stripped reply as JSON, else an error record."""
    if text is None:
        return None
    try:
        value = json.loads(text.strip())
    except json.JSONDecodeError:
        return {"error": "Invalid JSON response", "raw_output": text}
    if not isinstance(value, dict):  # the official code would fail later on it: keep it a record
        return {"error": "JSON reply is not an object", "raw_output": text}
    return value


class ISGScorer(PerItemScorer):
    name = "isg"
    protocol_version = "isg@de504cd"

    def __init__(
        self,
        engine: JudgeEngine,
        prompts: ISGPrompts,
        *,
        store: ImageStore | None = None,
        dependencies: str = "official",
        max_tokens: int = 1024,
    ) -> None:
        if dependencies not in DEPENDENCIES:
            raise ValueError(f"dependencies must be one of {DEPENDENCIES}, got {dependencies!r}")
        self.engine = engine
        self.prompts = prompts
        self.store = store
        self.dependencies = dependencies
        self.max_tokens = max_tokens

    @property
    def comparable(self) -> bool:  # type: ignore[override]
        return (
            self.prompts.official
            and self.dependencies == "official"
            and "gpt-4.1" in self.engine.model.lower()
        )

    # requests -------------------------------------------------------------------------------
    def _image(self, ref: Content) -> Part:
        if not isinstance(ref, ImageRef):
            raise ImageError(f"expected an image, got text {str(ref)[:40]!r}")
        return Part.of_image(to_data_url(ref, store=self.store))

    def _request(self, parts: list[Part]) -> JudgeRequest:
        # the official client sends every image at low detail
        return JudgeRequest(
            tuple(parts), max_tokens=self.max_tokens, json_mode=True, image_detail="low"
        )

    def dsg_request(self, question: dict[str, Any], tags: dict[str, Content]) -> JudgeRequest:
        text = self.prompts.texts["DSG"].format(question=question.get("Question"))
        return self._request([self._image(tags[question["image"]]), Part.of_text(text)])

    def block_requests(
        self, q: dict[str, Any], tags: dict[str, Content]
    ) -> list[tuple[str, JudgeRequest]]:
        """The two requests for one block question, in the official order (Score, Yes_No)."""
        subj, obj, question = q["subject"], q["object"], q["Question"]
        s, o = tags[subj], tags[obj]
        t = self.prompts.texts
        out = []
        for req_name in REQUIREMENTS:
            requirement = t[req_name]
            if "img" in subj and "img" in obj:
                text = t["Image-Image"].format(requirement=requirement, question=question)
                parts = [self._image(s), self._image(o), Part.of_text(text)]
            elif "text" in subj and "text" in obj:
                question = question.replace(subj, " `Text 1` ").replace(obj, " `Text 2` ")
                text = t["Text-Text"].format(
                    requirement=requirement, text1=s, text2=o, question=question
                )
                parts = [Part.of_text(text)]
            else:
                text_side, image_side = (s, o) if "text" in subj else (o, s)
                question = question.replace(str(text_side), " `Text` ")
                text = t["Text-Image"].format(
                    requirement=requirement, text=text_side, question=question
                )
                parts = [self._image(image_side), Part.of_text(text)]
            out.append((req_name, self._request(parts)))
        return out

    def holistic_request(self, sample: Sample, answer: Interleaved) -> JudgeRequest:
        p = self.prompts.holistic
        parts: list[Part] = []
        for piece, seq in ((p[0], sample.input), (p[1], answer), (p[2], sample.gold)):
            parts.append(Part.of_text(piece.replace("\n", " ")))
            for seg in seq or ():
                if seg.text is not None:
                    parts.append(Part.of_text(seg.text.replace("\n", " ")))
                else:
                    parts.append(self._image(seg.image))  # type: ignore[arg-type]
        parts.append(Part.of_text(p[3].replace("\n", " ")))
        return self._request(parts)

    # judging --------------------------------------------------------------------------------
    async def _ask(self, request: JudgeRequest, tally: Counter[str]) -> Any:
        reply = await self.engine.ask(
            request, protocol=self.protocol_version, template_sha256=self.prompts.template_sha256
        )
        tally["calls"] += 1
        tally["cached"] += reply.cached
        tally["cost"] += reply.cost  # type: ignore[assignment]
        if reply.status != "ok":
            tally["errors"] += 1
            return None
        parsed = parse_reply(reply.text)
        if parsed is None or "error" in parsed:
            tally["unusable"] += 1
        return parsed

    def _blocks(self, pre: Any, tags: dict[str, Content], answered: dict[Any, str]) -> bool:
        """Whether preliminary ``pre`` keeps a question from being asked. The official code also
        requires ``pre`` to be a tag of the answer, which a numeric id never is."""
        if self.dependencies == "official" and (not isinstance(pre, str) or pre not in tags):
            return True
        return answered.get(pre) != "Yes"

    async def image_level(
        self, questions: list[dict[str, Any]], tags: dict[str, Content], tally: Counter[str]
    ) -> list[dict[str, Any]]:
        answered: dict[Any, str] = {}
        for q in questions:
            answered[q.get("id")] = "No"
            if any(self._blocks(pre, tags, answered) for pre in q.get("Preliminary") or []):
                continue
            if q.get("image") not in tags:
                continue
            q["judge"] = await self._ask(self.dsg_request(q, tags), tally)
            verdict = q["judge"].get("Judge") if isinstance(q["judge"], dict) else None
            if isinstance(verdict, str) and verdict.lower() == "yes":
                answered[q.get("id")] = "Yes"
        return questions

    async def block_level(
        self, questions: list[dict[str, Any]], tags: dict[str, Content], tally: Counter[str]
    ) -> list[dict[str, Any]]:
        for q in questions:
            if not {"subject", "object", "Question"} <= set(q):
                continue
            if q["subject"] not in tags or q["object"] not in tags:
                continue
            for req_name, request in self.block_requests(q, tags):
                q[f"VQA_judge_{req_name}"] = await self._ask(request, tally)
        return questions

    async def evaluate(
        self, sample: Sample, answer: Interleaved, tally: Counter[str]
    ) -> dict[str, Any]:
        """The official ``result`` record of one answer."""
        predict = sample.metadata.get("predict") or {}
        result: dict[str, Any] = {"structure": shape(answer) == shape(sample.gold or Interleaved())}
        if result["structure"]:
            tags = tag_map(sample.input, answer)
            try:
                result["image"] = (
                    None
                    if (qs := image_questions(predict)) is None
                    else await self.image_level(qs, tags, tally)
                )
                result["block"] = await self.block_level(block_questions(predict), tags, tally)
            except ImageError as e:
                tally["unreadable"] += 1
                return {"error": f"unreadable image: {e}"}
        try:
            result["holistic"] = await self._ask(self.holistic_request(sample, answer), tally)
        except ImageError:
            tally["unreadable"] += 1
            result["holistic"] = None
        return result

    async def _one(self, sample: Sample, prediction: Prediction) -> Judgment:
        meta: dict[str, Any] = {
            "source_id": sample.metadata.get("source_id", sample.id),
            "output_shape": shape(prediction.output),
            "first_text_empty": bool(prediction.output.segments)
            and prediction.output.segments[0].text == "",
            "dependencies": self.dependencies,
        }
        if prediction.error:
            return self.error(sample.id, f"generation failed: {prediction.error}", metadata=meta)
        tally: Counter[str] = Counter()
        result = await self.evaluate(sample, prediction.output, tally)
        meta["isg_result"] = result
        meta["calls"] = {k: v for k, v in tally.items() if k != "cost"}
        extra = {"cost": float(tally["cost"]), "metadata": meta}
        if "error" in result:
            return self.invalid(sample.id, "unreadable image", **extra)
        if tally["errors"]:
            return self.error(sample.id, "judge error", **extra)
        if tally["unusable"] or tally["unreadable"]:
            return self.invalid(sample.id, "unusable judge reply", **extra)
        values = official_row(row_of(sample, meta), [])
        scores = {lv: (None if values[lv] is None else float(values[lv])) for lv in LEVELS}
        return self.ok(sample.id, float(values["holistic"]), scores, **extra)

    def aggregate(self, samples: Sequence[Sample], judgments: Sequence[Judgment]) -> Result:
        """The official 8-group table (4 decimals) and the honest variant; ``overall`` is the
        mean holistic score of the valid judgments (ours, not a published number)."""
        by_id = {s.id: s for s in samples}
        rows = [row_of(by_id[j.sample_id], j.metadata) for j in judgments if j.sample_id in by_id]
        value, problems = aggregate_rows(rows)
        counts, reasons = status_counts(judgments)
        valid = [j.overall for j in judgments if j.status == "ok" and j.overall is not None]
        groups = value["official"]["groups"]
        return Result(
            benchmark="isg",
            scorer=self.name,
            protocol=self.protocol_version,
            judge=self.engine.model,
            overall=None if not valid else round(sum(valid) / len(valid), 4),
            by_category={
                g: {"mean": t["holistic"], "n": t["total"], **t}
                for g, t in groups.items()
                if t["total"]
            },
            counts=counts,
            invalid_reasons=reasons,
            scale="1-10",
            comparable=self.comparable,
            metadata={
                "official": value["official"],
                "honest": value["honest"],
                "rows": value["counts"],
                "problems": [p.to_dict() for p in problems],
                "prompt_source": self.prompts.source,
                "prompts_official": self.prompts.official,
                "prompt_sha256": self.prompts.sha256,
                "dependencies": self.dependencies,
                "judge_stats": self.engine.stats.to_dict(),
            },
        )


def row_of(sample: Sample, meta: dict[str, Any]) -> dict[str, Any]:
    """The judged-file row the official aggregator reads, rebuilt from a judgment's metadata
    (output contents are not kept: only the types and whether the first block is empty text)."""
    out = [
        {"type": t, "content": "" if i == 0 and meta.get("first_text_empty") else "."}
        for i, t in enumerate(meta.get("output_shape") or [])
    ]
    row: dict[str, Any] = {"id": meta.get("source_id"), "Category": sample.category, "output": out}
    if meta.get("isg_result") is not None:
        row["result"] = meta["isg_result"]
    return row


def build(opts: Any, engine: JudgeEngine) -> ISGScorer:
    """The scorer ``ibench score --protocol isg`` runs (official prompts, pinned hash). The
    dependency rule comes from ``extra: {isg_dependencies: official|answered}`` of a score config."""
    from .isg_prompts import load_isg_prompts
    from .protocol_files import ProtocolError

    rule = (getattr(opts, "extra", None) or {}).get("isg_dependencies", "official")
    if rule not in DEPENDENCIES:
        raise ProtocolError(
            f"extra.isg_dependencies: expected one of {', '.join(DEPENDENCIES)}, got {rule!r}"
        )
    prompts = load_isg_prompts(opts.protocol_file, allow_unofficial=opts.allow_unofficial)
    return ISGScorer(engine, prompts, dependencies=rule)


SPEC = ProtocolSpec(
    name="isg",
    kind="judge",
    builder=build,
    description="ISG-Bench's four levels (structure, block, image, holistic), judged by GPT-4.1",
    scale="1-10",
    benchmarks=("isg",),
    prompt_source=ISG_URL,
    prompt_sha256={"get_judge_prompt.py": ISG_FILE_SHA256},
    aggregation="calculate_performance.py's 8-group table (structure rate, image, block, "
    "holistic means, 4 decimals) plus an honest variant counting failures",
    importers={"isg": "interleave_bench.scorers.isg_aggregate:aggregate_isg"},
)
