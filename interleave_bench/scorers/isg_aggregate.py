"""ISG-Bench's aggregation: the official table exactly as ``calculate_performance.py`` (pinned commit
de504cd) computes it, and our honest variant beside it.

Official semantics, per row of a judged file (``{id, Category, output, result}``), grouped into
8 groups by ``Category`` (rows of any other category are ignored):

- no ``result`` key: block 1, image 0, holistic 1, structure not passed;
- ``result["structure"]`` truthy: a pass; its block value is the mean of the numeric
  ``VQA_judge_Score.Judge`` over the block questions (1 when none, or when they cannot be summed),
  and nothing at all when the block list is empty; not a pass: block 1;
- image: the share of image questions whose ``judge.Judge`` is "yes" (skipped and failed questions
  count in the denominator); 0 when the list is empty or missing;
- holistic: ``overall_score`` of the holistic reply; 1 when the reply or the key is missing, or when
  the output is missing or its first block's content is empty;
- per group: structure = passes / rows, the others are means (0 when nothing was appended), printed
  with 4 decimals.

The pinned aggregator reads ``structure`` (the key ISG-eval.py writes); commits before 4b468bf
read ``structural``. The official table keeps the pinned rule (a row carrying only ``structural``
is not a pass); the honest variant reads either key. Both counts are reported.

Honest variant (not comparable): a level that could not be measured (no result, an evaluation error,
a judge call that failed or gave no usable verdict) is counted as failed, not given a default; a row
with no block or image questions is "not applicable" for that level. Model failures keep their
official value (structure wrong: block 1 and image 0; empty output: holistic 1).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..benchmarks.isg import GROUP_OF, GROUPS
from ..benchmarks.problems import DataError, Problem
from ..benchmarks.readers import iter_jsonl

LEVELS = ("structure", "image", "block", "holistic")
OFFICIAL_LABEL = {"Style Transfer": "Style Transer"}  # the official table's spelling
PINNED_STRUCTURE_KEY = "structure"
LEGACY_STRUCTURE_KEY = "structural"


def _num(x: Any) -> bool:
    return isinstance(x, (int, float))


def _block_official(block: Any) -> float | None:
    """The block value of a structure pass (None: the official script appends nothing)."""
    if not block:
        return None
    try:
        scores = [
            q["VQA_judge_Score"]["Judge"]
            for q in block
            if "VQA_judge_Score" in q and "Judge" in q["VQA_judge_Score"]
        ]
        return float(sum(scores) / len(scores)) if scores else 1.0
    except (TypeError, KeyError, AttributeError):  # the official try/except: block 1
        return 1.0


def _is_yes(judge: Any) -> bool:
    if not judge or not isinstance(judge, Mapping) or "Judge" not in judge:
        return False
    verdict = judge["Judge"]
    return isinstance(verdict, str) and verdict.lower() == "yes"


def _image_official(image: Any) -> float:
    if not image or not isinstance(image, list):
        return 0.0
    yes = sum(1 for q in image if isinstance(q, Mapping) and _is_yes(q.get("judge")))
    return yes / len(image)


def _output_empty(row: Mapping[str, Any]) -> bool:
    out = row.get("output")
    if not out:
        return True
    first = out[0]
    return isinstance(first, Mapping) and first.get("content") == ""


def _holistic_official(row: Mapping[str, Any], holistic: Any, problems: list[Problem]) -> float:
    if not holistic or not isinstance(holistic, Mapping) or "overall_score" not in holistic:
        return 1.0
    if _output_empty(row):
        return 1.0
    score = holistic["overall_score"]
    if not _num(score):
        problems.append(
            Problem(
                row.get("id"),
                "result.holistic.overall_score",
                f"{score!r} is not a number (the official script stops here); counted as 1",
            )
        )
        return 1.0
    return float(score)


def official_row(row: Mapping[str, Any], problems: list[Problem]) -> dict[str, Any]:
    """One row's contribution to the official table (``block`` None: nothing appended)."""
    if "result" not in row:
        return {"structure": False, "block": 1.0, "image": 0.0, "holistic": 1.0}
    result = row["result"] if isinstance(row["result"], Mapping) else {}
    passed = bool(result.get(PINNED_STRUCTURE_KEY))
    block = _block_official(result.get("block")) if passed else 1.0
    return {
        "structure": passed,
        "block": block,
        "image": _image_official(result.get("image")),
        "holistic": _holistic_official(row, result.get("holistic"), problems),
    }


def honest_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """One row's honest values: a number, ``("failed", reason)`` or ``"n/a"`` per level."""
    result = row.get("result")
    why = None
    if "result" not in row:
        why = "no result"
    elif not isinstance(result, Mapping):
        why = "result is not an object"
    elif "error" in result:
        why = "evaluation error"
    key = None
    if why is None:
        key = next((k for k in (PINNED_STRUCTURE_KEY, LEGACY_STRUCTURE_KEY) if k in result), None)
        if key is None:
            why = "no structure verdict"
    if why is not None:
        return {level: ("failed", why) for level in LEVELS}
    assert isinstance(result, Mapping) and key is not None
    passed = bool(result[key])
    out: dict[str, Any] = {"structure": 1.0 if passed else 0.0}
    if not passed:
        out["block"], out["image"] = 1.0, 0.0
    else:
        asked = [q for q in result.get("block") or [] if isinstance(q, Mapping)]
        asked = [q for q in asked if "VQA_judge_Score" in q]
        verdicts = [
            q["VQA_judge_Score"].get("Judge") if isinstance(q["VQA_judge_Score"], Mapping) else None
            for q in asked
        ]
        if not asked:
            out["block"] = "n/a"
        elif all(_num(v) and not isinstance(v, bool) for v in verdicts):
            out["block"] = float(sum(verdicts) / len(verdicts))
        else:
            out["block"] = ("failed", "block judge gave no score")
        image = result.get("image")
        if not image or not isinstance(image, list):
            out["image"] = "n/a"
        elif any(
            "judge" in q and not _verdict_ok(q["judge"]) for q in image if isinstance(q, Mapping)
        ):
            out["image"] = ("failed", "image judge gave no yes/no")
        else:
            out["image"] = _image_official(image)
    holistic = result.get("holistic")
    if _output_empty(row):
        out["holistic"] = 1.0
    elif isinstance(holistic, Mapping) and _num(holistic.get("overall_score")):
        out["holistic"] = float(holistic["overall_score"])
    else:
        out["holistic"] = ("failed", "holistic judge gave no overall_score")
    return out


def _verdict_ok(judge: Any) -> bool:
    return isinstance(judge, Mapping) and isinstance(judge.get("Judge"), str)


def _group(row: Mapping[str, Any]) -> str | None:
    category = row.get("Category")
    return GROUP_OF.get(category) if isinstance(category, str) else None


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def official_table(rows: Iterable[Mapping[str, Any]]) -> tuple[dict[str, Any], list[Problem]]:
    """``{group: {structure, image, block, holistic, total}}`` (unrounded) and the problems met."""
    problems: list[Problem] = []
    acc = {g: {"pass": 0, "block": [], "image": [], "holistic": [], "total": 0} for g in GROUPS}
    for row in rows:
        group = _group(row)
        if group is None:
            continue
        a = acc[group]
        a["total"] += 1
        v = official_row(row, problems)
        a["pass"] += v["structure"]
        if v["block"] is not None:
            a["block"].append(v["block"])
        a["image"].append(v["image"])
        a["holistic"].append(v["holistic"])
    table = {
        g: {
            "structure": a["pass"] / a["total"] if a["total"] else 0.0,
            "image": _mean(a["image"]),
            "block": _mean(a["block"]),
            "holistic": _mean(a["holistic"]),
            "total": a["total"],
        }
        for g, a in acc.items()
    }
    return table, problems


def official_text(table: Mapping[str, Mapping[str, Any]]) -> str:
    """The table as the official script prints it (4 decimals, its header and group spellings)."""
    lines = ["Category     structure     image     block     holistic", "-" * 60]
    for g, t in table.items():
        name = OFFICIAL_LABEL.get(g, g).replace(" ", "_")
        lines.append(
            f"{name:<13} {t['structure']:.4f}     {t['image']:.4f}     "
            f"{t['block']:.4f}     {t['holistic']:.4f}"
        )
    return "\n".join(lines)


def honest_table(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Per group and level: mean over measured rows, with n, failed and not-applicable counts."""
    acc: dict[str, dict[str, dict[str, Any]]] = {
        g: {lv: {"values": [], "failed": 0, "not_applicable": 0} for lv in LEVELS} for g in GROUPS
    }
    reasons: Counter[str] = Counter()
    for row in rows:
        group = _group(row)
        if group is None:
            continue
        for level, v in honest_row(row).items():
            cell = acc[group][level]
            if v == "n/a":
                cell["not_applicable"] += 1
            elif isinstance(v, tuple):
                cell["failed"] += 1
                reasons[f"{level}: {v[1]}"] += 1
            else:
                cell["values"].append(v)
    groups = {
        g: {
            lv: {
                "mean": None if not c["values"] else round(_mean(c["values"]), 4),
                "n": len(c["values"]),
                "failed": c["failed"],
                "not_applicable": c["not_applicable"],
            }
            for lv, c in levels.items()
        }
        for g, levels in acc.items()
    }
    return {"comparable": False, "groups": groups, "failure_reasons": dict(sorted(reasons.items()))}


def aggregate_rows(rows: list[dict[str, Any]]) -> tuple[dict[str, Any], list[Problem]]:
    """The official table (4 decimals and its printed text) and the honest variant of ``rows``."""
    table, problems = official_table(rows)
    keys = Counter(
        k
        for r in rows
        if isinstance(r.get("result"), Mapping)
        for k in (PINNED_STRUCTURE_KEY, LEGACY_STRUCTURE_KEY)
        if k in r["result"]
    )
    value = {
        "format": "isg",
        "official": {
            "comparable": True,
            "groups": {
                g: {k: (round(v, 4) if k != "total" else v) for k, v in t.items()}
                for g, t in table.items()
            },
            "text": official_text(table),
        },
        "honest": honest_table(rows),
        "counts": {
            "rows": len(rows),
            "grouped": sum(t["total"] for t in table.values()),
            "no_result": sum("result" not in r for r in rows),
            "structure_keys": {
                PINNED_STRUCTURE_KEY: keys.get(PINNED_STRUCTURE_KEY, 0),
                LEGACY_STRUCTURE_KEY: keys.get(LEGACY_STRUCTURE_KEY, 0),
            },
        },
    }
    if keys.get(LEGACY_STRUCTURE_KEY):
        problems.append(
            Problem(
                None,
                "result.structural",
                f"{keys[LEGACY_STRUCTURE_KEY]} rows carry 'structural', which the pinned "
                "aggregator does not read (only 'structure'): they are not passes in the official "
                "table; the honest variant reads them",
            )
        )
    return value, problems


def _read_rows(path: Path, problems: list[Problem]) -> list[dict[str, Any]]:
    rows = []
    for index, raw, problem in iter_jsonl(path):
        if problem is not None:
            problems.append(problem)
        elif not isinstance(raw, dict):
            problems.append(
                Problem(index, "<row>", f"expected an object, got {type(raw).__name__}")
            )
        elif "id" in raw and not isinstance(raw["id"], (str, int)):
            problems.append(
                Problem(index, "id", f"expected a string, got {type(raw['id']).__name__}")
            )
        elif raw.get("output") is not None and not isinstance(raw["output"], list):
            problems.append(
                Problem(
                    raw.get("id", index),
                    "output",
                    f"expected a list of blocks, got {type(raw['output']).__name__}",
                )
            )
        else:
            rows.append(raw)
    return rows


def apply_gt_categories(
    rows: list[dict[str, Any]], gt_rows: list[dict[str, Any]], problems: list[Problem]
) -> None:
    """As the official script: each row takes the Category of the first GT row with its id."""
    first: dict[Any, str] = {}
    for g in gt_rows:
        if "id" in g and isinstance(g.get("Category"), str):
            first.setdefault(g["id"], g["Category"])
    for i, r in enumerate(rows):
        if r.get("id") in first:
            r["Category"] = first[r["id"]]
        elif "Category" not in r:
            problems.append(
                Problem(r.get("id", i), "Category", "missing, and no GT row has its id")
            )


def aggregate_isg(path: Path, gt: Path | None = None) -> tuple[dict[str, Any], Any]:
    """``ibench aggregate FILE --format isg [--gt ISG-Bench.jsonl]``: recompute the official table
    from an ISG-eval judged-output file, with the honest variant and every problem met."""
    from ..importers import Imported

    problems: list[Problem] = []
    rows = _read_rows(Path(path), problems)
    if not rows:
        first = f"; first problem: {problems[0]}" if problems else ""
        raise DataError(f"{path}: no readable rows (one JSON object per line expected){first}")
    if gt is not None:
        apply_gt_categories(rows, _read_rows(Path(gt), problems), problems)
    value, more = aggregate_rows(rows)
    value["source_file"] = Path(path).name
    return value, Imported([], problems + more, {"gt": None if gt is None else Path(gt).name})
