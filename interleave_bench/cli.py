"""The ``ibench`` command line (typer + rich). Every command a script might read has ``--json``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from . import __version__

app = typer.Typer(
    help="Evaluate and train models that answer with interleaved text and images.",
    no_args_is_help=True,
    add_completion=False,
)
data_app = typer.Typer(help="Benchmarks: list, inspect, download, validate.", no_args_is_help=True)
app.add_typer(data_app, name="data")

out = Console()
err = Console(stderr=True)

BenchArg = Annotated[
    str, typer.Argument(help="Benchmark name, or NAME:sample for the bundled mini set.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")]

# options shared by `score` and `eval`
ProtocolFileOpt = Annotated[
    Path | None, typer.Option("--protocol-file", help="Official prompt file you supply.")
]
AllowUnofficialOpt = Annotated[
    bool,
    typer.Option(
        "--allow-unofficial",
        help="Use prompts that fail the SHA-256 check (results marked not comparable).",
    ),
]
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
DataOpt = Annotated[Path | None, typer.Option("--data", help="Local copy of the benchmark.")]


def fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, ensure_ascii=False, indent=2) + "\n")


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
) -> None:
    """interleave-bench (ibench)."""


# --------------------------------------------------------------------------- data


@data_app.command("list")
def data_list(as_json: JsonOpt = False) -> None:
    """List the benchmarks this build can load."""
    from .registry import benchmarks

    rows = []
    for name in benchmarks.names():
        b = benchmarks.get(name)
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
        Path | None, typer.Option("--path", help="Local copy of the benchmark.")
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
    path: Annotated[Path | None, typer.Option("--path", help="Local copy to validate.")] = None,
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
    to: Annotated[Path | None, typer.Option("--to", help="Destination folder.")] = None,
    revision: Annotated[
        str | None, typer.Option("--revision", help="Hub branch, tag or commit.")
    ] = None,
    archive: Annotated[
        Path | None,
        typer.Option("--archive", help="Unpack a release archive you downloaded by hand."),
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


# --------------------------------------------------------------------------- aggregate


@app.command("aggregate")
def aggregate_cmd(
    file: Annotated[Path, typer.Argument(help="A judgment file made by an official tool.")],
    fmt: Annotated[
        str, typer.Option("--format", help="opening-scores, opening-pairwise or mmie-feedback.")
    ],
    as_json: JsonOpt = False,
) -> None:
    """Recompute the official aggregate of a published judgment file."""
    from .benchmarks import DataError
    from .importers import FORMATS, aggregate_file

    if fmt not in FORMATS:
        raise fail(f"--format must be one of {', '.join(FORMATS)}", 2)
    try:
        value, imported = aggregate_file(file, fmt)
    except DataError as e:
        raise fail(str(e)) from None
    for p in imported.problems[:20]:
        err.print(f"problem: {p}", markup=False, highlight=False)
    if len(imported.problems) > 20:
        err.print(f"... and {len(imported.problems) - 20} more problems", markup=False)
    if as_json:
        print_json(value)
        return
    table = Table(title=f"{file.name} ({fmt})")
    if fmt == "mmie-feedback":
        table.add_column("category")
        table.add_column("mean (0-6)", justify="right")
        table.add_column("n", justify="right")
        for name, entry in value["by_category"].items():
            table.add_row(escape(name), str(entry["mean"]), str(entry["n"]))
        table.add_row("overall", str(value["overall"]), str(value["counts"]["valid"]))
        out.print(table)
        out.print(
            f"percent: {value.get('overall_percent')}   counts: {value['counts']}   "
            f"invalid: {value['invalid_reasons']}",
            markup=False,
        )
        return
    columns = (
        list(value)
        if fmt == "opening-pairwise"
        else sorted({c for row in value.values() for c in row}, key=lambda c: (c == "Overall", c))
    )
    table.add_column("model")
    for c in columns:
        table.add_column(c, justify="right")
    models = (
        sorted({m for col in value.values() for m in col})
        if fmt == "opening-pairwise"
        else list(value)
    )
    for m in models:
        cells = (
            [value[c].get(m) for c in columns]
            if fmt == "opening-pairwise"
            else [value[m].get(c) for c in columns]
        )
        table.add_row(escape(m), *("-" if v is None else f"{v:.4g}" for v in cells))
    out.print(table)


# --------------------------------------------------------------------------- score


@app.command("score")
def score_cmd(
    bench: Annotated[str, typer.Option("--bench", help="mmie, interleavedbench, opening or isg.")],
    predictions: Annotated[
        Path,
        typer.Option(
            "--predictions",
            help="MMIE JSON, predictions.jsonl, a run folder, or an OpenING <MODEL>_output/ folder.",
        ),
    ],
    protocol: Annotated[
        str,
        typer.Option(
            "--protocol",
            help="mmie, interleaved_eval, opening_scores, structure, text_similarity, clip_score.",
        ),
    ],
    protocol_file: ProtocolFileOpt = None,
    allow_unofficial: AllowUnofficialOpt = False,
    judge_base_url: JudgeBaseUrlOpt = None,
    judge_model: JudgeModelOpt = None,
    judge_key_env: JudgeKeyEnvOpt = "OPENAI_API_KEY",
    judge_transport: JudgeTransportOpt = "sdk",
    judge_local: Annotated[
        Path | None,
        typer.Option("--judge-local", help="Run a local VLM judge from this path instead."),
    ] = None,
    trust_remote_code: Annotated[bool, typer.Option("--trust-remote-code")] = False,
    concurrency: ConcurrencyOpt = 16,
    rpm: Annotated[float | None, typer.Option("--rpm", help="Requests-per-minute limit.")] = None,
    tpm: Annotated[float | None, typer.Option("--tpm", help="Tokens-per-minute limit.")] = None,
    max_retries: Annotated[int, typer.Option("--max-retries", min=0)] = 6,
    deadline: Annotated[
        float | None, typer.Option("--deadline", help="Seconds for all judge calls.")
    ] = None,
    price_table: Annotated[
        Path | None,
        typer.Option("--price-table", help='JSON {"model": [usd_in_per_1M, usd_out_per_1M]}.'),
    ] = None,
    data: DataOpt = None,
    clip_model: Annotated[
        Path | None, typer.Option("--clip-model", help="CLIP folder for clip_score.")
    ] = None,
    predictions_b: Annotated[
        Path | None,
        typer.Option("--predictions-b", help="opening_pairwise: the second model's outputs."),
    ] = None,
    swap: Annotated[
        bool, typer.Option("--swap", help="opening_pairwise: judge both orders (position bias).")
    ] = False,
    preflight: Annotated[bool, typer.Option("--preflight/--no-preflight")] = True,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Output folder (default runs/score-<time>).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Score predictions made elsewhere with one protocol; reruns are served from the cache."""
    import time as _time

    from .benchmarks import DataError
    from .judges.client import JudgeUnavailable
    from .runs import RunFolderError
    from .scorers.protocol_files import ProtocolError
    from .scoring import (
        PAIRWISE_PROTOCOLS,
        PROTOCOLS,
        ScoreError,
        ScoreOptions,
        run_pairwise,
        run_score,
    )

    if protocol not in PROTOCOLS:
        raise fail(f"--protocol must be one of {', '.join(PROTOCOLS)}", 2)
    if judge_transport not in ("sdk", "aiohttp"):
        raise fail("--judge-transport must be sdk or aiohttp", 2)
    out_dir = out_dir or Path("runs") / _time.strftime("score-%Y%m%d-%H%M%S")
    opts = ScoreOptions(
        bench=bench,
        predictions=predictions,
        protocol=protocol,
        out=out_dir,
        data=data,
        protocol_file=protocol_file,
        allow_unofficial=allow_unofficial,
        judge_model=judge_model,
        judge_base_url=judge_base_url,
        judge_key_env=judge_key_env,
        judge_transport=judge_transport,
        judge_local=judge_local,
        trust_remote_code=trust_remote_code,
        concurrency=concurrency,
        requests_per_minute=rpm,
        tokens_per_minute=tpm,
        max_retries=max_retries,
        deadline=deadline,
        price_table=price_table,
        preflight=preflight,
        clip_model=clip_model,
        predictions_b=predictions_b,
        swap=swap,
    )
    counts = {"invalid": 0, "error": 0}
    with Progress(
        TextColumn("judging"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.description}"),
        console=err,
        disable=as_json,
        transient=True,
    ) as bar:
        task = bar.add_task("", total=None)

        def on_start(n: int) -> None:
            bar.update(task, total=n)

        def on_progress(j, engine) -> None:
            if j.status != "ok":
                counts[j.status] += 1
            s = engine.stats if engine is not None else None
            desc = (
                f"cost ${s.cost:.4f}  cache hits {s.cache_hits}  " if s else ""
            ) + f"invalid {counts['invalid']}  errors {counts['error']}"
            bar.update(task, advance=1, description=desc)

        try:
            if protocol in PAIRWISE_PROTOCOLS:
                pairwise, judgments, problems, engine = run_pairwise(opts, on_progress, on_start)
            else:
                result, judgments, problems, engine = run_score(opts, on_progress, on_start)
        except (DataError, ProtocolError, ScoreError, JudgeUnavailable, RunFolderError) as e:
            raise fail(str(e)) from None
    for p in problems[:20]:
        err.print(f"problem: {p}", markup=False, highlight=False)
    if protocol in PAIRWISE_PROTOCOLS:
        if as_json:
            print_json({**pairwise, "out": str(out_dir)})
            return
        table = Table(title=f"{bench} / opening pairwise  (judge: {pairwise['judge']})")
        table.add_column("model")
        for way in pairwise["win_rates"]:
            table.add_column(way, justify="right")
        for m in pairwise["models"]:
            cells = [pairwise["win_rates"][w].get(m) for w in pairwise["win_rates"]]
            table.add_row(escape(m), *("-" if v is None else f"{v:.3f}" for v in cells))
        out.print(table)
        out.print(
            f"counts: {pairwise['counts']}   invalid: {pairwise['invalid_reasons']}", markup=False
        )
        return
    if as_json:
        print_json({**result.to_dict(), "out": str(out_dir)})
        return
    table = Table(title=f"{bench} / {protocol}  (judge: {result.judge or '-'})")
    table.add_column("category")
    table.add_column("mean", justify="right")
    table.add_column("n", justify="right")
    for name, entry in result.by_category.items():
        table.add_row(escape(name), str(entry.get("mean")), str(entry.get("n")))
    table.add_row("[bold]overall[/]", str(result.overall), str(result.counts.get("valid")))
    out.print(table)
    pct = f"  ({result.overall_percent}%)" if result.overall_percent is not None else ""
    err.print(
        f"overall {result.overall}{pct}   comparable: {result.comparable}   "
        f"counts: {result.counts}   invalid: {result.invalid_reasons}",
        markup=False,
    )
    if engine is not None:
        err.print(f"judge: {engine.stats.to_dict()}", markup=False)
    out.print(f"written to {out_dir}", markup=False)


# --------------------------------------------------------------------------- eval


def _default_out(model: str, bench: str) -> Path:
    import re

    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(model.rstrip("/")).name or model)
    return Path("runs") / f"{name}__{bench.replace(':', '_')}"


@app.command("eval")
def eval_cmd(
    model: Annotated[
        str,
        typer.Option(
            "--model",
            help="Model folder, Hub id, or tiny:janus / tiny:emu3 (built on the spot); "
            "with --model-type replay, outputs of another tool.",
        ),
    ] = "tiny:janus",
    bench: Annotated[
        str,
        typer.Option(
            "--bench", help="mmie, interleavedbench, opening, isg (NAME:sample for the mini set)."
        ),
    ] = "mmie:sample",
    model_type: Annotated[
        str | None,
        typer.Option(
            "--model-type", help="janus, emu3, replay or pipeline (default: config.json)."
        ),
    ] = None,
    data: DataOpt = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1)] = None,
    scorers: Annotated[
        str, typer.Option("--scorers", help="Comma list of offline scorers.")
    ] = "structure",
    protocol: Annotated[
        str | None,
        typer.Option("--protocol", help="Judge protocol: mmie, interleaved_eval, opening_scores."),
    ] = None,
    protocol_file: ProtocolFileOpt = None,
    allow_unofficial: AllowUnofficialOpt = False,
    judge_base_url: JudgeBaseUrlOpt = None,
    judge_model: JudgeModelOpt = None,
    judge_key_env: JudgeKeyEnvOpt = "OPENAI_API_KEY",
    judge_transport: JudgeTransportOpt = "sdk",
    concurrency: ConcurrencyOpt = 16,
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", help="Run folder (default runs/<model>__<bench>; rerun to resume)."),
    ] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    dtype: Annotated[str | None, typer.Option("--dtype", help="e.g. bfloat16.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 1,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=1)] = 256,
    temperature: Annotated[float, typer.Option("--temperature", min=0.0)] = 0.0,
    top_p: Annotated[float, typer.Option("--top-p")] = 1.0,
    cfg_scale: Annotated[float, typer.Option("--cfg-scale")] = 5.0,
    image_size: Annotated[int | None, typer.Option("--image-size")] = None,
    max_images: Annotated[int, typer.Option("--max-images", min=0)] = 3,
    max_image_tokens: Annotated[int | None, typer.Option("--max-image-tokens")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    chat_base_url: Annotated[
        str | None, typer.Option("--chat-base-url", help="Pipeline: the chat model's endpoint.")
    ] = None,
    image_generator: Annotated[
        str | None,
        typer.Option("--image-generator", help="Pipeline: openai:MODEL or diffusers:PATH."),
    ] = None,
    image_base_url: Annotated[
        str | None, typer.Option("--image-base-url", help="Pipeline: Images API endpoint.")
    ] = None,
    templates: Annotated[
        Path | None, typer.Option("--templates", help="JSON {bench: {category: instruction}}.")
    ] = None,
    fail_fast: Annotated[
        bool, typer.Option("--fail-fast", help="Stop at the first failed generation.")
    ] = False,
    report: Annotated[bool, typer.Option("--report/--no-report")] = True,
    as_json: JsonOpt = False,
) -> None:
    """Generate interleaved answers with a model, score them, and write a report (resumable)."""
    from .benchmarks import DataError
    from .judges.client import JudgeUnavailable
    from .models.base import GenerationSettings, ModelError
    from .runner import EvalConfig, GenerationFailed, Hooks, run_eval
    from .runs import RunFolderError
    from .scorers.protocol_files import ProtocolError
    from .scoring import JUDGE_PROTOCOLS, OFFLINE_PROTOCOLS, ScoreError

    names = [s.strip() for s in scorers.split(",") if s.strip()]
    bad = [n for n in names if n not in OFFLINE_PROTOCOLS]
    if bad:
        raise fail(
            f"unknown offline scorer(s) {', '.join(bad)}; choose from "
            f"{', '.join(OFFLINE_PROTOCOLS)} (judges go in --protocol)",
            2,
        )
    if protocol is not None:
        if protocol not in JUDGE_PROTOCOLS:
            raise fail(f"--protocol must be one of {', '.join(JUDGE_PROTOCOLS)}", 2)
        names.append(protocol)
    out_dir = out_dir or _default_out(model, bench)
    settings = GenerationSettings(
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        cfg_scale=cfg_scale,
        image_size=image_size,
        max_images=max_images,
        max_image_tokens=max_image_tokens,
        seed=seed,
        batch_size=batch_size,
    )
    judge = {
        "protocol_file": protocol_file,
        "allow_unofficial": allow_unofficial,
        "judge_base_url": judge_base_url,
        "judge_model": judge_model,
        "judge_key_env": judge_key_env,
        "judge_transport": judge_transport,
        "concurrency": concurrency,
    }
    cfg = EvalConfig(
        model=model,
        bench=bench,
        out=out_dir,
        model_type=model_type,
        data=data,
        limit=limit,
        scorers=names,
        settings=settings,
        device=device,
        dtype=dtype,
        templates=templates,
        pipeline={
            "chat_base_url": chat_base_url,
            "image_generator": image_generator,
            "image_base_url": image_base_url,
            "api_key_env": judge_key_env,
        },
        fail_fast=fail_fast,
        report=report,
        judge=judge,
    )
    counts = {"invalid": 0, "error": 0, "gen_errors": 0}
    with Progress(
        TextColumn("{task.fields[label]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.description}"),
        console=err,
        disable=as_json,
        transient=True,
    ) as bar:
        gen = bar.add_task("", total=None, label="generating")
        jud = bar.add_task("", total=None, label="judging   ")

        def on_start(n_gen: int, n_judge: int) -> None:
            bar.update(gen, total=n_gen)
            bar.update(jud, total=n_judge)

        def on_generated(p) -> None:
            counts["gen_errors"] += bool(p.error)
            bar.update(gen, advance=1, description=f"errors {counts['gen_errors']}")

        def on_judged(j, engine) -> None:
            if j.status != "ok":
                counts[j.status] += 1
            s = engine.stats if engine is not None else None
            desc = (
                f"cost ${s.cost:.4f}  cache hits {s.cache_hits}  " if s else ""
            ) + f"invalid {counts['invalid']}  errors {counts['error']}"
            bar.update(jud, advance=1, description=desc)

        try:
            results = run_eval(cfg, Hooks(on_start, on_generated, on_judged))
        except KeyboardInterrupt:
            err.print(
                f"interrupted: everything finished so far is saved in {out_dir}; rerun the "
                "same command to resume",
                markup=False,
                soft_wrap=True,
            )
            raise typer.Exit(130) from None
        except (
            DataError,
            ModelError,
            RunFolderError,
            ProtocolError,
            ScoreError,
            JudgeUnavailable,
            GenerationFailed,
            TimeoutError,
        ) as e:
            raise fail(str(e)) from None
    if as_json:
        print_json(
            {
                "out": str(out_dir),
                "results": [r.to_dict() for r in results],
                "generation_errors": counts["gen_errors"],
            }
        )
        return
    for r in results:
        table = Table(title=f"{r.benchmark} / {r.scorer}  (judge: {r.judge or '-'})")
        table.add_column("category")
        table.add_column("mean", justify="right")
        table.add_column("n", justify="right")
        for name, entry in r.by_category.items():
            table.add_row(escape(name), str(entry.get("mean")), str(entry.get("n")))
        table.add_row("[bold]overall[/]", str(r.overall), str(r.counts.get("valid")))
        out.print(table)
        out.print(
            f"counts: {r.counts}   invalid: {r.invalid_reasons}   comparable: {r.comparable}",
            markup=False,
        )
    report_path = out_dir / "report.html"
    out.print(
        f"run folder: {out_dir}" + (f"   report: {report_path}" if report_path.exists() else ""),
        markup=False,
    )


@app.command("report")
def report_cmd(
    run: Annotated[Path, typer.Argument(help="A run folder made by ibench eval.")],
    to: Annotated[Path | None, typer.Option("--out", help="Where to write the page.")] = None,
) -> None:
    """(Re)write the self-contained HTML report of a run folder."""
    from .report.html import write_report

    if not (run / "manifest.json").exists():
        raise fail(f"{run}: not a run folder (no manifest.json)")
    out.print(f"report: {write_report(run, to)}", markup=False)


models_app = typer.Typer(help="Model utilities.", no_args_is_help=True)
app.add_typer(models_app, name="models")


@models_app.command("tiny")
def models_tiny(
    family: Annotated[str, typer.Argument(help="janus or emu3")],
    dest: Annotated[Path, typer.Argument(help="Folder to write the model into.")],
    seed: Annotated[int, typer.Option("--seed")] = 0,
) -> None:
    """Build a tiny random model (tokenizer trained in memory) for tests and demos."""
    if family == "janus":
        from .models.tiny_janus import build_tiny_janus as build
    elif family == "emu3":
        from .models.tiny_emu3 import build_tiny_emu3 as build
    else:
        raise fail("family must be janus or emu3", 2)
    out.print(f"tiny {family}: {build(dest, seed=seed)}", markup=False)
