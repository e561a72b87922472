"""`ibench aggregate` and `ibench score`: scoring outputs made elsewhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ..config import JudgeSpec
from .errors import fail, finish_run, not_scored_total
from .options import (
    AllowUnofficialOpt,
    DataOpt,
    JsonOpt,
    ProtocolFileOpt,
    judge_options,
)
from .output import err, judge_line, judging_status, out, print_json, print_result, progress
from .registry_options import bench_help, check_protocol, live_option, protocol_help

# --------------------------------------------------------------------------- aggregate


def _formats() -> list[str]:
    from ..importers import formats

    return formats()


def aggregate_cmd(
    file: Annotated[
        Path,
        typer.Argument(
            exists=True, dir_okay=False, help="A judgment file made by an official tool."
        ),
    ],
    fmt: Annotated[str, live_option("--format", help_of=lambda: ", ".join(_formats()) + ".")],
    as_json: JsonOpt = False,
    gt: Annotated[
        Path | None,
        typer.Option(
            "--gt",
            exists=True,
            dir_okay=False,
            help="--format isg: ISG-Bench.jsonl, whose Category each row takes (by id).",
        ),
    ] = None,
) -> None:
    """Recompute the official aggregate of a published judgment file."""
    from ..benchmarks import DataError
    from ..importers import aggregate_file, formats

    if fmt not in formats():
        raise fail(f"--format must be one of {', '.join(formats())}", 2)
    if gt is not None and fmt != "isg":
        raise fail("--gt applies to --format isg only", 2)
    try:
        value, imported = (
            aggregate_file(file, fmt) if gt is None else aggregate_file(file, fmt, gt=gt)
        )
    except DataError as e:
        raise fail(str(e)) from None
    for p in imported.problems[:20]:
        err.print(f"problem: {p}", markup=False, highlight=False)
    if len(imported.problems) > 20:
        err.print(f"... and {len(imported.problems) - 20} more problems", markup=False)
    if as_json:
        print_json(value)
        return
    if fmt == "isg":  # the official script's own table, then what the defaults hid
        out.print(value["official"]["text"], markup=False, highlight=False)
        failed = sum(value["honest"]["failure_reasons"].values())
        out.print(
            f"{value['counts']['grouped']} rows in the table, {value['counts']['no_result']} "
            f"without a result; honest variant (not comparable): {failed} level failures "
            "counted instead of defaults (--json shows it)",
            markup=False,
            highlight=False,
        )
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


@judge_options
def score_cmd(
    bench: Annotated[str, live_option("--bench", help_of=bench_help)],
    predictions: Annotated[
        Path,
        typer.Option(
            "--predictions",
            help="MMIE JSON, predictions.jsonl, a run folder, an OpenING <MODEL>_output/ folder, "
            "or a `datasets` folder or Hub id with sample_id and output columns.",
        ),
    ],
    protocol: Annotated[str, live_option("--protocol", help_of=protocol_help())],
    protocol_file: ProtocolFileOpt = None,
    allow_unofficial: AllowUnofficialOpt = False,
    data: DataOpt = None,
    limit: Annotated[
        int | None,
        typer.Option("--limit", min=1, help="Score only the first N samples (a quick look)."),
    ] = None,
    clip_model: Annotated[
        Path | None,
        typer.Option("--clip-model", exists=True, help="CLIP folder for clip_score."),
    ] = None,
    predictions_b: Annotated[
        Path | None,
        typer.Option(
            "--predictions-b", exists=True, help="opening_pairwise: the second model's outputs."
        ),
    ] = None,
    swap: Annotated[
        bool, typer.Option("--swap", help="opening_pairwise: judge both orders (position bias).")
    ] = False,
    estimate: Annotated[
        bool,
        typer.Option(
            "--estimate", help="Print the requests and cost range the run would need; send nothing."
        ),
    ] = False,
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", file_okay=False, help="Output folder (default runs/score-<time>)."),
    ] = None,
    as_json: JsonOpt = False,
    judge: JudgeSpec | None = None,
) -> None:
    """Score predictions made elsewhere with one protocol; reruns are served from the cache."""
    import time as _time

    from ..benchmarks import DataError
    from ..judges.client import JudgeUnavailable
    from ..protocols import get_protocol
    from ..runs import RunFolderError
    from ..scorers.protocol_files import ProtocolError
    from ..scoring import ScoreConfig, ScoreError, run_pairwise, run_score

    check_protocol(protocol)
    from ..hf import looks_like_hub_id

    if not predictions.exists() and not looks_like_hub_id(str(predictions)):
        raise fail(f"--predictions: {predictions}: no such file, folder or Hub dataset id", 2)
    pairwise = get_protocol(protocol).kind == "pairwise"
    out_dir = out_dir or Path("runs") / _time.strftime("score-%Y%m%d-%H%M%S")
    opts = ScoreConfig(
        bench=bench,
        predictions=predictions,
        protocol=protocol,
        out=out_dir,
        data=data,
        protocol_file=protocol_file,
        allow_unofficial=allow_unofficial,
        judge=judge or JudgeSpec(),
        clip_model=clip_model,
        predictions_b=predictions_b,
        swap=swap,
        limit=limit,
    )
    if estimate:
        return _print_estimate(opts, as_json)
    counts = {"invalid": 0, "error": 0}
    with progress(as_json, "judging") as bar:
        task = bar.add_task("", total=None)

        def on_start(n: int) -> None:
            bar.update(task, total=n)

        def on_progress(j, engine) -> None:
            bar.update(task, advance=1, description=judging_status(counts, j, engine))

        try:
            if pairwise:
                arena, judgments, problems, engine = run_pairwise(opts, on_progress, on_start)
            else:
                result, judgments, problems, engine = run_score(opts, on_progress, on_start)
        except (DataError, ProtocolError, ScoreError, JudgeUnavailable, RunFolderError) as e:
            raise fail(str(e)) from None
    for p in problems[:20]:
        err.print(f"problem: {p}", markup=False, highlight=False)
    if pairwise:
        _print_arena(arena.to_dict(), bench, protocol, str(out_dir), as_json)
        return finish_run([arena])
    causes, _ = not_scored_total([result])
    if as_json:
        print_json(
            {**result.to_dict(), "out": str(out_dir), "complete": not causes, "not_scored": causes}
        )
    else:
        print_result(result)
        if engine is not None:
            err.print(judge_line(engine.stats.to_dict()), markup=False)
        out.print(f"written to {out_dir}", markup=False)
    finish_run([result])  # exit 3 with a one-line banner when items were not scored


def _print_arena(pairwise: dict, bench: str, protocol: str, out_dir: str, as_json: bool) -> None:
    """A pairwise protocol's result: win rates by model, then counts."""
    if as_json:
        causes = pairwise.get("metadata", {}).get("not_scored") or {}
        print_json({**pairwise, "out": out_dir, "complete": not causes, "not_scored": causes})
        return
    table = Table(title=f"{bench} / {protocol}  (judge: {pairwise['judge']})")
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


def _print_estimate(opts, as_json: bool) -> None:
    from ..benchmarks import DataError
    from ..estimate import estimate_score
    from ..scorers.protocol_files import ProtocolError
    from ..scoring import ScoreError

    try:
        est = estimate_score(opts)
    except (DataError, ProtocolError, ScoreError) as e:
        raise fail(str(e)) from None
    if as_json:
        print_json(est.to_dict())
        return
    table = Table(title=f"{opts.bench} / {opts.protocol}: estimate (judge: {escape(est.judge)})")
    table.add_column("")
    table.add_column("", justify="right")
    rows = [
        ("judgments", f"{est.items}"),
        ("answered from the cache", f"{est.cached}"),
        ("requests to send", f"{est.requests}"),
        ("input tokens (estimated)", f"{est.prompt_tokens:,}"),
        ("output tokens (at most)", f"{est.max_output_tokens:,}"),
        ("cost, input only", f"${est.cost_input:.4f}"),
        ("cost, every reply at max_tokens", f"${est.cost_max:.4f}"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    out.print(table)
    if not est.priced:
        err.print(f"{est.judge} is not in the price table: pass --price-table", markup=False)
