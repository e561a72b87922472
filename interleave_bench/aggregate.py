"""Aggregation with honest statistics: means over valid judgments only, every exclusion counted by
reason, seeded bootstrap 95% intervals, and a paired comparison of two runs on common samples."""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .types import Judgment, Result


def status_counts(judgments: Iterable[Judgment]) -> tuple[dict[str, int], dict[str, int]]:
    """A result's ``counts`` (valid / invalid / error / total) and ``invalid_reasons`` (each
    reason of a judgment that is not ok, sorted): the same tally for every protocol."""
    js = list(judgments)
    counts = Counter(j.status for j in js)
    reasons = Counter(j.reason or "unknown" for j in js if j.status != "ok")
    return {
        "valid": counts.get("ok", 0),
        "invalid": counts.get("invalid", 0),
        "error": counts.get("error", 0),
        "total": len(js),
    }, dict(sorted(reasons.items()))


def mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _resample_means(values: Sequence[float], n: int, seed: int) -> list[float]:
    try:
        import numpy as np
    except ImportError:  # the core install has no numpy: a slower pure-Python path
        rng = random.Random(seed)
        k = len(values)
        return [sum(rng.choices(values, k=k)) / k for _ in range(n)]
    rng_np = np.random.default_rng(seed)
    arr = np.asarray(values, dtype=float)
    out: list[float] = []
    for start in range(0, n, 64):  # chunks keep memory at 64 x len(values)
        idx = rng_np.integers(0, len(arr), size=(min(64, n - start), len(arr)))
        out.extend(arr[idx].mean(axis=1).tolist())
    return out


def bootstrap_ci(
    values: Sequence[float], *, resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> list[float] | None:
    """Percentile bootstrap interval of the mean (None for fewer than two values)."""
    if len(values) < 2 or resamples <= 0:
        return None
    means = sorted(_resample_means(values, resamples, seed))
    lo = means[int(math.floor((1 - level) / 2 * (resamples - 1)))]
    hi = means[int(math.ceil((1 + level) / 2 * (resamples - 1)))]
    return [lo, hi]


def summarize(
    judgments: Iterable[Judgment],
    categories: Mapping[str, str | None],
    *,
    benchmark: str,
    scorer: str,
    protocol: str,
    judge: str | None = None,
    scale: str = "",
    comparable: bool = False,
    decimals: int | None = 3,
    percent_of: float | None = None,
    resamples: int = 1000,
    seed: int = 0,
    metadata: dict[str, Any] | None = None,
) -> Result:
    """Per-category ``{mean, n}`` and the micro-averaged overall over ``ok`` judgments.

    Invalid and error judgments are counted (and their reasons tallied), never averaged. A valid
    judgment whose sample has no category still counts in the overall.
    """
    js = list(judgments)
    counts, reasons = status_counts(js)
    valid = [j for j in js if j.status == "ok" and j.overall is not None]
    per_cat: dict[str, list[float]] = {}
    for j in valid:
        cat = categories.get(j.sample_id)
        if cat is not None:
            per_cat.setdefault(cat, []).append(float(j.overall))  # type: ignore[arg-type]
    scores = [float(j.overall) for j in valid]  # type: ignore[arg-type]

    def rnd(x: float | None) -> float | None:
        return None if x is None or decimals is None else round(x, decimals)

    by_category: dict[str, dict[str, Any]] = {}
    for cat in sorted(per_cat):
        vals = per_cat[cat]
        entry: dict[str, Any] = {"mean": rnd(mean(vals)), "n": len(vals)}
        if (ci := bootstrap_ci(vals, resamples=resamples, seed=seed)) is not None:
            entry["ci"] = [rnd(ci[0]), rnd(ci[1])]
        by_category[cat] = entry
    overall = mean(scores)
    intervals = {}
    if (ci := bootstrap_ci(scores, resamples=resamples, seed=seed)) is not None:
        intervals["overall"] = [rnd(ci[0]) or 0.0, rnd(ci[1]) or 0.0]
    return Result(
        benchmark=benchmark,
        scorer=scorer,
        protocol=protocol,
        judge=judge,
        overall=rnd(overall),
        by_category=by_category,
        counts=counts,
        invalid_reasons=reasons,
        scale=scale,
        comparable=comparable,
        intervals=intervals,
        overall_percent=(
            None if overall is None or percent_of is None else round(overall / percent_of * 100, 2)
        ),
        metadata={
            "bootstrap": {"resamples": resamples, "seed": seed, "level": 0.95},
            **(metadata or {}),
        },
    )


def paired_comparison(
    a: Iterable[Judgment], b: Iterable[Judgment], *, resamples: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Compare two runs on the samples both judged validly: mean difference (b - a) with a
    bootstrap interval, wins/ties/losses, and an exact two-sided sign-test p-value."""
    sa = {j.sample_id: j.overall for j in a if j.status == "ok" and j.overall is not None}
    sb = {j.sample_id: j.overall for j in b if j.status == "ok" and j.overall is not None}
    common = sorted(set(sa) & set(sb))
    diffs = [float(sb[i]) - float(sa[i]) for i in common]  # type: ignore[arg-type]
    wins = sum(d > 0 for d in diffs)
    losses = sum(d < 0 for d in diffs)
    return {
        "n_common": len(common),
        "only_a": len(set(sa) - set(sb)),
        "only_b": len(set(sb) - set(sa)),
        "mean_a": mean([float(sa[i]) for i in common]),  # type: ignore[arg-type]
        "mean_b": mean([float(sb[i]) for i in common]),  # type: ignore[arg-type]
        "mean_diff": mean(diffs),
        "ci": bootstrap_ci(diffs, resamples=resamples, seed=seed),
        "wins_b": wins,
        "ties": len(diffs) - wins - losses,
        "wins_a": losses,
        "sign_test_p": sign_test(wins, losses),
    }


def sign_test(wins: int, losses: int) -> float | None:
    n = wins + losses
    if n == 0:
        return None
    k = min(wins, losses)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)
