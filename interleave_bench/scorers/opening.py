"""OpenING: the pairwise arena (A / B / Tie(A) / Tie(B), four win rates) and the 7-criterion 0-10
scoring with OpenING's summary rule. Unreadable verdicts are recorded as invalid, never decided at
random (the official script's coin flip is the one thing we deliberately do not reproduce)."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from ..aggregate import mean, summarize
from ..judges.engine import JudgeEngine
from ..judges.request import JudgeRequest, Part
from ..media import ImageError, ImageStore, to_data_url
from ..protocols import ProtocolSpec
from ..types import Interleaved, Judgment, Prediction, Result, Sample
from .base import JudgmentMaker, PairwiseScorer, PerItemScorer, check_aligned, json_object_in
from .protocol_files import OPENING_BASE, OPENING_FILES, PromptSet, load_opening_prompt

CRITERIA = (
    "Correctness",
    "Image-Text Coherency",
    "Multi-step Consistency",
    "Content Quality",
    "Human Preference Alignment",
    "Completeness",
    "Content Richness",
)
WINNERS = ("A", "B", "Tie(A)", "Tie(B)")
_VERDICT_RE = re.compile(
    r"\b(A|B)\s+is\s+better\b|\bTie\s*\(\s*(A|B)(?:\s+better)?\s*\)", re.IGNORECASE
)
IMAGE_SIZE = (512, 512)


# ------------------------------------------------------------------------------ pure rules


def parse_verdict(text: str | None) -> tuple[str | None, str | None]:
    """(winner, None) with winner in A, B, Tie(A), Tie(B); or (None, reason)."""
    if not text or not text.strip():
        return None, "empty reply"
    found = set()
    for m in _VERDICT_RE.finditer(text):
        found.add(m.group(1).upper() if m.group(1) else f"Tie({m.group(2).upper()})")
    if not found:
        return None, "no verdict"
    if len(found) > 1:
        return None, "ambiguous verdict"
    return found.pop(), None


def flip(winner: str) -> str:
    return {"A": "B", "B": "A", "Tie(A)": "Tie(B)", "Tie(B)": "Tie(A)"}[winner]


def win_rates(matches: Iterable[tuple[str, str, str]]) -> dict[str, dict[str, float | None]]:
    """Four win rates per model from (model_A, model_B, winner) triples.

    FDT counts a Tie(A) as an A win; "without_tie" drops ties; "tie_0" counts ties as losses;
    "tie_0.5" counts every tie as half a win.
    """
    stats: dict[str, dict[str, int]] = defaultdict(lambda: dict(n=0, wins=0, own_ties=0, ties=0))
    for a, b, winner in matches:
        for model, side in ((a, "A"), (b, "B")):
            s = stats[model]
            s["n"] += 1
            s["wins"] += winner == side
            s["own_ties"] += winner == f"Tie({side})"
            s["ties"] += winner.startswith("Tie")
    out: dict[str, dict[str, float | None]] = {
        "fdt": {},
        "without_tie": {},
        "tie_0": {},
        "tie_0.5": {},
    }
    for model in sorted(stats):
        s = stats[model]
        decisive = s["n"] - s["ties"]
        out["fdt"][model] = (s["wins"] + s["own_ties"]) / s["n"]
        out["without_tie"][model] = s["wins"] / decisive if decisive else None
        out["tie_0"][model] = s["wins"] / s["n"]
        out["tie_0.5"][model] = (s["wins"] + 0.5 * s["ties"]) / s["n"]
    return out


def parse_criteria(text: str | None) -> tuple[dict[str, float] | None, str | None]:
    """Strictly validated 7-criterion JSON: ``{criterion: {"Score": 0-10, "Justification": str}}``."""
    value, why = json_object_in(text)
    if value is None:
        return None, why
    if isinstance(value.get("score"), dict):  # the published file's {"score": {...}} wrapper
        value = value["score"]
    missing = [c for c in CRITERIA if c not in value]
    if missing:
        return None, f"missing criteria: {', '.join(missing)}"
    scores: dict[str, float] = {}
    for c in CRITERIA:
        item = value[c]
        score = item.get("Score") if isinstance(item, dict) else None
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            return None, f"{c}: no numeric Score"
        if not 0 <= score <= 10:
            return None, "score out of range"
        scores[c] = float(score)
    return scores, None


def summarize_criteria(
    rows: Iterable[tuple[str, dict[str, float | None]]],
) -> dict[str, dict[str, float | None]]:
    """OpenING's summary: per model, the mean of each criterion over non-null scores rounded to 2
    decimals; Overall = the mean of those rounded means, rounded to 2."""
    per: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for model, scores in rows:
        for c, v in scores.items():
            if v is not None:
                per[model][c].append(float(v))
    out: dict[str, dict[str, float | None]] = {}
    for model in sorted(per):
        means = {c: round(sum(v) / len(v), 2) for c, v in sorted(per[model].items()) if v}
        out[model] = {
            **means,
            "Overall": round(sum(means.values()) / len(means), 2) if means else None,
        }
    return out


def criterion_means(judgments: Iterable[Judgment]) -> dict[str, float | None]:
    """Each criterion's mean over the valid judgments, rounded to 2 as OpenING's summary does."""
    valid = [j for j in judgments if j.status == "ok"]
    out: dict[str, float | None] = {}
    for c in CRITERIA:
        m = mean([float(v) for j in valid if (v := j.scores.get(c)) is not None])
        out[c] = None if m is None else round(m, 2)
    return out


def aggregate_criteria(
    judgments: Sequence[Judgment],
    categories: dict[str, str | None],
    *,
    benchmark: str,
    judge: str | None,
    comparable: bool = False,
    resamples: int = 1000,
    metadata: dict[str, Any] | None = None,
) -> Result:
    """The run's result: the overall and per-category means of the per-answer scores on the
    protocol's 0-10 scale, plus the seven criterion means overall and per category, so a
    reader sees which criterion moved the overall."""
    result = summarize(
        judgments,
        categories,
        benchmark=benchmark,
        scorer=OpenINGScoreScorer.name,
        protocol=OpenINGScoreScorer.protocol_version,
        judge=judge,
        scale=SCORES_SPEC.scale,
        comparable=comparable,
        resamples=resamples,
        metadata={
            "criteria": criterion_means(judgments),
            "official_aggregate": "Overall = mean of the seven criterion means",
            **(metadata or {}),
        },
    )
    for cat, entry in result.by_category.items():
        entry["criteria"] = criterion_means(
            j for j in judgments if categories.get(j.sample_id) == cat
        )
    return result


# ------------------------------------------------------------------------------ requests


def _parts(
    label: str, content: Interleaved, counter: list[int], store: ImageStore | None
) -> list[Part]:
    parts = [Part.of_text(f"{label}\n")]
    for seg in content:
        if seg.text is not None:
            parts.append(Part.of_text(seg.text + "\n"))
        elif seg.image is not None and not seg.image.missing:
            counter[0] += 1
            i = counter[0]
            url = to_data_url(seg.image, store=store, size=IMAGE_SIZE, format="JPEG")
            parts += [Part.of_text(f"<IMG_{i}>"), Part.of_image(url), Part.of_text(f"</IMG_{i}>\n")]
    return parts


class _OpenINGJudge(JudgmentMaker):
    def __init__(
        self,
        engine: JudgeEngine,
        prompt: PromptSet,
        *,
        store: ImageStore | None = None,
        max_tokens: int = 1024,
    ) -> None:
        self.engine, self.prompt, self.store, self.max_tokens = engine, prompt, store, max_tokens

    @property
    def comparable(self) -> bool:  # type: ignore[override]
        return self.prompt.official

    @property
    def system(self) -> str:
        return next(iter(self.prompt.texts.values()))

    async def _ask(
        self, sample_id: str, parts: list[Part], json_mode: bool
    ) -> tuple[Any, dict[str, Any]]:
        request = JudgeRequest(
            tuple(parts), system=self.system, max_tokens=self.max_tokens, json_mode=json_mode
        )
        reply = await self.engine.ask(
            request, protocol=self.protocol_version, template_sha256=self.prompt.template_sha256
        )
        extra = {"cost": reply.cost, "usage": reply.usage, "raw": reply.text}
        return reply, extra


class OpenINGPairwiseScorer(_OpenINGJudge, PairwiseScorer):
    """Judges two models' outputs for the same sample; with ``swap`` each pair is judged in both
    orders (each order a separate judgment, mapped back to the original A/B)."""

    name = "opening_pairwise"
    protocol_version = "opening-pairwise@56b663b"

    def __init__(
        self,
        engine: JudgeEngine,
        prompt: PromptSet,
        *,
        swap: bool = False,
        store: ImageStore | None = None,
        max_tokens: int = 1024,
    ) -> None:
        super().__init__(engine, prompt, store=store, max_tokens=max_tokens)
        self.swap = swap

    async def _pair(
        self, sample: Sample, first: Prediction, second: Prediction, swapped: bool
    ) -> Judgment:
        a, b = (second, first) if swapped else (first, second)
        meta = {"model_A": first.model, "model_B": second.model, "swapped": swapped}
        if first.error or second.error:
            return self.error(sample.id, "generation failed", metadata=meta)
        counter = [0]
        try:
            parts = (
                _parts("[Question]", sample.input, counter, self.store)
                + _parts("[Answer of Model A]", a.output, counter, self.store)
                + _parts("[Answer of Model B]", b.output, counter, self.store)
            )
        except ImageError as e:
            return self.invalid(sample.id, "unreadable image", metadata={**meta, "detail": str(e)})
        reply, extra = await self._ask(sample.id, parts, json_mode=False)
        if reply.status != "ok":
            return self.error(
                sample.id, "judge error", **extra, metadata={**meta, "detail": reply.error}
            )
        winner, why = parse_verdict(reply.text)
        if winner is None:
            return self.invalid(sample.id, why or "no verdict", **extra, metadata=meta)
        if swapped:
            winner = flip(winner)
        value = {"A": 1.0, "B": 0.0}.get(winner, 0.5)
        return self.ok(sample.id, value, {"A": value}, **extra, metadata={**meta, "winner": winner})

    async def ascore_pairs(
        self,
        samples: Sequence[Sample],
        preds_a: Sequence[Prediction],
        preds_b: Sequence[Prediction],
    ) -> list[Judgment]:
        check_aligned(samples, preds_a)
        check_aligned(samples, preds_b)
        jobs = []
        for s, a, b in zip(samples, preds_a, preds_b, strict=True):
            jobs.append(self._pair(s, a, b, False))
            if self.swap:
                jobs.append(self._pair(s, a, b, True))
        return await self.gather(jobs)

    @staticmethod
    def rates(judgments: Iterable[Judgment]) -> dict[str, dict[str, float | None]]:
        return win_rates(
            (j.metadata["model_A"], j.metadata["model_B"], j.metadata["winner"])
            for j in judgments
            if j.status == "ok"
        )


class OpenINGScoreScorer(_OpenINGJudge, PerItemScorer):
    """Seven criteria, 0-10 each, as validated JSON; a reply missing criteria is invalid."""

    name = "opening_scores"
    protocol_version = "opening-scores@56b663b"

    async def _one(self, sample: Sample, prediction: Prediction) -> Judgment:
        if prediction.error:
            return self.error(sample.id, f"generation failed: {prediction.error}")
        counter = [0]
        try:
            parts = _parts("[Question]", sample.input, counter, self.store) + _parts(
                "[Answer]", prediction.output, counter, self.store
            )
        except ImageError as e:
            return self.invalid(sample.id, "unreadable image", metadata={"detail": str(e)})
        reply, extra = await self._ask(sample.id, parts, json_mode=True)
        meta = {"model": prediction.model}
        if reply.status != "ok":
            return self.error(
                sample.id, "judge error", **extra, metadata={**meta, "detail": reply.error}
            )
        scores, why = parse_criteria(reply.text)
        if scores is None:
            return self.invalid(sample.id, why or "invalid JSON", **extra, metadata=meta)
        return self.ok(
            sample.id, sum(scores.values()) / len(scores), dict(scores), **extra, metadata=meta
        )

    def aggregate(self, samples: Sequence[Sample], judgments: Sequence[Judgment]) -> Result:
        return aggregate_criteria(
            judgments,
            {s.id: s.category for s in samples},
            benchmark=samples[0].benchmark if samples else "opening",
            judge=self.engine.model,
            metadata={
                "prompt_source": self.prompt.source,
                "prompts_official": self.prompt.official,
                "prompt_sha256": dict(self.prompt.hashes),
            },
        )

    @staticmethod
    def summary(judgments: Iterable[Judgment]) -> dict[str, dict[str, float | None]]:
        return summarize_criteria(
            (j.metadata.get("model", "model"), j.scores) for j in judgments if j.status == "ok"
        )


def build_scores(opts: Any, engine: JudgeEngine) -> OpenINGScoreScorer:
    prompt = load_opening_prompt(
        "detailed_score_system", opts.protocol_file, allow_unofficial=opts.allow_unofficial
    )
    return OpenINGScoreScorer(engine, prompt)


def build_pairwise(opts: Any, engine: JudgeEngine) -> OpenINGPairwiseScorer:
    prompt = load_opening_prompt(
        "judge_system", opts.protocol_file, allow_unofficial=opts.allow_unofficial
    )
    return OpenINGPairwiseScorer(engine, prompt, swap=opts.swap)


SCORES_SPEC = ProtocolSpec(
    name="opening_scores",
    kind="judge",
    builder=build_scores,
    description="OpenING's seven criteria (0-10) per answer",
    scale="0-10",
    benchmarks=("opening",),
    prompt_source=OPENING_BASE + OPENING_FILES["detailed_score_system"][0],
    prompt_sha256={"detailed_score_system": OPENING_FILES["detailed_score_system"][1]},
    aggregation="mean of each criterion; Overall is the mean of the criterion means",
    leaderboard="interleave_bench.leaderboard.specs:OPENING_BOARD",
    importers={"opening-scores": "interleave_bench.importers:aggregate_opening_scores"},
)

PAIRWISE_SPEC = ProtocolSpec(
    name="opening_pairwise",
    kind="pairwise",
    builder=build_pairwise,
    description="OpenING's arena: two models per sample (--predictions-b), win rates",
    scale="win rate",
    benchmarks=("opening",),
    prompt_source=OPENING_BASE + OPENING_FILES["judge_system"][0],
    prompt_sha256={"judge_system": OPENING_FILES["judge_system"][1]},
    aggregation="win rates four ways (with/without ties, forward/both orders)",
    importers={"opening-pairwise": "interleave_bench.importers:aggregate_opening_pairwise"},
)
