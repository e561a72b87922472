"""``ibench models``: the registered families (``list``) and tiny random models for tests
and demos (``tiny``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from .errors import fail
from .options import JsonOpt
from .output import out, print_json

models_app = typer.Typer(help="Model utilities.", no_args_is_help=True)


@models_app.command("tiny")
def models_tiny(
    family: Annotated[str, typer.Argument(help="A family with a tiny model: janus, emu3, text")],
    dest: Annotated[
        Path | None,
        typer.Argument(
            file_okay=False, help="Folder to write into (default: the cache, as tiny:NAME uses)."
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", min=0)] = 0,
) -> None:
    """Build a tiny random model (tokenizer trained in memory) for tests and demos."""
    from ..models.base import ModelError
    from ..models.families import tiny_builder
    from ..models.loading import tiny_model

    try:
        build = tiny_builder(family)
        path = tiny_model(f"tiny:{family}") if dest is None else build(dest, seed=seed)
    except ModelError as e:
        raise fail(str(e), 2) from None
    out.print(f"tiny {family}: {path}", markup=False)


@models_app.command("list")
def models_list(as_json: JsonOpt = False) -> None:
    """The registered model families: what each can do, and its tiny variant (--model tiny:NAME)."""
    from ..models import families

    rows = []
    for name in families.names():
        spec = families.get(name)
        rows.append(
            {
                "family": name,
                "capabilities": spec.capability_names(),
                "tiny": f"tiny:{name}" if spec.tiny is not None else None,
                "model_types": list(spec.model_types),
                "description": spec.description,
            }
        )
    if as_json:
        print_json(rows)
        return
    table = Table(title="model families")
    table.add_column("family")
    table.add_column("can do")
    table.add_column("tiny")
    for r in rows:
        can = ", ".join(c.replace("teacher_forced_logprobs", "logprobs") for c in r["capabilities"])
        table.add_row(escape(r["family"]), escape(can or "-"), escape(r["tiny"] or "-"))
    out.print(table)
    for r in rows:
        if r["description"]:
            out.print(f"{r['family']}: {r['description']}", markup=False, highlight=False)
