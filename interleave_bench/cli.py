"""The ``ibench`` command line (typer + rich). Every command a script might read has ``--json``."""

from __future__ import annotations

import functools
import inspect
import json
import math
import os
import re
import sys
import typing
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from typer.core import TyperGroup

from . import __version__

EXIT_CODES = (
    "Exit codes: 0 success; 1 bad data, an unusable input or judge, or nothing usable (a one-line "
    "'error: ...' names the file); 2 usage: a bad option value, an unknown name, a missing or "
    "wrong-kind path; 130 interrupted (rerun to resume). Set IBENCH_DEBUG=1 or pass --debug for "
    "the traceback of an unexpected error."
)

# the project's own errors for a user's mistake: printed as their message alone
_USER_ERRORS = {
    "DataError",
    "ProtocolError",
    "ScoreError",
    "RunFolderError",
    "BoardError",
    "SortError",
    "ModelError",
    "WarmupDataError",
    "JudgeUnavailable",
    "GenerationFailed",
    "ImageError",
    "ImageGenerationError",
    "SchemaError",
}
_debug = False  # set by --debug for the command being run


def _debugging() -> bool:
    return _debug or os.environ.get("IBENCH_DEBUG", "").strip().lower() in ("1", "true", "yes")


def describe_error(e: BaseException) -> tuple[str, int, bool]:
    """(one-line message, exit code, known): a known user error reads as its message, naming the
    file; anything else as ``Type: message``, which hints at a bug worth a traceback."""
    mro = [c.__name__ for c in type(e).__mro__ if c.__module__.startswith("interleave_bench")]
    if "UnknownNameError" in mro:  # a KeyError: str() would quote it
        message, code, known = str(e.args[0] if e.args else e), 2, True
    elif set(mro) & _USER_ERRORS:
        message, code, known = str(e), 1, True
    elif isinstance(e, json.JSONDecodeError):
        message, code, known = f"invalid JSON: {e}", 1, True
    elif isinstance(e, OSError) and e.filename is not None:
        where = str(e.filename) + (f" -> {e.filename2}" if e.filename2 is not None else "")
        message, code, known = f"{where}: {e.strerror or e}", 1, True
    else:
        message, code, known = f"{type(e).__name__}: {e}", 1, False
    return message, code, known


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Our own warnings (a torn record dropped, ...) read as one ``warning:`` line; other
    libraries' warnings keep Python's form, which says where they come from."""
    if category.__module__.startswith("interleave_bench"):
        err.print(f"warning: {message}", markup=False, highlight=False, soft_wrap=True)
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


_default_showwarning = warnings.showwarning


class _Guarded(TyperGroup):
    """The top-level command group. Whatever a command lets escape becomes one ``error:`` line
    on stderr and exit 1 (2 for an unknown name), never a traceback, unless debugging is on;
    typer's own usage errors keep their exit 2."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        global _debug
        _debug = False
        warnings.showwarning = _show_warning
        try:
            return super().main(*args, **kwargs)
        except Exception as e:
            if _debugging():
                raise
            message, code, known = describe_error(e)
            print_error(message)
            if not known:
                err.print(
                    "(run with --debug or IBENCH_DEBUG=1 for the traceback)",
                    markup=False,
                    highlight=False,
                )
            sys.exit(code)


app = typer.Typer(
    cls=_Guarded,
    help="Evaluate and train models that answer with interleaved text and images.",
    epilog=EXIT_CODES,
    no_args_is_help=True,
    add_completion=False,
)
data_app = typer.Typer(help="Benchmarks: list, inspect, download, validate.", no_args_is_help=True)
app.add_typer(data_app, name="data")

out = Console()
err = Console(stderr=True)


def number(
    low: float | None = None, *, above: bool = False, high: float | None = None
) -> Callable[[str], float]:
    """A typer ``parser`` for a finite float in a range (``above``: strictly greater than
    ``low``); typer's ``min=`` lets ``nan`` through and cannot exclude its bound."""

    def parse(value: str) -> float:
        try:
            x = float(value)
        except ValueError:
            raise typer.BadParameter(f"{value!r} is not a number") from None
        if not math.isfinite(x):
            raise typer.BadParameter(f"{value} is not a finite number")
        if low is not None and (x <= low if above else x < low):
            raise typer.BadParameter(f"{value} must be {'>' if above else '>='} {low:g}")
        if high is not None and x > high:
            raise typer.BadParameter(f"{value} must be <= {high:g}")
        return x

    return parse


BenchArg = Annotated[
    str, typer.Argument(help="Benchmark name, or NAME:sample for the bundled mini set.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")]

# options shared by `score` and `eval`
ProtocolFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--protocol-file", exists=True, dir_okay=False, help="Official prompt file you supply."
    ),
]
AllowUnofficialOpt = Annotated[
    bool,
    typer.Option(
        "--allow-unofficial",
        help="Use prompts that fail the SHA-256 check (results marked not comparable).",
    ),
]
# The judge options of `eval` and `score`, one per ``JudgeSpec`` field (a field without an option,
# or an option without a field, fails at import): ``judge_options`` adds them all to a command.
JudgeBaseUrlOpt = Annotated[
    str | None, typer.Option("--judge-base-url", help="OpenAI-compatible endpoint.")
]
JudgeModelOpt = Annotated[str | None, typer.Option("--judge-model")]
JudgeKeyEnvOpt = Annotated[
    str, typer.Option("--judge-key-env", help="Environment variable holding the API key.")
]
JudgeTransportOpt = Annotated[
    str,
    typer.Option(
        "--judge-transport",
        help="sdk (openai.AsyncOpenAI) or aiohttp (lean POST, for fast local servers).",
    ),
]
ConcurrencyOpt = Annotated[int, typer.Option("--concurrency", min=1, help="Judge calls in flight.")]
MaxCostOpt = Annotated[
    float | None,
    typer.Option(
        "--max-cost",
        parser=number(0.0),
        help="USD budget (>= 0): no judge request is sent that could take the cost past it; the "
        "rest are errors that a rerun with a larger budget completes.",
    ),
]
RpmOpt = Annotated[
    float | None,
    typer.Option("--rpm", parser=number(0.0, above=True), help="Requests-per-minute limit (> 0)."),
]
TpmOpt = Annotated[
    float | None,
    typer.Option("--tpm", parser=number(0.0, above=True), help="Tokens-per-minute limit (> 0)."),
]
MaxRetriesOpt = Annotated[
    int, typer.Option("--max-retries", min=0, help="Retries of a failed judge request.")
]
DeadlineOpt = Annotated[
    float | None,
    typer.Option(
        "--deadline", parser=number(0.0, above=True), help="Seconds for all judge calls (> 0)."
    ),
]
MaxRetryWaitOpt = Annotated[
    float,
    typer.Option(
        "--max-retry-wait",
        parser=number(0.0),
        help="Longest wait in seconds between judge attempts, whatever Retry-After asks (>= 0).",
    ),
]
JudgeTimeoutOpt = Annotated[
    float,
    typer.Option(
        "--judge-timeout",
        parser=number(0.0, above=True),
        help="Seconds one judge request may take before it is retried (> 0).",
    ),
]
PriceTableOpt = Annotated[
    Path | None,
    typer.Option(
        "--price-table",
        exists=True,
        dir_okay=False,
        help='JSON {"model": [usd_in_per_1M, usd_out_per_1M]}.',
    ),
]
JUDGE_OPTIONS: dict[str, tuple[Any, Any]] = {
    "judge_base_url": (JudgeBaseUrlOpt, None),
    "judge_model": (JudgeModelOpt, None),
    "judge_key_env": (JudgeKeyEnvOpt, "OPENAI_API_KEY"),
    "judge_transport": (JudgeTransportOpt, "sdk"),
    "judge_local": (
        Annotated[
            Path | None,
            typer.Option("--judge-local", help="Run a local VLM judge from this path instead."),
        ],
        None,
    ),
    "trust_remote_code": (Annotated[bool, typer.Option("--trust-remote-code")], False),
    "concurrency": (ConcurrencyOpt, 16),
    "requests_per_minute": (RpmOpt, None),
    "tokens_per_minute": (TpmOpt, None),
    "max_retries": (MaxRetriesOpt, 6),
    "deadline": (DeadlineOpt, None),
    "max_retry_wait": (MaxRetryWaitOpt, 60.0),
    "judge_timeout": (JudgeTimeoutOpt, 120.0),
    "price_table": (PriceTableOpt, None),
    "max_cost": (MaxCostOpt, None),
    "preflight": (
        Annotated[
            bool,
            typer.Option("--preflight/--no-preflight", help="Probe the judge once before work."),
        ],
        True,
    ),
}


def _check_judge_table() -> None:
    from .config import JudgeSpec

    fields = set(JudgeSpec.model_fields)
    if set(JUDGE_OPTIONS) != fields:
        raise RuntimeError(f"JUDGE_OPTIONS and JudgeSpec differ: {set(JUDGE_OPTIONS) ^ fields}")
    for name, (_, default) in JUDGE_OPTIONS.items():
        if JudgeSpec.model_fields[name].default != default:
            raise RuntimeError(f"JUDGE_OPTIONS[{name!r}] default differs from JudgeSpec's")


_check_judge_table()


def judge_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Give a command every judge option (from ``JUDGE_OPTIONS``) and pass them to it as one
    validated ``judge: JudgeSpec``; the checks typer cannot do (transport, price table, a
    missing ``--judge-local`` folder unless ``--estimate``) exit 2 or 1 here, for both commands."""
    hints = typing.get_type_hints(fn, include_extras=True)
    sig = inspect.signature(fn)
    kept = [
        p.replace(annotation=hints.get(p.name, p.annotation))
        for p in sig.parameters.values()
        if p.name != "judge"
    ]
    added = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=ann, default=default)
        for name, (ann, default) in JUDGE_OPTIONS.items()
    ]
    kept = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in kept]

    @functools.wraps(fn)
    def command(**kwargs: Any) -> Any:
        from .config import JudgeSpec

        values = {k: kwargs.pop(k) for k in JUDGE_OPTIONS}
        if values["judge_transport"] not in ("sdk", "aiohttp"):
            raise fail("--judge-transport must be sdk or aiohttp", 2)
        check_price_table(values["price_table"])
        local = values["judge_local"]
        if local is not None and not kwargs.get("estimate") and not local.exists():
            raise fail(f"--judge-local {local}: no such model folder", 2)
        return fn(**kwargs, judge=JudgeSpec(**values))

    del command.__wrapped__  # typer reads the signature below, not the function's own
    command.__signature__ = sig.replace(parameters=kept + added)  # type: ignore[attr-defined]
    command.__annotations__ = {
        **{p.name: p.annotation for p in kept + added},
        "return": hints.get("return"),
    }
    return command


DataOpt = Annotated[
    Path | None, typer.Option("--data", exists=True, help="Local copy of the benchmark.")
]


def print_error(message: str) -> None:
    """``error: <message>`` on one line of stderr (a quoted YAML or JSON error's line breaks too),
    so a script can show the last line of stderr and a person sees it whole."""
    one_line = re.sub(r"\s*\n\s*", " ", message).strip()
    err.print(f"[bold red]error:[/] {escape(one_line)}", highlight=False, soft_wrap=True)


def fail(message: str, code: int = 1) -> typer.Exit:
    print_error(message)
    return typer.Exit(code)


def check_price_table(path: Path | None) -> None:
    """Read a ``--price-table`` before anything runs: invalid JSON or a price that is not two
    numbers >= 0 is exit 1 naming the file and the model (typer checked that it is a file)."""
    if path is None:
        return
    shape = 'expected {"model": [usd_in_per_1M, usd_out_per_1M], ...}'
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise fail(f"--price-table {path}: invalid JSON ({e}); {shape}") from None
    if not isinstance(table, dict):
        raise fail(f"--price-table {path}: {shape}")
    for model, price in table.items():
        ok = (
            isinstance(price, list)
            and len(price) == 2
            and all(
                isinstance(x, int | float)
                and not isinstance(x, bool)
                and math.isfinite(x)
                and x >= 0
                for x in price
            )
        )
        if not ok:
            raise fail(f"--price-table {path}: {model!r} is {price!r}; {shape} with numbers >= 0")


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


def _version(value: bool) -> None:
    if value:
        out.print(f"interleave-bench {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
    debug: Annotated[
        bool,
        typer.Option("--debug", help="Show the traceback of an unexpected error (IBENCH_DEBUG=1)."),
    ] = False,
) -> None:
    """interleave-bench (ibench)."""
    global _debug
    _debug = debug


# --------------------------------------------------------------------------- data


@data_app.command("list")
def data_list(as_json: JsonOpt = False) -> None:
    """List the benchmarks this build can load."""
    from .registry import benchmarks

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
    from .benchmarks import DataError, load_benchmark
    from .registry import UnknownNameError

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
    from .benchmarks.check import check_images

    total = len({s.path for s in data.sites})
    if total == 0:
        return
    with Progress(
        TextColumn("checking images"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=quiet,
        transient=True,
    ) as bar:
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
        Path | None, typer.Option("--path", exists=True, help="Local copy of the benchmark.")
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
        Path | None, typer.Option("--path", exists=True, help="Local copy to validate.")
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
    from .benchmarks import DataError, get_benchmark
    from .benchmarks.base import import_archive
    from .registry import UnknownNameError

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


def main() -> None:
    app()


# the other command groups register themselves on `app` when imported
from . import cli_eval, cli_score, cli_train  # noqa: E402, F401
from .leaderboard.cli import leaderboard_app  # noqa: E402

app.add_typer(leaderboard_app, name="leaderboard")
