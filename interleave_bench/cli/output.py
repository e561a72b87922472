"""The CLI's consoles and printers: tables for people on stdout, ``--json`` for scripts, errors
and progress on stderr."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

out = Console()
err = Console(stderr=True)


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, ensure_ascii=False, indent=2) + "\n")


def num(x: Any) -> str:
    """A score for people: 4 significant digits (``66.67``, not ``66.66666666666667``)."""
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def usd(x: float) -> str:
    """A cost for people: ``$0.0052``, not ``0.005249999999999999``."""
    return f"${x:,.4f}" if x < 100 else f"${x:,.2f}"


def judge_line(stats: dict[str, Any]) -> str:
    """One readable line of judge statistics (``JudgeStats.to_dict()``, or a sum of several)."""
    tokens = int(stats.get("prompt_tokens", 0)) + int(stats.get("completion_tokens", 0))
    line = (
        f"judge: {stats.get('calls', 0)} calls, {stats.get('cache_hits', 0)} cache hits, "
        f"{stats.get('errors', 0)} errors, {tokens:,} tokens, cost {usd(stats.get('cost', 0.0))}"
    )
    if stats.get("over_budget"):
        line += f", {stats['over_budget']} over budget"
    return line


def _ci(ci: Any) -> str:
    return "-" if not ci else f"[{num(ci[0])}, {num(ci[1])}]"


def print_result(r: Any) -> None:
    """One Result as a table (per category: mean, n, 95% interval) plus counts and reasons, then
    the per-aspect (InterleavedEval) or per-criterion (OpenING) means when the protocol has
    them: the numbers that say which part of the answer moved the overall."""
    table = Table(title=escape(f"{r.benchmark} / {r.scorer}  (judge: {r.judge or '-'})"))
    for col in ("category", "mean", "n", "95% CI"):
        table.add_column(col, justify="left" if col == "category" else "right")
    for name, entry in r.by_category.items():
        table.add_row(
            escape(name), num(entry.get("mean")), num(entry.get("n")), _ci(entry.get("ci"))
        )
    table.add_row(
        "[bold]overall[/]",
        num(r.overall),
        num(r.counts.get("valid")),
        _ci(r.intervals.get("overall")),
    )
    out.print(table)
    for key, label in (("aspects", "aspect"), ("criteria", "criterion")):
        parts = r.metadata.get(key)
        if isinstance(parts, dict) and parts:
            sub = Table(title=f"{label} means ({r.scale or 'scale -'})")
            sub.add_column(label)
            sub.add_column("mean", justify="right")
            for name, value in parts.items():
                sub.add_row(escape(str(name)), num(value))
            out.print(sub)
    pct = f" ({num(r.overall_percent)}%)" if r.overall_percent is not None else ""
    counts = ", ".join(f"{k} {v}" for k, v in r.counts.items())
    out.print(f"overall {num(r.overall)}{pct}   comparable: {r.comparable}", markup=False)
    out.print(f"counts: {counts}", markup=False)
    if r.invalid_reasons:
        reasons = "; ".join(f"{k}: {v}" for k, v in r.invalid_reasons.items())
        out.print(f"not valid: {reasons}", markup=False)
    official = r.metadata.get("official")  # a protocol's own printout (ISG's 4-decimal table)
    if isinstance(official, dict) and isinstance(official.get("text"), str):
        out.print(official["text"], markup=False, highlight=False)


def judging_status(counts: dict[str, int], j: Any, engine: Any) -> str:
    """Count ``j`` into ``counts`` and return the judging bar's description (cost, cache hits,
    invalid and error judgments so far); shared by ``score`` and ``eval``."""
    if j.status != "ok":
        counts[j.status] += 1
    s = engine.stats if engine is not None else None
    return (
        f"cost ${s.cost:.4f}  cache hits {s.cache_hits}  " if s else ""
    ) + f"invalid {counts['invalid']}  errors {counts['error']}"


def progress(as_json: bool, label: str = "{task.fields[label]}") -> Progress:
    """The transient progress bar of long commands on stderr (count, ETA and a status text),
    off under ``--json``; tasks carry a ``label`` field unless ``label`` is fixed text."""
    return Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.description}"),
        console=err,
        disable=as_json,
        transient=True,
    )
