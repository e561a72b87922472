"""interleave_bench: evaluate and train models that answer with interleaved text and images."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("interleave-bench")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"


def load_benchmark(*args, **kwargs):  # noqa: D103 - documented where it lives
    from .benchmarks import load_benchmark as _load

    return _load(*args, **kwargs)


load_benchmark.__doc__ = "See interleave_bench.benchmarks.load_benchmark."
__all__ = ["__version__", "load_benchmark"]
