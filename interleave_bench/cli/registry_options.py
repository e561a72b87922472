"""CLI options whose help and validation come from the registries (benchmarks, protocols).

Typer reads an option's help when it builds the command, i.e. on every ``ibench`` run, so a help
text computed then lists whatever is registered, plugins and entries added at run time included.
Listing names imports no spec module (help that describes specs imports only those modules).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

import typer
from typer.models import OptionInfo


class _LiveHelpOption(OptionInfo):
    """An ``OptionInfo`` whose ``help`` is computed each time typer reads it."""

    help_of: Callable[[], str]

    @property  # type: ignore[override]
    def help(self) -> str:
        return self.help_of()

    @help.setter
    def help(self, value: str | None) -> None:  # typer's __init__ sets it; ours is computed
        pass


def live_option(*decls: str, help_of: Callable[[], str], **kw: Any) -> Any:
    """``typer.Option(*decls, **kw)`` with its help text made by ``help_of()`` on each build."""
    info = typer.Option(*decls, **kw)
    info.__class__ = _LiveHelpOption
    info.help_of = help_of
    return info


def bench_help() -> str:
    from ..benchmarks.spec import benchmark_help

    return benchmark_help()


def protocol_help(*kinds: str, lead: str = "") -> Callable[[], str]:
    def text() -> str:
        from ..protocols import protocol_help as names

        return lead + names(*kinds)

    return text


def check_protocol(name: str, *kinds: str, flag: str = "--protocol") -> None:
    """Exit 2 with a "did you mean" line for an unknown protocol, or one of the wrong kind."""
    from ..protocols import get_protocol, protocol_names
    from ..registry import UnknownNameError
    from .errors import fail

    try:
        spec = get_protocol(name)
    except UnknownNameError:
        known = protocol_names(*kinds)
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise fail(f"{flag} must be one of {', '.join(known)} (got {name!r}{hint})", 2) from None
    if kinds and spec.kind not in kinds:
        raise fail(
            f"{flag}: {name} is a {spec.kind} protocol here; choose from "
            f"{', '.join(protocol_names(*kinds))}",
            2,
        )
