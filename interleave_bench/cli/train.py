"""`ibench train grpo|warmup|recipes`: recipes (YAML, or a bundled recipe by name, plus key=value
overrides) for the trainer."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from .errors import fail
from .options import JsonOpt
from .output import err, num, out, print_json

train_app = typer.Typer(
    help="Training: SFT warm-up, then GRPO with scorer rewards.", no_args_is_help=True
)


def _train_config(path: Path, overrides: list[str], config_cls: Any = None) -> Any:
    """A recipe file plus ``key=value`` overrides (``generation.temperature=0.5``) as a
    ``config_cls`` (default ``TrainConfig``); values are read as YAML scalars, so numbers and
    booleans keep their types; a dotted key sets an entry of a mapping field."""
    import yaml

    from ..models.loading import resolve_model_path

    if config_cls is None:
        from ..train.trainer import TrainConfig as config_cls

    from ..config import ConfigError
    from ..train.config import read_recipe

    try:  # the recipe with its ``base:`` resolved (an ablation recipe names its base)
        data = read_recipe(path)
    except ConfigError as e:
        raise fail(str(e)) from None
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise fail(f"override {item!r}: expected key=value", 2)
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise fail(f"override {item!r}: the value is not a YAML scalar ({e})", 2) from None
        head, dot, rest = key.partition(".")
        if dot:
            entry = data.setdefault(head, {})
            if not isinstance(entry, dict):
                raise fail(f"override {item!r}: {head} is {entry!r}, not a mapping", 2)
            entry[rest] = parsed
        else:
            data[key] = parsed
    from ..config import build

    try:  # the one field checker: unknown keys with a did-you-mean, typed values, choices
        cfg = build(config_cls, data, str(path))
    except ConfigError as e:
        raise fail(str(e), 2) from None
    if cfg.model.startswith("tiny:"):  # built only once the recipe is known to be right
        cfg.model = str(resolve_model_path(cfg.model))
    return cfg


def recipe_path(value: str) -> Path:
    """``--config``: a recipe file, else the name of a bundled recipe (``tiny_janus_grpo``, with
    or without ``.yaml``); anything else is a usage error (exit 2) listing the bundled names."""
    import difflib

    from ..bundled import recipes

    path = Path(value)
    if path.is_file():
        return path
    if path.exists():
        raise typer.BadParameter(f"{value} is a folder, not a recipe file")
    bundled = recipes()
    name = value.removesuffix(".yaml")
    if name in bundled and "/" not in value:
        return bundled[name]
    close = difflib.get_close_matches(name, list(bundled), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    known = ", ".join(bundled) or "none in this install"
    raise typer.BadParameter(f"{value}: no such file or bundled recipe (bundled: {known}){hint}")


OverridesArg = Annotated[
    list[str] | None, typer.Argument(help="key=value overrides (a.b=v sets a mapping entry).")
]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue from the latest checkpoint.")]
OverwriteOpt = Annotated[
    bool,
    typer.Option(
        "--overwrite",
        help="Clear a non-empty output_dir holding an earlier run first (refused otherwise).",
    ),
]


def _run(fn: Any, cfg: Any, resume: bool, overwrite: bool, as_json: bool) -> Any:
    """Run a trainer; an output folder that is not free, a missing tracker package or a damaged
    log is a one-line error (exit 2 for the folder: a choice of options; 1 otherwise)."""
    from ..runs import RunFolderError
    from ..train.output_dir import OutputDirError
    from ..train.trackers import TrackerError

    try:
        return fn(cfg, resume=resume, overwrite=overwrite, console=None if as_json else err)
    except OutputDirError as e:
        raise fail(str(e), 2) from None
    except (TrackerError, RunFolderError) as e:
        raise fail(str(e), 1) from None


@train_app.command("grpo")
def train_grpo(
    config: Annotated[
        Path,
        typer.Option(
            "--config",
            parser=recipe_path,
            help="A recipe YAML, or a bundled recipe by name (ibench train recipes).",
        ),
    ],
    overrides: OverridesArg = None,
    resume: ResumeOpt = False,
    overwrite: OverwriteOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """GRPO on a tiny or real unified model with the evaluation's scorers as rewards."""
    from ..train.trainer import train

    cfg = _train_config(config, overrides or [])
    result = _run(train, cfg, resume, overwrite, as_json)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun / accelerate: process 0 reports
        return
    first, last = result.records[:1], result.records[-1:]
    summary = {
        "log": str(result.log_path),
        "steps": len(result.records),
        "seconds": round(result.seconds, 2),
        "reward_first": first[0].get("reward_mean") if first else None,
        "reward_last": last[0].get("reward_mean") if last else None,
    }
    if as_json:
        print_json(summary)
    else:
        out.print(
            f"trained {summary['steps']} steps in {summary['seconds']} s; reward "
            f"{summary['reward_first']} -> {summary['reward_last']}; log: {summary['log']}",
            markup=False,
        )


@train_app.command("warmup")
def train_warmup(
    config: Annotated[
        Path,
        typer.Option(
            "--config",
            parser=recipe_path,
            help="A warm-up recipe YAML, or a bundled recipe by name (ibench train recipes).",
        ),
    ],
    overrides: OverridesArg = None,
    resume: ResumeOpt = False,
    overwrite: OverwriteOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Supervised warm-up (interleaved, understanding and text-to-image answers) before GRPO."""
    from ..models.base import ModelError
    from ..train.warmup import WarmupConfig, warmup
    from ..train.warmup_data import WarmupDataError

    cfg = _train_config(config, overrides or [], WarmupConfig)
    try:
        result = _run(warmup, cfg, resume, overwrite, as_json)
    except (WarmupDataError, ModelError) as e:
        raise fail(str(e), 2) from None
    except ValueError as e:  # a mix that does not fit the data, an unusable image
        raise fail(f"{config}: {e}", 2) from None
    first, last = result.records[:1], result.records[-1:]
    summary: dict[str, Any] = {
        "log": str(result.log_path),
        "steps": len(result.records),
        "seconds": round(result.seconds, 2),
        "loss_first": first[0]["loss"] if first else None,
        "loss_last": last[0]["loss"] if last else None,
        "final_model": None if result.final_path is None else str(result.final_path),
    }
    if as_json:
        print_json(summary)
    else:
        out.print(
            f"warmed up {summary['steps']} steps in {summary['seconds']} s; loss "
            f"{summary['loss_first']} -> {summary['loss_last']}; model: {summary['final_model']}; "
            f"log: {summary['log']}",
            markup=False,
        )


@train_app.command("recipes")
def train_recipes(as_json: JsonOpt = False) -> None:
    """List the bundled recipes: pass a name to --config (a copy of the file is a good start)."""
    from ..bundled import recipe_summary, recipes

    rows = [
        {"name": name, "summary": recipe_summary(path), "path": str(path)}
        for name, path in recipes().items()
    ]
    if as_json:
        print_json(rows)
        return
    from rich.table import Table

    table = Table(title="Bundled recipes")
    for col in ("name", "summary", "path"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], escape(r["summary"]), escape(r["path"]))
    out.print(table)


@train_app.command("compare")
def train_compare(
    runs: Annotated[
        list[Path],
        typer.Argument(exists=True, file_okay=False, help="Run folders of ibench train grpo."),
    ],
    as_json: JsonOpt = False,
) -> None:
    """Final rewards and eval scores of runs next to the paper's ablation rows (same setting)."""
    from ..bundled import paper_ablations
    from ..train.ablations import CompareError, describe, read_paper, read_run, to_json

    table_path = paper_ablations()
    try:
        paper = read_paper(table_path) if table_path is not None else []
        rows = [read_run(run, paper) for run in runs]
    except CompareError as e:
        raise fail(str(e)) from None
    if as_json:
        print_json(to_json(rows))
        return
    from rich.table import Table

    table = Table(title="training runs vs the paper (arXiv 2603.09538)")
    for col, just in (("#", "right"), ("run", "left"), ("steps", "right"), ("reward", "right")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    table.add_column("eval", justify="right")
    table.add_column("paper row")
    table.add_column("MMIE", justify="right")
    table.add_column("IB", justify="right")
    for i, r in enumerate(rows, 1):
        p = r.paper
        evals = " ".join(f"{k.split('/')[0]} {num(v)}" for k, v in r.evals.items()) or "-"
        table.add_row(
            str(i),
            escape(Path(r.run).name),
            str(r.steps),
            num(r.reward_final),
            escape(evals),
            "-" if p is None else p.study,
            "-" if p is None else num(p.mmie),
            "-" if p is None else num(p.interleavedbench),
        )
    out.print(table)
    out.print(
        "reward: mean over the last 5 logged steps; MMIE %, IB: InterleavedBench 0-5 (paper, "
        "VILA-U 7B); a run without a paper row has a setting the paper did not report",
        markup=False,
        highlight=False,
    )
    for i, r in enumerate(rows, 1):
        out.print(f"#{i} {r.run}: {describe(r)}", markup=False, highlight=False)
