"""Judge protocols as registered specs: each protocol is declared once, by a ``ProtocolSpec`` in
its own module, and registered under ``interleave_bench.protocols`` (the entry-point group a
plugin uses). CLI choices and help, validation, the estimate, recipe rewards, importers and
leaderboard intake all read the registry, so a new protocol touches one module plus one line.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .registry import protocols, resolve

Kind = Literal["offline", "judge", "pairwise"]
KINDS: tuple[str, ...] = ("offline", "judge", "pairwise")


@dataclass(frozen=True)
class ProtocolSpec:
    """One scoring protocol, as everything outside its module sees it.

    ``builder`` is ``"module:function"`` (imported on first use) called as
    ``builder(opts, engine)`` with the score options and the judge engine (None for an offline
    protocol); it returns a ``Scorer`` or, for ``kind="pairwise"``, a ``PairwiseScorer``.
    """

    name: str
    kind: Kind
    builder: str | Callable[..., Any]
    description: str
    scale: str = "0-1"
    #: benchmarks it applies to; empty: any benchmark
    benchmarks: tuple[str, ...] = ()
    #: where the official prompt comes from and its pinned SHA-256 by text name (None: own rubric)
    prompt_source: str | None = None
    prompt_sha256: Mapping[str, str] = field(default_factory=dict)
    #: how judgments become a result, in words (the scorer's ``aggregate`` implements it)
    aggregation: str = "mean of per-sample overall scores"
    #: ``"module:attribute"`` of the leaderboard ``BoardSpec`` that takes this protocol's runs
    leaderboard: str | None = None
    #: official judgment file formats this protocol reads: format name -> ``"module:function"``
    #: returning ``(aggregate, Imported)`` for a path
    importers: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"protocol {self.name!r}: kind must be one of {KINDS}")

    @property
    def uses_judge(self) -> bool:
        return self.kind in ("judge", "pairwise")

    def build(self, opts: Any, engine: Any) -> Any:
        """The scorer for ``opts`` (the builder is imported only now)."""
        return resolve(self.builder)(opts, engine)

    def board(self) -> Any:
        return None if self.leaderboard is None else resolve(self.leaderboard)


def register_protocol(spec: ProtocolSpec) -> ProtocolSpec:
    """Register a spec object made at runtime (tests, notebooks); packages use an entry point."""
    protocols.register(spec.name, spec)
    return spec


def get_protocol(name: str) -> ProtocolSpec:
    """The spec named ``name``; an unknown name is ``UnknownNameError`` with a "did you mean"."""
    spec = protocols.get(name)
    if not isinstance(spec, ProtocolSpec):
        raise TypeError(f"protocol {name!r} is registered as {spec!r}, not a ProtocolSpec")
    return spec


def protocol_names(*kinds: str) -> list[str]:
    """Registered protocol names, of the given kinds (all kinds when none is given)."""
    names = protocols.names()
    if not kinds:
        return names
    return [n for n in names if get_protocol(n).kind in kinds]


def protocol_help(*kinds: str) -> str:
    """One line listing the protocols of these kinds, for ``--protocol``'s help."""
    return ", ".join(protocol_names(*kinds)) + "."


def importer_formats() -> dict[str, str]:
    """Official judgment-file formats -> the importer target, over every registered protocol."""
    found: dict[str, str] = {}
    for n in protocol_names():
        found.update(get_protocol(n).importers)
    return found


def board_specs() -> dict[str, Any]:
    """Leaderboard intake: ``{bench: BoardSpec}`` over the protocols that declare a board."""
    boards: dict[str, Any] = {}
    for n in protocol_names():
        board = get_protocol(n).board()
        if board is not None:
            boards[board.bench] = board
    return boards
