"""How the CLI reports a user's mistake: one ``error:`` line with a documented exit code, the
project's own warnings as one ``warning:`` line, a traceback only when debugging."""

from __future__ import annotations

import json
import os
import re
import warnings

import typer
from rich.markup import escape

from .output import err

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
    elif isinstance(e, OSError) and e.filename is not None:
        where = str(e.filename) + (f" -> {e.filename2}" if e.filename2 is not None else "")
        message, code, known = f"{where}: {e.strerror or e}", 1, True
    else:
        message, code, known = f"{type(e).__name__}: {e}", 1, False
    return message, code, known


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
