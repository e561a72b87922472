"""Self-contained HTML report of a run: scores, per-category charts and every sample's input,
output, gold answer and judgments, in one file that opens offline."""

from __future__ import annotations

from .html import render_report, write_report
from .run import RunData, load_run, run_image_loader

__all__ = ["RunData", "load_run", "render_report", "run_image_loader", "write_report"]
