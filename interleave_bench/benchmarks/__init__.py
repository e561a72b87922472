"""Benchmark loaders. ``load_benchmark("mmie", path=...)`` or ``load_benchmark("mmie:sample")``."""

from __future__ import annotations

import os
from collections.abc import Iterable

from .base import Benchmark, BenchmarkData, DatasetInfo, cache_home
from .problems import DataError, Problem, RowError
from .spec import BenchmarkSpec, benchmark_names, get_benchmark_spec, register_benchmark

__all__ = [
    "Benchmark",
    "BenchmarkData",
    "BenchmarkSpec",
    "DataError",
    "DatasetInfo",
    "Problem",
    "RowError",
    "benchmark_names",
    "cache_home",
    "get_benchmark",
    "get_benchmark_spec",
    "load_benchmark",
    "register_benchmark",
]

SAMPLE_SUFFIX = ":sample"


def get_benchmark(name: str) -> tuple[Benchmark, bool]:
    """The loader for ``name`` and whether ``name`` asks for the bundled mini set."""
    base, _, suffix = name.partition(":")
    if suffix and f":{suffix}" != SAMPLE_SUFFIX:
        raise DataError(f"unknown variant {name!r}: the only variant is {base}{SAMPLE_SUFFIX}")
    return get_benchmark_spec(base).benchmark(), bool(suffix)


def load_benchmark(
    name: str,
    path: str | os.PathLike[str] | None = None,
    limit: int | None = None,
    *,
    categories: Iterable[str] | None = None,
    tasks: Iterable[str] | None = None,
    ids: Iterable[str] | None = None,
    download: bool = True,
) -> BenchmarkData:
    """Load a benchmark as ``Sample``s in file order, without decoding any image.

    ``name`` is a registered benchmark (``ibench data list``), optionally with ``:sample`` for the
    bundled mini set. Without ``path`` the copy under ``cache_home()/data`` is used, and
    downloaded from the Hub first when missing (where the benchmark is hosted there).
    """
    bench, bundled = get_benchmark(name)
    if bundled and path is not None:
        raise DataError(f"{name} is the bundled mini set; drop --path or the {SAMPLE_SUFFIX}")
    return bench.load(
        path,
        limit=limit,
        categories=categories,
        tasks=tasks,
        ids=ids,
        bundled=bundled,
        download=download,
    )
