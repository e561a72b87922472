"""``ibench runs``: looking at finished run folders (``compare``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from .errors import fail
from .options import JsonOpt
from .output import num, out, print_json

runs_app = typer.Typer(help="Finished run folders.", no_args_is_help=True)


@runs_app.command("compare")
def runs_compare(
    runs: Annotated[
        list[Path],
        typer.Argument(exists=True, file_okay=False, help="Run folders made by eval or score."),
    ],
    as_json: JsonOpt = False,
    html_out: Annotated[
        Path | None,
        typer.Option("--html", dir_okay=False, help="Also write the table as an HTML page here."),
    ] = None,
    as_csv: Annotated[
        bool, typer.Option("--csv", help="Print the rows as CSV (the pandas frame).")
    ] = False,
) -> None:
    """Overall and per-category scores of several runs side by side, with counts and judge."""
    from ..compare import categories, read_rows, to_html, to_json
    from ..runs import RunFolderError

    try:
        rows = read_rows(runs)
    except RunFolderError as e:
        raise fail(str(e)) from None
    if html_out is not None:
        html_out.write_text(to_html(rows), encoding="utf-8")
    if as_csv:
        from ..frames import compare_frame

        print(compare_frame(runs).to_csv(index=False), end="")
        return
    if as_json:
        print_json(to_json(rows))
        return
    table = Table(title="runs compared")
    table.add_column("run")
    table.add_column("protocol")
    table.add_column("overall", justify="right")
    table.add_column("valid/total", justify="right")
    table.add_column("judge")
    table.add_column("comp.")
    for r in rows:
        table.add_row(
            escape(Path(r.run).name),
            escape(r.protocol),
            num(r.overall),
            f"{r.counts.get('valid', '-')}/{r.counts.get('total', '-')}",
            escape(r.judge or "-"),
            "yes" if r.comparable else "no",
        )
    out.print(table)
    cats = categories(rows)
    if cats:  # categories as rows, runs as columns: fits 80 columns for a few runs
        by_cat = Table(title="per category (mean)")
        by_cat.add_column("category")
        for i, _ in enumerate(rows, 1):
            by_cat.add_column(f"#{i}", justify="right")
        for c in cats:
            by_cat.add_row(escape(c), *(num(r.by_category.get(c)) for r in rows))
        out.print(by_cat)
        for i, r in enumerate(rows, 1):
            out.print(f"#{i} {r.run} ({r.protocol})", markup=False, highlight=False)
    if html_out is not None:
        out.print(f"html: {html_out}", markup=False)
