"""``ibench data``: list, inspect, validate and download benchmarks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from .errors import fail
from .options import BenchArg, JsonOpt
from .output import err, out, print_json, progress

data_app = typer.Typer(help="Benchmarks: list, inspect, download, validate.", no_args_is_help=True)


@data_app.command("list")
def data_list(as_json: JsonOpt = False) -> None:
    """List the benchmarks this build can load."""
    from ..registry import benchmarks

    rows = []
    for name in benchmarks.names():
        b = benchmarks.get(name).benchmark()
        rows.append(
            {
                "name": name,
                "title": b.title,
                "hosting": b.hosting,
                "licence": b.licence,
                "size": b.size,
                "sample": f"{name}:sample",
                "hub": None if b.hub is None else b.hub.repo_id,
            }
        )
    if as_json:
        print_json(rows)
        return
    table = Table(title="Benchmarks")
    for col in ("name", "title", "size", "hosting", "licence"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], r["title"], r["size"], r["hosting"], r["licence"])
    out.print(table)


def _load(bench: str, path: Path | None, limit: int | None, as_json: bool):
    """Load for inspect/validate; a fatal data error is printed (as JSON too with --json)."""
    from ..benchmarks import DataError, load_benchmark
    from ..registry import UnknownNameError

    try:
        return load_benchmark(bench, path, limit, download=False)
    except UnknownNameError as e:
        raise fail(str(e), 2) from None
    except DataError as e:
        if as_json:
            print_json(
                {
                    "total": 0,
                    "by_category": {},
                    "missing_images": 0,
                    "error": str(e),
                    "problems": [{"row": None, "field": "<file>", "message": str(e)}],
                }
            )
        raise fail(str(e)) from None


def _check(data, full: bool, quiet: bool) -> None:
    from ..benchmarks.check import check_images

    total = len({s.path for s in data.sites})
    if total == 0:
        return
    with progress(quiet, "checking images") as bar:
        task = bar.add_task("images", total=total)
        data.problems.extend(
            check_images(
                data, full=full, progress=lambda done, _n: bar.update(task, completed=done)
            )
        )


def _report(data, as_json: bool, title: str) -> None:
    summary = data.summary()
    if as_json:
        print_json(summary)
        return
    info = data.info
    out.print(f"[bold]{title}[/]: {info.benchmark}  [dim]{info.source} @ {info.revision}[/]")
    out.print(f"root: {info.root}", highlight=False, markup=False)
    table = Table(show_footer=True)
    table.add_column(data.count_by, footer="total")
    table.add_column("samples", justify="right", footer=str(summary["total"]))
    for name, n in summary["by_category"].items():
        table.add_row(escape(name), str(n))
    out.print(table)
    out.print(
        f"images referenced: {summary['images']}   missing image files: {summary['missing_images']}"
    )
    problems = data.problems
    if problems:
        out.print(f"[bold yellow]{len(problems)} problem(s)[/]")
        for p in problems[:50]:
            out.print(f"  {p}", markup=False, highlight=False)
        if len(problems) > 50:
            out.print(f"  ... and {len(problems) - 50} more (use --json for all)")
    else:
        out.print("[green]no problems found[/]")


@data_app.command("inspect")
def data_inspect(
    bench: BenchArg,
    path: Annotated[
        Path | None,
        typer.Option("--data", "--path", exists=True, help="Local copy of the benchmark."),
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Read at most N samples.")
    ] = None,
    images: Annotated[
        str, typer.Option("--images", help="Image check: full (decode), header, none.")
    ] = "full",
    as_json: JsonOpt = False,
) -> None:
    """Count samples by category, missing images and every problem in the data."""
    if images not in ("full", "header", "none"):
        raise fail("--images must be full, header or none", 2)
    data = _load(bench, path, limit, as_json)
    if images != "none":
        _check(data, images == "full", quiet=as_json)
    _report(data, as_json, "inspect")


@data_app.command("validate")
def data_validate(
    bench: BenchArg,
    path: Annotated[
        Path | None, typer.Option("--data", "--path", exists=True, help="Local copy to validate.")
    ] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Missing image files fail too.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Check a local copy fully (rows and every image); exit 1 when problems are found."""
    if path is None and not bench.endswith(":sample"):
        raise fail("validate needs --path DIR (or NAME:sample)", 2)
    data = _load(bench, path, None, as_json)
    _check(data, True, quiet=as_json)
    _report(data, as_json, "validate")
    if data.problems or (strict and data.missing_images):
        raise typer.Exit(1)


@data_app.command("download")
def data_download(
    bench: BenchArg,
    to: Annotated[
        Path | None, typer.Option("--to", file_okay=False, help="Destination folder.")
    ] = None,
    revision: Annotated[
        str | None, typer.Option("--revision", help="Hub branch, tag or commit.")
    ] = None,
    archive: Annotated[
        Path | None,
        typer.Option(
            "--archive",
            exists=True,
            dir_okay=False,
            help="Unpack a release archive you downloaded by hand.",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Fetch a benchmark from the Hugging Face Hub (pinned to a commit) and unpack its images."""
    from ..benchmarks import DataError, get_benchmark
    from ..benchmarks.base import import_archive
    from ..registry import UnknownNameError

    try:
        b, bundled = get_benchmark(bench)
        if bundled:
            raise DataError(f"{bench} is bundled with interleave-bench; nothing to download")
        problems = []
        if archive is not None:
            dest, problems = import_archive(b, archive, to)
        else:
            with err.status(f"downloading {b.title} ..."):
                dest = b.download(to, revision)
        data = b.load(dest, download=False)
    except UnknownNameError as e:
        raise fail(str(e), 2) from None
    except DataError as e:
        raise fail(str(e)) from None
    data.problems[:0] = problems
    if as_json:
        print_json({"path": str(dest), **data.summary()})
    else:
        out.print(f"{b.title}: {len(data)} samples in {dest}", highlight=False)
        out.print(f"source: {data.info.source} @ {data.info.revision}", highlight=False)
        if data.problems:
            out.print(f"[yellow]{len(data.problems)} problem(s); run `ibench data validate`[/]")


@data_app.command("export")
def data_export(
    bench: BenchArg,
    to: Annotated[
        Path, typer.Option("--to", file_okay=False, help="New folder for `save_to_disk`.")
    ],
    path: Annotated[
        Path | None,
        typer.Option("--data", "--path", exists=True, help="Local copy of the benchmark."),
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Export at most N samples.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Write a benchmark as a Hugging Face `datasets` folder (one row per sample, images inside);
    load it back with `datasets.load_from_disk`."""
    from ..hf import MissingExtra

    if to.exists() and any(to.iterdir()):
        raise fail(f"{to}: folder is not empty; pass a new --to folder", 2)
    data = _load(bench, path, limit, as_json)
    try:
        ds = data.to_hf()
    except MissingExtra as e:
        raise fail(str(e)) from None
    ds.save_to_disk(str(to))
    summary = {"path": str(to), "rows": len(ds), "benchmark": data.info.benchmark}
    if as_json:
        print_json({**summary, "problems": [p.to_dict() for p in data.problems]})
        return
    out.print(f"{data.info.benchmark}: {len(ds)} samples written to {to}", highlight=False)
    if data.problems:
        out.print(f"[yellow]{len(data.problems)} problem(s); run `ibench data validate`[/]")
