"""The ``ibench`` command line (typer + rich): the root command with its error handler,
``--version`` and ``--debug``, and every command group attached to it. Every command a script
might read has ``--json``."""

from __future__ import annotations

import sys
import warnings
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from .. import __version__
from . import errors
from .data import data_app
from .errors import EXIT_CODES, describe_error, print_error
from .eval import eval_cmd, report_cmd
from .judge import judge_app
from .leaderboard import leaderboard_app
from .models import models_app
from .output import err, out
from .protocols import protocols_app
from .runs import runs_app
from .score import aggregate_cmd, score_cmd
from .train import train_app


class _Guarded(TyperGroup):
    """The top-level command group. Whatever a command lets escape becomes one ``error:`` line
    on stderr and exit 1 (2 for an unknown name), never a traceback, unless debugging is on;
    typer's own usage errors keep their exit 2."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        errors.set_debug(False)
        warnings.showwarning = errors.show_warning
        try:
            return super().main(*args, **kwargs)
        except Exception as e:
            if errors.debugging():
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
    rich_markup_mode=None,  # click's plain help: option names are never cut at 80 columns
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
    errors.set_debug(debug)


def main() -> None:
    app()


# commands first, then groups: the order ``ibench --help`` lists them in
app.command("eval")(eval_cmd)
app.command("report")(report_cmd)
app.command("aggregate")(aggregate_cmd)
app.command("score")(score_cmd)
app.add_typer(data_app, name="data")
app.add_typer(models_app, name="models")
app.add_typer(protocols_app, name="protocols")
app.add_typer(runs_app, name="runs")
app.add_typer(train_app, name="train")
app.add_typer(leaderboard_app, name="leaderboard")
app.add_typer(judge_app, name="judge")
