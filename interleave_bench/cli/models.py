"""``ibench models``: model utilities (tiny random models for tests and demos)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .errors import fail
from .output import out

models_app = typer.Typer(help="Model utilities.", no_args_is_help=True)


@models_app.command("tiny")
def models_tiny(
    family: Annotated[str, typer.Argument(help="A family with a tiny model: janus, emu3, text")],
    dest: Annotated[Path, typer.Argument(file_okay=False, help="Folder to write the model into.")],
    seed: Annotated[int, typer.Option("--seed", min=0)] = 0,
) -> None:
    """Build a tiny random model (tokenizer trained in memory) for tests and demos."""
    from ..models.base import ModelError
    from ..models.families import tiny_builder

    try:
        build = tiny_builder(family)
    except ModelError as e:
        raise fail(str(e), 2) from None
    out.print(f"tiny {family}: {build(dest, seed=seed)}", markup=False)
