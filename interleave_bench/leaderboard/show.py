"""Rows as ``show`` prints them: flattened for ``--json``, grouped by table, sorted by a column.

Only rows that may stand beside the published ones are ranked: comparable, on the full
benchmark (no subset, coverage at the board's threshold) and published or verified. Every other
row is listed in its own section after the ranked one, so a 15-sample self-reported run can never
sit at #1. Numbers sort high first with missing values last; text columns sort A to Z. Ties keep
file order, so the output is stable across runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .schema import Board

TEXT_SORTS = ("model", "date", "source", "judge", "protocol")


class SortError(ValueError):
    """``--sort`` names no column of the board."""


def sort_keys(board: Board) -> list[str]:
    return ["overall", *board.column_keys, *TEXT_SORTS, "n"]


def resolve_sort(board: Board, column: str | None) -> str:
    """A column key from a key or a label, case-insensitively (default: overall)."""
    if column is None:
        return "overall"
    c = column.strip().lower()
    labels = {board.overall_label.lower(): "overall"}
    labels.update({col.label.lower(): col.key for col in board.columns})
    if c in labels:
        return labels[c]
    if c in sort_keys(board):
        return c
    raise SortError(f"unknown column {column!r}; choose from {', '.join(sort_keys(board))}")


def row_status(row: dict[str, Any]) -> str:
    """``verified`` or ``self-reported`` for a submission (an older row without a status was
    never audited), else the provenance of a published row."""
    if row["provenance"] == "submission":
        return "verified" if row.get("status") == "verified" else "self-reported"
    return row["provenance"]


OTHER_TITLE = "other rows: not comparable, self-reported or partial (not ranked)"


def unranked_reasons(board: Board, row: dict[str, Any]) -> list[str]:
    """Why ``row`` may not be ranked beside the published rows (empty: it is ranked)."""
    why = []
    if not row["comparable"]:
        why.append("not comparable")
    if row.get("subset"):
        why.append(f"subset {row['subset']}")
    cov = row.get("coverage")
    if cov is not None and float(cov) < board.min_coverage:
        why.append(f"coverage {cov:g}% < {board.min_coverage:g}%")
    status = row_status(row)
    if status not in ("published", "verified"):
        why.append(status)
    return why


def is_ranked(board: Board, row: dict[str, Any]) -> bool:
    return not unranked_reasons(board, row)


def ranks(board: Board, rows: list[dict[str, Any]]) -> dict[int, int]:
    """``{id(row): rank}`` of the ranked rows with an overall, high first; equal overalls share
    a rank (1, 2, 2, 4), whatever column the table is sorted by."""
    scored = [r for r in rows if is_ranked(board, r) and r.get("overall") is not None]
    values = sorted((float(r["overall"]) for r in scored), reverse=True)
    return {id(r): values.index(float(r["overall"])) + 1 for r in scored}


@dataclass
class Section:
    """One block of ``show`` and of a site page: a board table's ranked rows, or its others."""

    table: str
    ranked: bool
    rows: list[dict[str, Any]] = field(default_factory=list)
    rank: dict[int, int] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """A stable id: the table key, ``<table>-other`` for the unranked rows."""
        return self.table if self.ranked else f"{self.table}-other"

    def title(self, board: Board) -> str:
        name = board.tables[self.table]
        return name if self.ranked else f"{name}: {OTHER_TITLE}"

    def rank_of(self, row: dict[str, Any]) -> int | None:
        return self.rank.get(id(row))


def sections(board: Board, sort: str | None = None) -> list[Section]:
    """Per board table, in the board's order: the ranked rows, then the others, each sorted by
    ``sort``; an empty section is left out."""
    out = []
    for table, rows in ordered(board, sort):
        numbers = ranks(board, rows)
        ranked = [r for r in rows if is_ranked(board, r)]
        others = [r for r in rows if not is_ranked(board, r)]
        if ranked:
            out.append(Section(table, True, ranked, numbers))
        if others:
            out.append(Section(table, False, others))
    return out


def flat(board: Board, row: dict[str, Any], rank: int | None = None) -> dict[str, Any]:
    """One row for JSON: ``model``, every score column at top level, the overall, then its rank
    (None: not ranked, with the reasons) and provenance fields."""
    ci = (row.get("ci") or {}).get("overall")
    out: dict[str, Any] = {"model": row["model"], "table": row["table"]}
    out.update({k: row["scores"].get(k) for k in board.column_keys})
    out.update(
        {
            "overall": row.get("overall"),
            "rank": rank,
            "ranked": is_ranked(board, row),
            "not_ranked_because": unranked_reasons(board, row),
            "ci_overall": ci,
            "n": row.get("n"),
            "scale": row["scale"],
            "protocol": row["protocol"],
            "judge": row["judge"],
            "comparable": row["comparable"],
            "status": row_status(row),
            "coverage": row.get("coverage"),
            "audit": row.get("audit"),
            "provenance": row["provenance"],
            "source": row["source"],
            "source_url": row.get("source_url"),
            "date": row["date"],
            "subset": row.get("subset"),
            "note": row.get("note"),
            "report": row.get("report"),
            "extra": row.get("extra") or {},
        }
    )
    return out


def value(row: dict[str, Any], key: str) -> Any:
    if key in ("overall", "n") or key in TEXT_SORTS:
        return row.get(key)
    return row["scores"].get(key)


def ordered(board: Board, sort: str | None = None) -> list[tuple[str, list[dict[str, Any]]]]:
    """(table key, rows) in the board's table order, each sorted by ``sort``."""
    key = resolve_sort(board, sort)
    groups = []
    for table in board.tables:
        rows = [r for r in board.rows if r["table"] == table]
        if key in TEXT_SORTS:
            rows.sort(key=lambda r: str(value(r, key) or "").lower(), reverse=key == "date")
        else:
            present = [r for r in rows if value(r, key) is not None]
            absent = [r for r in rows if value(r, key) is None]
            rows = sorted(present, key=lambda r: -float(value(r, key))) + absent
        if rows:
            groups.append((table, rows))
    return groups
