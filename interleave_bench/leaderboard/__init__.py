"""Leaderboards: published rows with provenance, submissions validated against their per-sample
evidence, ``show`` tables and a static site. See ``leaderboards/README.md`` for the file format."""

from __future__ import annotations

from .intake import DEFAULT_LIMITS, Limits
from .schema import Board, BoardError, parse_board, validate_row
from .site import build_site
from .specs import SPECS, BoardSpec
from .store import leaderboards_dir, load_board, write_submission
from .submit import Outcome, validate_submission

__all__ = [
    "DEFAULT_LIMITS",
    "SPECS",
    "Board",
    "BoardError",
    "BoardSpec",
    "Limits",
    "Outcome",
    "build_site",
    "leaderboards_dir",
    "load_board",
    "parse_board",
    "validate_row",
    "validate_submission",
    "write_submission",
]
