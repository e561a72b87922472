"""Side-by-side comparison of run folders (``ibench runs compare``): each folder's
``results.json`` read through ``RunFolder`` in the one results schema, one row per run and
protocol with the overall, per-category means, counts, judge and whether it is comparable.

Why a module of its own: the console table, ``--json`` and the HTML page print the same rows,
so a script and a person never see two different comparisons."""

from __future__ import annotations

import html
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .runs import RunFolder, RunFolderError
from .types import SchemaError


@dataclass(frozen=True)
class Row:
    """One run's result for one protocol."""

    run: str
    benchmark: str
    protocol: str  # the scorer's name (mmie, interleaved_eval, structure, ...)
    protocol_version: str
    judge: str | None
    overall: float | None
    scale: str
    comparable: bool
    counts: dict[str, int]
    by_category: dict[str, float | None] = field(default_factory=dict)


def read_rows(runs: list[Path]) -> list[Row]:
    """The rows of every run, in the order given; a folder without a readable ``results.json``
    is a ``RunFolderError`` naming it (nothing is compared from half the inputs)."""
    rows: list[Row] = []
    for run in runs:
        if not (run / "results.json").is_file():
            raise RunFolderError(f"{run}: no results.json (not a finished eval or score run)")
        try:
            results = RunFolder(run, "compare").read_results()
        except (SchemaError, ValueError) as e:
            raise RunFolderError(f"{run}/results.json: {e}") from None
        for r in results.results:
            rows.append(
                Row(
                    run=str(run),
                    benchmark=r.benchmark,
                    protocol=r.scorer,
                    protocol_version=r.protocol,
                    judge=r.judge,
                    overall=r.overall,
                    scale=r.scale,
                    comparable=r.comparable,
                    counts=dict(r.counts),
                    by_category={k: v.get("mean") for k, v in r.by_category.items()},
                )
            )
    return rows


def categories(rows: list[Row]) -> list[str]:
    """Every category of any row, in first-seen order (a run lacking one shows ``-``)."""
    seen: dict[str, None] = {}
    for r in rows:
        seen.update(dict.fromkeys(r.by_category))
    return list(seen)


def to_json(rows: list[Row]) -> dict[str, Any]:
    return {"runs": [asdict(r) for r in rows], "categories": categories(rows)}


def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def to_html(rows: list[Row]) -> str:
    """A small self-contained page; every value from the folders is escaped."""
    cats = categories(rows)
    head = ["run", "benchmark", "protocol", "judge", "overall", "valid/total", "comparable", *cats]
    e = html.escape
    lines = [
        "<!doctype html><html><head><meta charset='utf-8'><title>ibench runs compare</title>",
        "<style>body{font-family:sans-serif}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}</style></head><body>",
        "<h1>Run comparison</h1><table><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>",
    ]
    for r in rows:
        cells = [
            r.run,
            r.benchmark,
            r.protocol,
            r.judge or "-",
            _fmt(r.overall),
            f"{r.counts.get('valid', '-')}/{r.counts.get('total', '-')}",
            "yes" if r.comparable else "no",
            *(_fmt(r.by_category.get(c)) for c in cats),
        ]
        lines.append("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in cells) + "</tr>")
    lines.append("</table></body></html>")
    return "\n".join(lines) + "\n"
