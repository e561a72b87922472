"""Benchmarks as registered specs: each benchmark is declared once, by a ``BenchmarkSpec`` in its
own module, and registered under ``interleave_bench.benchmarks`` (the entry-point group a plugin
uses). The loader, the default prompt wording, the categories and the data card all live here, so
nothing else keeps a per-benchmark table that a new benchmark could be missing from.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..registry import benchmarks


@dataclass(frozen=True)
class BenchmarkSpec:
    """One benchmark as the rest of the code sees it.

    ``prompts`` is the default instruction put after a sample's input, by category with a
    ``"default"`` key, and has no default value: a benchmark whose samples are put to a model as
    they are says so with an empty mapping, rather than getting no wording by omission.
    """

    name: str
    loader: str | type  # "module:Class" (imported on first use) or the class itself
    prompts: Mapping[str, str]
    categories: tuple[str, ...] = ()
    data_card: str | None = None  # path of the data card, relative to the repository
    mini_set: str | None = None  # folder under benchmarks/minisets; None: no bundled mini set
    description: str = ""
    _instance: list[Any] = field(default_factory=list, repr=False, compare=False)

    def benchmark(self) -> Any:
        """The loader object (a ``benchmarks.base.Benchmark``), made once."""
        if not self._instance:
            from ..registry import resolve

            cls = resolve(self.loader)
            self._instance.append(cls() if isinstance(cls, type) else cls)
        return self._instance[0]


def register_benchmark(spec: BenchmarkSpec) -> BenchmarkSpec:
    """Register a spec object made at runtime (tests, notebooks); packages use an entry point."""
    benchmarks.register(spec.name, spec)
    return spec


def get_benchmark_spec(name: str) -> BenchmarkSpec:
    """The spec of ``name`` (``:sample`` ignored); unknown: ``UnknownNameError``, "did you mean"."""
    spec = benchmarks.get(name.partition(":")[0])
    if not isinstance(spec, BenchmarkSpec):
        raise TypeError(f"benchmark {name!r} is registered as {spec!r}, not a BenchmarkSpec")
    return spec


def benchmark_names() -> list[str]:
    return benchmarks.names()


def benchmark_help() -> str:
    """One line for ``--bench``'s help, from the registry."""
    return ", ".join(benchmark_names()) + " (NAME:sample for the bundled mini set)."
