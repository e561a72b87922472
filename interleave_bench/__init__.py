"""interleave_bench: evaluate and train models that answer with interleaved text and images."""

from __future__ import annotations

from .version import __version__


def load_benchmark(*args, **kwargs):  # noqa: D103 - documented where it lives
    from .benchmarks import load_benchmark as _load

    return _load(*args, **kwargs)


def read_run(path):  # noqa: D103 - documented where it lives
    from .frames import read_run as _read  # pandas only when asked for

    return _read(path)


load_benchmark.__doc__ = "See interleave_bench.benchmarks.load_benchmark."
read_run.__doc__ = "See interleave_bench.frames.read_run: a run folder's pandas frames."
__all__ = ["__version__", "load_benchmark", "read_run"]
