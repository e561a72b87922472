"""The CLI's consoles and printers: tables for people on stdout, ``--json`` for scripts, errors
and progress on stderr."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

out = Console()
err = Console(stderr=True)


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, ensure_ascii=False, indent=2) + "\n")


def print_result(r: Any) -> None:
    """One Result as a table (per category: mean, n, 95% interval) plus counts and reasons."""
    table = Table(title=escape(f"{r.benchmark} / {r.scorer}  (judge: {r.judge or '-'})"))
    for col in ("category", "mean", "n", "95% CI"):
        table.add_column(col, justify="left" if col == "category" else "right")
    for name, entry in r.by_category.items():
        ci = entry.get("ci")
        table.add_row(
            escape(name),
            str(entry.get("mean")),
            str(entry.get("n")),
            "-" if not ci else f"[{ci[0]}, {ci[1]}]",
        )
    ci = r.intervals.get("overall")
    table.add_row(
        "[bold]overall[/]",
        str(r.overall),
        str(r.counts.get("valid")),
        "-" if not ci else f"[{ci[0]}, {ci[1]}]",
    )
    out.print(table)
    pct = f" ({r.overall_percent}%)" if r.overall_percent is not None else ""
    out.print(
        f"overall {r.overall}{pct}   comparable: {r.comparable}   counts: {r.counts}   "
        f"invalid: {r.invalid_reasons}",
        markup=False,
    )
