"""``ibench leaderboard``: show, submit, build (the boards themselves live in
``interleave_bench.leaderboard``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.table import Table
from rich.text import Text

leaderboard_app = typer.Typer(
    help="Leaderboards: published results with provenance, validated submissions, a static site.",
    no_args_is_help=True,
)

DirOpt = Annotated[
    Path | None,
    typer.Option(
        "--dir",
        help="Leaderboards folder (default: $IBENCH_LEADERBOARDS, ./leaderboards, the published boards).",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


def _cells(value: object, digits: int = 2) -> str:
    from ..report.svg import fmt_num

    return fmt_num(value, digits)


@leaderboard_app.command("show")
def show_cmd(
    bench: Annotated[str, typer.Argument(help="mmie, interleavedbench or opening.")],
    sort: Annotated[
        str | None, typer.Option("--sort", help="Column key or label (default: overall).")
    ] = None,
    lb_dir: DirOpt = None,
    as_json: JsonOpt = False,
    as_csv: Annotated[
        bool, typer.Option("--csv", help="Print the rows as CSV (the pandas frame).")
    ] = False,
) -> None:
    """Print a leaderboard: per-category columns, intervals, the comparable flag and sources."""
    from ..leaderboard.schema import BoardError
    from ..leaderboard.show import SortError, flat, row_status, sections
    from ..leaderboard.store import leaderboards_dir, load_board
    from .errors import fail
    from .output import err, out, print_json

    try:
        board = load_board(bench.partition(":")[0], leaderboards_dir(lb_dir))
        groups = sections(board, sort)
    except BoardError as e:
        raise fail(str(e), 2) from None
    except SortError as e:
        raise fail(str(e), 2) from None
    for p in board.problems:
        err.print(f"skipped: {p}", markup=False, highlight=False)
    if as_csv:
        from ..frames import leaderboard_frame

        print(leaderboard_frame(bench, lb_dir, sort).to_csv(index=False), end="")
        return
    if as_json:
        print_json([flat(board, r, g.rank_of(r)) for g in groups for r in g.rows])
        return
    wide = out.width >= 140  # narrower consoles get the compact table (all of it in --json)
    for g in groups:
        rows = g.rows
        cis = [(r.get("ci") or {}).get("overall") for r in rows]
        shown = {  # optional columns are left out where every row is empty
            "ci": any(cis),
            "n": any(r.get("n") is not None for r in rows),
            "coverage": any(r.get("coverage") is not None for r in rows),
        }
        # an 80-column console holds a few score columns; more go to --json and wide consoles
        columns = board.columns if wide or len(board.columns) <= 4 else []
        labels = [c.label if wide else _short(c.label) for c in columns]
        table = Table(
            title=Text(f"{board.title}: {g.title(board)}  (scale {rows[0]['scale']})"),
            box=box.HEAVY_HEAD if wide else box.SIMPLE_HEAD,
        )
        table.add_column("#", justify="right", no_wrap=True)
        table.add_column("model", min_width=12, ratio=1)
        for label in labels:
            table.add_column(Text(label), justify="right", no_wrap=True)
        table.add_column(Text(board.overall_label), justify="right", no_wrap=True)
        if shown["ci"]:
            table.add_column("95% CI", no_wrap=True)
        if shown["n"]:
            table.add_column("n", justify="right", no_wrap=True)
        table.add_column("comp." if not wide else "comparable", no_wrap=True)
        table.add_column("status", no_wrap=True)
        if shown["coverage"]:
            table.add_column("cov." if not wide else "coverage", justify="right", no_wrap=True)
        if wide:
            table.add_column("date", no_wrap=True)
            table.add_column("source", max_width=40)  # wraps; no_wrap squeezes the others
        for r, ci in zip(rows, cis, strict=True):
            model = r["model"] + (f" [subset: {r['subset']}]" if r.get("subset") else "")
            rank = g.rank_of(r)
            status = row_status(r)
            cells = [
                Text("–" if rank is None else str(rank)),
                Text(model),
                *(Text(_cells(r["scores"].get(c.key))) for c in columns),
                Text(_cells(r.get("overall"))),
            ]
            if shown["ci"]:
                cells.append(Text(f"[{_cells(ci[0])}, {_cells(ci[1])}]" if ci else "–"))
            if shown["n"]:
                cells.append(Text(_cells(r.get("n"), 0)))
            cells += [
                Text(
                    "yes" if r["comparable"] else "no", style="green" if r["comparable"] else "red"
                ),
                Text(status, style="green" if status == "verified" else ""),
            ]
            if shown["coverage"]:
                cells.append(
                    Text("–" if r.get("coverage") is None else f"{_cells(r['coverage'])}%")
                )
            if wide:
                cells += [Text(r["date"]), Text(r["source"])]
            table.add_row(*cells)
        out.print(table)
        if not wide:
            legend = "; ".join(
                f"{short} = {c.label}"
                for short, c in zip(labels, columns, strict=True)
                if short != c.label
            )
            hidden = "per-category scores, " if len(columns) < len(board.columns) else ""
            note = f"{hidden}dates and sources: --json, or a console of 140 columns"
            out.print(Text(f"{legend}. {note}" if legend else note, style="dim"))


def _short(label: str) -> str:
    """A column label short enough for an 80-column table: initials of a long label."""
    if len(label) <= 8:
        return label
    return "".join(w[0] for w in label.replace("-", " ").split() if w[0].isalnum()).upper()


@leaderboard_app.command("submit")
def submit_cmd(
    run: Annotated[Path, typer.Argument(help="A run folder, or a .tar.gz/.tgz/.tar/.zip of one.")],
    bench: Annotated[str, typer.Option("--bench", help="mmie, interleavedbench or opening.")],
    name: Annotated[
        str | None, typer.Option("--name", help="Model name shown in the table.")
    ] = None,
    subset: Annotated[
        str | None,
        typer.Option("--subset", help="Label an explicit subset (e.g. a NAME:sample run)."),
    ] = None,
    data: Annotated[
        Path | None, typer.Option("--data", help="Local copy of the benchmark for coverage.")
    ] = None,
    lb_dir: DirOpt = None,
    report: Annotated[
        bool, typer.Option("--report/--no-report", help="Render a sample report for the row.")
    ] = True,
    audit: Annotated[
        int,
        typer.Option(
            "--audit",
            min=0,
            help="Re-judge N seeded-random judged items with the run's judge; the row is "
            "'verified' only when all agree (0: no audit, the row is 'self-reported').",
        ),
    ] = 0,
    audit_seed: Annotated[
        int | None,
        typer.Option("--audit-seed", min=0, help="Seed of the draw (default: random; recorded)."),
    ] = None,
    audit_tolerance: Annotated[
        float,
        typer.Option(
            "--audit-tolerance",
            min=0.0,
            help="Largest allowed difference per score (default 0: exact, as parsed integer "
            "scores at temperature 0 are; raise it only for a sampling judge).",
        ),
    ] = 0.0,
    judge_model: Annotated[
        str | None, typer.Option("--judge-model", help="Audit: the judge model (the run's).")
    ] = None,
    judge_base_url: Annotated[
        str | None, typer.Option("--judge-base-url", help="Audit: OpenAI-compatible base URL.")
    ] = None,
    judge_key_env: Annotated[
        str, typer.Option("--judge-key-env", help="Audit: variable holding the API key.")
    ] = "OPENAI_API_KEY",
    judge_transport: Annotated[
        str, typer.Option("--judge-transport", help="Audit: sdk or aiohttp.")
    ] = "sdk",
    protocol_file: Annotated[
        Path | None,
        typer.Option("--protocol-file", help="Audit: the prompt file the run was judged with."),
    ] = None,
    allow_unofficial: Annotated[
        bool, typer.Option("--allow-unofficial", help="Audit: accept unofficial prompts.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Validate a run and, when every check passes, write its row under leaderboards/submissions/.

    With --audit N the submitted judgments are spot-checked by re-judging; exit 1 lists every
    problem (a failed audit names each disagreeing sample with both scores)."""
    from ..leaderboard.audit import AuditRequest
    from ..leaderboard.submit import validate_submission
    from .errors import fail
    from .output import err, out, print_json

    request = None
    if audit:
        if not judge_model:
            raise fail("--audit needs --judge-model (and --judge-base-url for a local server)", 2)
        if judge_transport not in ("sdk", "aiohttp"):
            raise fail("--judge-transport must be sdk or aiohttp", 2)
        request = AuditRequest(
            n=audit,
            judge_model=judge_model,
            judge_base_url=judge_base_url,
            judge_key_env=judge_key_env,
            judge_transport=judge_transport,
            seed=audit_seed,
            tolerance=audit_tolerance,
            protocol_file=protocol_file,
            allow_unofficial=allow_unofficial,
        )
    outcome = validate_submission(
        run,
        bench.partition(":")[0],
        name=name,
        subset=subset,
        data=data,
        leaderboards=lb_dir,
        report=report,
        audit=request,
    )
    if as_json:
        print_json(outcome.to_dict())
    elif outcome.ok:
        row = outcome.row or {}
        a = row.get("audit") or {}
        how = (
            f"verified: {a.get('agreed')} of {a.get('n')} re-judged items agree, seed "
            f"{a.get('seed')}"
            if row.get("status") == "verified"
            else "self-reported: not audited (pass --audit N to verify)"
        )
        out.print(
            f"accepted: {row.get('model')} overall {row.get('overall')} (scale {row.get('scale')}, "
            f"coverage {row.get('coverage')}%, comparable: {row.get('comparable')}, {how})",
            markup=False,
            highlight=False,
        )
        for p in outcome.written:
            out.print(f"wrote {p}", markup=False, highlight=False)
        for n in outcome.notes:
            err.print(n, markup=False, highlight=False)
    else:
        err.print(f"rejected: {len(outcome.problems)} problem(s)", markup=False)
        for p in outcome.problems:
            err.print(f"  - {p}", markup=False, highlight=False, soft_wrap=True)
    if not outcome.ok:
        raise typer.Exit(1)


@leaderboard_app.command("build")
def build_cmd(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the static site.")],
    lb_dir: DirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write a static site: an index and one page per benchmark (sortable tables, charts)."""
    from ..leaderboard.schema import BoardError
    from ..leaderboard.site import build_site
    from ..leaderboard.store import leaderboards_dir
    from .errors import fail
    from .output import err, out, print_json

    try:
        pages, warnings = build_site(leaderboards_dir(lb_dir), out_dir)
    except BoardError as e:
        raise fail(str(e)) from None
    for w in warnings:
        err.print(f"skipped: {w}", markup=False, highlight=False)
    if as_json:
        print_json({"pages": [str(p) for p in pages], "warnings": warnings})
        return
    out.print(f"site: {out_dir / 'index.html'} ({len(pages)} pages)", markup=False)
