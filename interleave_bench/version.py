"""The installed version, in a leaf module: run folders and reports record it without importing
the package root (which offers ``read_run`` and so sits above them)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("interleave-bench")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"
