"""What each leaderboard accepts: the official protocol, judge and prompt hashes, the per-item
scale, and how per-sample judgments become (a) the aggregate the run claims and (b) a row.

Recomputation calls the very functions the scorers aggregate with (``summarize``,
``aggregate_aspects``, ``summarize_criteria``) and re-reads each score from the raw judge reply
with the scorers' own parse rules, so a submission cannot disagree with our code and still pass.
"""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..aggregate import bootstrap_ci, mean, summarize
from ..scorers.interleaved_eval import (
    ASPECTS,
    TEXT_ASPECTS,
    InterleavedEvalScorer,
    aggregate_aspects,
    aspect_means,
    parse_aspects,
    text_aspects_apply,
)
from ..scorers.mmie import MMIEScorer, parse_score
from ..scorers.opening import (
    CRITERIA,
    OpenINGScoreScorer,
    aggregate_criteria,
    parse_criteria,
    summarize_criteria,
)
from ..scorers.protocol_files import MMIE_CONSTANTS, OPENING_FILES
from ..types import Judgment, Result, Sample

REPAIR_SEPARATOR = "\n----- repair -----\n"  # how InterleavedEvalScorer joins a repaired reply
RESAMPLES = 1000

Recompute = Callable[[Sequence[Sample], Sequence[Judgment], Result], Result]
RowScores = Callable[
    [Sequence[Sample], Sequence[Judgment]], tuple[dict[str, float | None], float | None, Any]
]
Reparse = Callable[[Sample, Judgment], "str | None"]


@dataclass(frozen=True)
class BoardSpec:
    bench: str
    scorer: str  # the scorer name its judgments and result carry
    protocol: str  # the official protocol version
    judge: str  # the official judge, for messages
    judge_matches: Callable[[str], bool]
    prompt_sha256: dict[str, str]  # pinned official prompt hashes; empty: none pinned
    item_scale: tuple[float, float]  # every per-sample score lies here
    integer_scores: bool
    row_scale: str
    table: str  # the board table submissions go to
    recompute: Recompute
    row_scores: RowScores
    reparse: Reparse


def _is_gpt4o(judge: str) -> bool:
    j = judge.lower()
    return j.startswith("gpt-4o") and "mini" not in j


def _mean_of_column_means(rows: Sequence[Sequence[float | None]]) -> float | None:
    """AVG of InterleavedEval and Overall of OpenING: the mean of per-column means (None skipped)."""
    cols = max((len(r) for r in rows), default=0)
    means = []
    for c in range(cols):
        vals = [float(r[c]) for r in rows if r[c] is not None]  # type: ignore[arg-type]
        if vals:
            means.append(sum(vals) / len(vals))
    return mean(means)


def _bootstrap_mean_of_means(rows: Sequence[Sequence[float | None]]) -> list[float] | None:
    """Percentile 95% interval of the mean of column means over samples resampled with
    replacement (seed 0): AVG-style statistics are not a plain mean of per-sample values, so
    ``aggregate.bootstrap_ci`` does not apply. Vectorised with numpy when it is installed."""
    n = len(rows)
    if n < 2:
        return None
    try:
        import numpy as np
    except ImportError:
        rng = random.Random(0)
        stats = [
            _mean_of_column_means([rows[rng.randrange(n)] for _ in range(n)])
            for _ in range(RESAMPLES)
        ]
        values = sorted(float(v) for v in stats if v is not None)
    else:
        arr = np.array([[np.nan if v is None else v for v in r] for r in rows], dtype=float)
        gen = np.random.default_rng(0)
        chunks = []
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a column empty in one resample
            for start in range(0, RESAMPLES, 32):
                idx = gen.integers(0, n, size=(min(32, RESAMPLES - start), n))
                chunks.append(np.nanmean(np.nanmean(arr[idx], axis=1), axis=1))
        flat = np.concatenate(chunks)
        values = sorted(float(v) for v in flat[~np.isnan(flat)])
    if len(values) < 2:
        return None
    k = len(values) - 1
    return [values[int(0.025 * k)], values[min(k, math.ceil(0.975 * k))]]


def _valid(js: Sequence[Judgment]) -> list[Judgment]:
    return [j for j in js if j.status == "ok" and j.overall is not None]


# ------------------------------------------------------------------------------ MMIE


def _mmie_recompute(samples: Sequence[Sample], js: Sequence[Judgment], claimed: Result) -> Result:
    return summarize(
        js,
        {s.id: s.category for s in samples},
        benchmark="mmie",
        scorer=MMIEScorer.name,
        protocol=MMIEScorer.protocol_version,
        judge=claimed.judge,
        scale="0-6",
        decimals=3,
        percent_of=6.0,
        resamples=0,
    )


def _pct(x: float | None) -> float | None:
    return None if x is None else round(x / 6 * 100, 2)


def _mmie_row(samples: Sequence[Sample], js: Sequence[Judgment]):
    cat = {s.id: s.category for s in samples}
    valid = _valid(js)
    scores: dict[str, float | None] = {}
    for c in ("situational_analysis", "project_based_learning", "multi_step_reasoning"):
        scores[c] = _pct(mean([float(j.overall) for j in valid if cat.get(j.sample_id) == c]))  # type: ignore[arg-type]
    values = [float(j.overall) for j in valid]  # type: ignore[arg-type]
    ci = bootstrap_ci(values, resamples=RESAMPLES, seed=0)
    return scores, _pct(mean(values)), None if ci is None else [_pct(ci[0]), _pct(ci[1])]


def _mmie_reparse(sample: Sample, j: Judgment) -> str | None:
    if j.raw is None:
        return "an ok judgment without the judge's raw reply" if j.status == "ok" else None
    score, why = parse_score(j.raw)
    if j.status == "ok" and score != j.overall:
        got = score if score is not None else f"nothing ({why})"
        return f"overall {j.overall} but the protocol's parse rule reads {got} from the raw reply"
    if j.status == "invalid" and score is not None:
        return f"marked invalid, but the raw reply parses to the score {score}"
    return None


# ------------------------------------------------------------------------------ InterleavedBench


def _ie_recompute(samples: Sequence[Sample], js: Sequence[Judgment], claimed: Result) -> Result:
    return aggregate_aspects(
        js,
        {s.id: s.task for s in samples},
        judge=claimed.judge,
        protocol=InterleavedEvalScorer.protocol_version,
    )


def _ie_row(samples: Sequence[Sample], js: Sequence[Judgment]):
    valid = [j for j in js if j.status == "ok"]
    means, avg = aspect_means(valid)
    rows = [[j.scores.get(a) for a in ASPECTS] for j in valid]
    ci = _bootstrap_mean_of_means(rows)
    rnd = {a: None if v is None else round(v, 2) for a, v in means.items()}
    return (
        rnd,
        None if avg is None else round(avg, 2),
        None if ci is None else [round(ci[0], 2), round(ci[1], 2)],
    )


def _ie_reparse(sample: Sample, j: Judgment) -> str | None:
    if j.raw is None:
        return "an ok judgment without the judge's raw reply" if j.status == "ok" else None
    aspects = (
        ASPECTS
        if text_aspects_apply(sample.task)
        else tuple(a for a in ASPECTS if a not in TEXT_ASPECTS)
    )
    scores, why = parse_aspects(j.raw.split(REPAIR_SEPARATOR)[-1], aspects)
    if j.status == "invalid":
        return None if scores is None else "marked invalid, but the raw reply parses"
    if scores is None:
        return f"the raw reply does not parse under the protocol ({why})"
    if any(j.scores.get(a) != v for a, v in scores.items()):
        return "aspect scores differ from what the raw reply says"
    if abs(float(j.overall or 0.0) - sum(scores.values()) / len(scores)) > 1e-9:
        return "overall is not the mean of the applicable aspects"
    return None


# ------------------------------------------------------------------------------ OpenING

OPENING_KEYS = {c: c.lower().replace("-", "_").replace(" ", "_") for c in CRITERIA}


def _opening_recompute(
    samples: Sequence[Sample], js: Sequence[Judgment], claimed: Result
) -> Result:
    return aggregate_criteria(
        js,
        {s.id: s.category for s in samples},
        benchmark=samples[0].benchmark if samples else "opening",
        judge=claimed.judge,
        resamples=0,
    )


def _opening_row(samples: Sequence[Sample], js: Sequence[Judgment]):
    valid = _valid(js)
    summary = summarize_criteria(("model", j.scores) for j in valid).get("model", {})
    scores = {OPENING_KEYS[c]: summary.get(c) for c in CRITERIA}
    rows = [[j.scores.get(c) for c in CRITERIA] for j in valid]
    ci = _bootstrap_mean_of_means(rows)
    overall = summary.get("Overall")
    return scores, overall, None if ci is None else [round(ci[0], 2), round(ci[1], 2)]


def _opening_reparse(sample: Sample, j: Judgment) -> str | None:
    if j.raw is None:
        return "an ok judgment without the judge's raw reply" if j.status == "ok" else None
    scores, why = parse_criteria(j.raw)
    if j.status == "invalid":
        return None if scores is None else "marked invalid, but the raw reply parses"
    if scores is None:
        return f"the raw reply does not parse under the protocol ({why})"
    if any(j.scores.get(c) != v for c, v in scores.items()):
        return "criterion scores differ from what the raw reply says"
    if abs(float(j.overall or 0.0) - sum(scores.values()) / len(scores)) > 1e-9:
        return "overall is not the mean of the seven criteria"
    return None


MMIE_BOARD = BoardSpec(
    bench="mmie",
    scorer=MMIEScorer.name,
    protocol=MMIEScorer.protocol_version,
    judge="MMIE-Score",
    judge_matches=lambda judge: "mmie-score" in judge.lower(),
    prompt_sha256=dict(MMIE_CONSTANTS),
    item_scale=(0.0, 6.0),
    integer_scores=True,
    row_scale="0-100",
    table="main",
    recompute=_mmie_recompute,
    row_scores=_mmie_row,
    reparse=_mmie_reparse,
)

INTERLEAVEDBENCH_BOARD = BoardSpec(
    bench="interleavedbench",
    scorer=InterleavedEvalScorer.name,
    protocol=InterleavedEvalScorer.protocol_version,
    judge="GPT-4o",
    judge_matches=_is_gpt4o,
    prompt_sha256={},  # the official prompt is not pinned: no submission can be comparable
    item_scale=(0.0, 5.0),
    integer_scores=False,
    row_scale="0-5",
    table="auto",
    recompute=_ie_recompute,
    row_scores=_ie_row,
    reparse=_ie_reparse,
)

OPENING_BOARD = BoardSpec(
    bench="opening",
    scorer=OpenINGScoreScorer.name,
    protocol=OpenINGScoreScorer.protocol_version,
    judge="GPT-4o",
    judge_matches=_is_gpt4o,
    prompt_sha256={"detailed_score_system": OPENING_FILES["detailed_score_system"][1]},
    item_scale=(0.0, 10.0),
    integer_scores=False,
    row_scale="0-10",
    table="gpt4o_scores",
    recompute=_opening_recompute,
    row_scores=_opening_row,
    reparse=_opening_reparse,
)


class _Boards(Mapping[str, BoardSpec]):
    """``{bench: BoardSpec}`` read from the protocol registry on each use: a protocol declares
    its board (``ProtocolSpec.leaderboard``), so intake knows a plugin's board too."""

    def _all(self) -> dict[str, BoardSpec]:
        from ..protocols import board_specs

        return board_specs()

    def __getitem__(self, bench: str) -> BoardSpec:
        return self._all()[bench]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


SPECS: Mapping[str, BoardSpec] = _Boards()
