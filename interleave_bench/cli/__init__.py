"""The ``ibench`` command line as a package: ``root`` holds the top-level command and attaches
one module per command group (``data``, ``eval``, ``score``, ``models``, ``train``,
``leaderboard``); ``options``, ``errors`` and ``output`` are what they share. Modules import
downwards only (tests/test_package.py fails on any import cycle in the package)."""

from .root import app, main

__all__ = ["app", "main"]
