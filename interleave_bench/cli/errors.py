"""How the CLI reports a user's mistake: one ``error:`` line with a documented exit code, the
project's own warnings as one ``warning:`` line, a traceback only when debugging."""

from __future__ import annotations

import json
import os
import re
import warnings
from typing import Any

import typer
from rich.markup import escape

from .output import err

EXIT_CODES = (
    "Exit codes: 0 success, every item scored; 1 bad data, an unusable input or judge, or nothing "
    "usable (a one-line 'error: ...' names the file); 2 usage: a bad option value, an unknown "
    "name, a missing or wrong-kind path; 3 incomplete: some items not scored (budget, deadline, "
    "judge or generation errors, missing predictions; an 'incomplete:' line says how many and how "
    "to finish; invalid judge replies are a result, not missing work); 130 interrupted (rerun to "
    "resume). Set IBENCH_DEBUG=1 or pass --debug for the traceback of an unexpected error."
)
INCOMPLETE = 3  # the exit code of a run with items not scored

# how to finish the items of each cause (scoring.not_scored names the causes)
_FINISH = {
    "over the --max-cost budget": "rerun the same command with a larger --max-cost to finish "
    "(items already judged come from the cache)",
    "past the --deadline": "rerun the same command (a longer --deadline) to finish",
    "judge error": "rerun the same command to retry them",
    "generation failed": "rerun the same command to retry them",
    "not judged": "rerun the same command to finish",
    "no prediction": "add those samples to the predictions to score them",
}

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
    "MissingExtra",
}
_debug = False  # set by --debug for the command being run (set_debug)


def set_debug(on: bool) -> None:
    global _debug
    _debug = on


def debugging() -> bool:
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
    elif (network := _network_error(e)) is not None:
        message, code, known = network, 1, True
    elif isinstance(e, OSError) and e.filename is not None:
        where = str(e.filename) + (f" -> {e.filename2}" if e.filename2 is not None else "")
        message, code, known = f"{where}: {e.strerror or e}", 1, True
    else:
        message, code, known = f"{type(e).__name__}: {e}", 1, False
    return message, code, known


def _network_error(e: BaseException) -> str | None:
    """A connection that could not be made (no network, a closed port, a wrong endpoint), as
    one line naming the place and the fix; None for anything else."""
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        kind = type(cur)
        names = {c.__name__ for c in kind.__mro__}
        module = kind.__module__.split(".")[0]
        if (module.startswith("httpx") and "TransportError" in names) or (
            module in ("requests", "urllib3") and names & {"ConnectionError", "NewConnectionError"}
        ):
            try:
                where = str(cur.request.url)  # type: ignore[attr-defined]
            except (AttributeError, RuntimeError):
                where = "the server"
            return (
                f"cannot reach {where} ({cur}); check the network connection and the endpoint "
                "(--judge-base-url, HF_ENDPOINT), or work offline with --data or a bundled set"
            )
        cur = cur.__cause__ or cur.__context__
    return None


def not_scored_total(results: list[Any]) -> tuple[dict[str, int], int]:
    """(items not scored by cause, all items) over the results of one command."""
    causes: dict[str, int] = {}
    total = 0
    for r in results:
        mine = dict(r.metadata.get("not_scored") or {})
        for k, v in mine.items():
            causes[k] = causes.get(k, 0) + int(v)
        total += int(r.counts.get("total", 0)) + int(mine.get("not judged", 0))
    return causes, total


def incomplete_line(causes: dict[str, int], total: int) -> str:
    """The one-line banner of an incomplete run: how many, why, and how to finish."""
    n = sum(causes.values())
    why = ", ".join(f"{v} {k}" for k, v in causes.items())
    how = "; ".join(dict.fromkeys(_FINISH.get(k, "rerun the same command") for k in causes))
    return f"incomplete: {n} of {total} items not scored ({why}); {how}"


def finish_run(results: list[Any]) -> None:
    """End a command that scored ``results``: exit 0 when every item was scored, else print
    the incomplete banner on stderr and exit 3."""
    causes, total = not_scored_total(results)
    if causes:
        err.print(incomplete_line(causes, total), markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(INCOMPLETE)


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Our own warnings (a torn record dropped, ...) read as one ``warning:`` line; other
    libraries' warnings keep Python's form, which says where they come from."""
    if category.__module__.startswith("interleave_bench"):
        err.print(f"warning: {message}", markup=False, highlight=False, soft_wrap=True)
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


_default_showwarning = warnings.showwarning


def print_error(message: str) -> None:
    """``error: <message>`` on one line of stderr (a quoted YAML or JSON error's line breaks too),
    so a script can show the last line of stderr and a person sees it whole."""
    one_line = re.sub(r"\s*\n\s*", " ", message).strip()
    err.print(f"[bold red]error:[/] {escape(one_line)}", highlight=False, soft_wrap=True)


def fail(message: str, code: int = 1) -> typer.Exit:
    print_error(message)
    return typer.Exit(code)
