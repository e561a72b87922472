"""How far two judges (or a judge and people) agree on the same items: exact agreement, Cohen's
quadratic-weighted kappa, Spearman and Kendall (tau-b) correlation and the mean absolute
difference, each with a seeded percentile bootstrap interval.

Everything is computed from the table of (reference, candidate) score pairs, so a bootstrap
resample only recounts that table: judge scores take few levels (1-10, 0-6, 0/0.5/1) and the
table stays small. Pure Python: the core install has no numpy.

``judgments_agreement`` pairs two ``judgments.jsonl`` files of our run format by sample; items
that are invalid or an error in either file, or present in one file only, are counted apart,
never dropped silently.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..benchmarks.problems import DataError
from ..types import Judgment, SchemaError

Table = Mapping[tuple[float, float], int]  # (reference score, candidate score) -> count
STATISTICS = ("exact_agreement", "kappa_quadratic", "spearman", "kendall_tau_b", "mean_abs_diff")


def table_of(pairs: Iterable[tuple[float, float]]) -> Counter[tuple[float, float]]:
    return Counter((float(x), float(y)) for x, y in pairs)


def _n(t: Table) -> int:
    return sum(t.values())


def exact_agreement(t: Table) -> float | None:
    """Share of items on which both gave the very same score."""
    n = _n(t)
    return sum(c for (x, y), c in t.items() if x == y) / n if n else None


def mean_abs_diff(t: Table) -> float | None:
    n = _n(t)
    return sum(abs(x - y) * c for (x, y), c in t.items()) / n if n else None


def kappa_quadratic(t: Table) -> float | None:
    """Cohen's kappa with quadratic weights: 1 - observed / chance-expected mean squared
    disagreement. The weights are squared differences of the scores themselves (not of their
    rank among the levels seen), so a level nobody used does not shrink a distance; on a scale
    whose levels all occur it equals the usual index-weighted form. Chance pairs each reference
    score with each candidate score (the product of the two marginals): its mean squared
    difference is var(x) + var(y) + (mean x - mean y)^2. None when both judges are constant."""
    n = _n(t)
    if not n:
        return None
    mx = sum(x * c for (x, _), c in t.items()) / n
    my = sum(y * c for (_, y), c in t.items()) / n
    vx = sum((x - mx) ** 2 * c for (x, _), c in t.items()) / n
    vy = sum((y - my) ** 2 * c for (_, y), c in t.items()) / n
    expected = vx + vy + (mx - my) ** 2
    if expected == 0:
        return None
    observed = sum((x - y) ** 2 * c for (x, y), c in t.items()) / n
    return 1.0 - observed / expected


def _marginal(t: Table, side: int) -> dict[float, int]:
    m: dict[float, int] = {}
    for pair, c in t.items():
        m[pair[side]] = m.get(pair[side], 0) + c
    return m


def _mid_ranks(marginal: Mapping[float, int]) -> dict[float, float]:
    """Average rank (1-based) of each level: ties share the mean of the ranks they span."""
    ranks, before = {}, 0
    for level in sorted(marginal):
        c = marginal[level]
        ranks[level] = before + (c + 1) / 2
        before += c
    return ranks


def spearman(t: Table) -> float | None:
    """Pearson correlation of the mid-ranks (ties averaged); None when either side is constant."""
    n = _n(t)
    if n < 2:
        return None
    rx, ry = _mid_ranks(_marginal(t, 0)), _mid_ranks(_marginal(t, 1))
    mean = (n + 1) / 2  # mid-ranks always average (n + 1) / 2
    sxy = sum((rx[x] - mean) * (ry[y] - mean) * c for (x, y), c in t.items())
    sxx = sum((rx[x] - mean) ** 2 * c for (x, _), c in t.items())
    syy = sum((ry[y] - mean) ** 2 * c for (_, y), c in t.items())
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else None


def kendall_tau_b(t: Table) -> float | None:
    """Kendall's tau-b: (concordant - discordant) pairs over the geometric mean of the pairs not
    tied on each side. Counted cell by cell on the table, each unordered pair once."""
    n = _n(t)
    if n < 2:
        return None
    cells = sorted(t.items())
    concordant = discordant = 0
    for i, ((x1, y1), c1) in enumerate(cells):
        for (x2, y2), c2 in cells[i + 1 :]:
            if x2 == x1:  # sorted by x: a later cell has x2 >= x1
                continue
            if y2 > y1:
                concordant += c1 * c2
            elif y2 < y1:
                discordant += c1 * c2
    pairs = n * (n - 1) / 2
    tied_x = sum(c * (c - 1) / 2 for c in _marginal(t, 0).values())
    tied_y = sum(c * (c - 1) / 2 for c in _marginal(t, 1).values())
    denominator = math.sqrt((pairs - tied_x) * (pairs - tied_y))
    return (concordant - discordant) / denominator if denominator > 0 else None


FUNCTIONS: dict[str, Callable[[Table], float | None]] = {
    "exact_agreement": exact_agreement,
    "kappa_quadratic": kappa_quadratic,
    "spearman": spearman,
    "kendall_tau_b": kendall_tau_b,
    "mean_abs_diff": mean_abs_diff,
}


def percentile_interval(values: Sequence[float], level: float = 0.95) -> list[float] | None:
    """The percentile interval of bootstrap replicates, by the rule of ``aggregate.bootstrap_ci``."""
    if len(values) < 2:
        return None
    v = sorted(values)
    k = len(v)
    return [
        v[int(math.floor((1 - level) / 2 * (k - 1)))],
        v[int(math.ceil((1 + level) / 2 * (k - 1)))],
    ]


def bootstrap_tables(
    pairs: Sequence[tuple[float, float]], resamples: int, seed: int
) -> list[Counter[tuple[float, float]]]:
    """``resamples`` tables of items drawn with replacement (``random.Random(seed)``), so the same
    seed gives the same intervals on every machine."""
    if len(pairs) < 2 or resamples <= 0:
        return []
    rng = random.Random(seed)
    return [table_of(rng.choices(pairs, k=len(pairs))) for _ in range(resamples)]


def statistics(
    pairs: Sequence[tuple[float, float]], *, resamples: int = 1000, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """Each statistic as ``{value, ci}``; a statistic undefined on a resample (a constant side)
    leaves that resample out of its interval."""
    t = table_of(pairs)
    boot = bootstrap_tables(pairs, resamples, seed)
    out: dict[str, dict[str, Any]] = {}
    for name, fn in FUNCTIONS.items():
        reps = [v for b in boot if (v := fn(b)) is not None]
        out[name] = {"value": fn(t), "ci": percentile_interval(reps)}
    return out


# --------------------------------------------------------------------------- judgments files


def read_judgments(path: Path, scorer: str | None = None) -> dict[str, Judgment]:
    """The judgments of one file by sample id (a later record of a sample replaces an earlier
    one, as a resumed run appends its retried verdict). ``scorer`` picks one in a file that
    holds several (a file of one scorer is read whole, so a human file and a judge's file may
    name theirs differently); a record that is not a judgment is a ``DataError`` naming file,
    line and field."""
    from ..runs import RunFolderError, read_jsonl

    if path.is_dir():
        path = path / "judgments.jsonl"
    if not path.is_file():
        raise DataError(f"{path}: no such judgments file (a judgments.jsonl or a run folder)")
    records: list[Judgment] = []
    try:
        for i, rec in enumerate(read_jsonl(path), 1):
            try:
                records.append(Judgment.from_dict(rec, where=f"line {i}"))
            except SchemaError as e:
                raise DataError(
                    f"{path}: {e}; each line must be a judgment as ibench writes it"
                ) from None
    except RunFolderError as e:
        raise DataError(str(e)) from None
    names = sorted({j.scorer for j in records})
    if len(names) > 1 and scorer not in names:
        raise DataError(
            f"{path}: holds judgments of several scorers ({', '.join(names)}); pass --scorer "
            "with one of them"
        )
    if len(names) <= 1:
        scorer = None  # one scorer in the file: its judgments, whatever it is named
    if any(j.metadata.get("swapped") for j in records):
        raise DataError(
            f"{path}: a --swap run (two verdicts per item); measure it with "
            "`ibench judge position-bias`"
        )
    return {j.sample_id: j for j in records if scorer is None or j.scorer == scorer}


def judgments_agreement(
    reference: Mapping[str, Judgment],
    candidate: Mapping[str, Judgment],
    *,
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Agreement on the items both files scored ``ok``, with every other item counted by why."""
    pairs: list[tuple[float, float]] = []
    counts = Counter[str]()
    for sid in sorted(set(reference) | set(candidate)):
        r, c = reference.get(sid), candidate.get(sid)
        if r is None or c is None:
            counts["only_reference" if c is None else "only_candidate"] += 1
            continue
        r_ok = r.status == "ok" and r.overall is not None
        c_ok = c.status == "ok" and c.overall is not None
        if r_ok and c_ok:
            pairs.append((r.overall, c.overall))  # type: ignore[arg-type]
        elif not r_ok and not c_ok:
            counts["not_ok_both"] += 1
        else:
            counts["not_ok_reference" if not r_ok else "not_ok_candidate"] += 1
    keys = (
        "only_reference",
        "only_candidate",
        "not_ok_reference",
        "not_ok_candidate",
        "not_ok_both",
    )
    return {
        "n": len(pairs),
        "excluded": {k: counts.get(k, 0) for k in keys},
        "statistics": statistics(pairs, resamples=resamples, seed=seed),
        "bootstrap": {"resamples": resamples, "seed": seed, "level": 0.95},
        "table": [[x, y, c] for (x, y), c in sorted(table_of(pairs).items())],
    }
