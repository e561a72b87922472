"""Rows as ``show`` prints them: flattened for ``--json``, grouped by table, sorted by a column.

Numbers sort high first with missing values last; text columns sort A to Z. Ties keep file order,
so the output is stable across runs.
"""

from __future__ import annotations

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


def flat(board: Board, row: dict[str, Any]) -> dict[str, Any]:
    """One row for JSON: ``model``, every score column at top level, the overall, then
    provenance fields."""
    ci = (row.get("ci") or {}).get("overall")
    out: dict[str, Any] = {"model": row["model"], "table": row["table"]}
    out.update({k: row["scores"].get(k) for k in board.column_keys})
    out.update(
        {
            "overall": row.get("overall"),
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
