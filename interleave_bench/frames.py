"""Runs, comparisons and leaderboards as pandas DataFrames, for analysis in a notebook.

``read_run(PATH)`` reads a run folder written by ``ibench eval`` or ``ibench score`` through
``RunFolder`` (the one reader of its files); each ``*_frame()`` is a plain, flat DataFrame with
one row per record, so the numbers a table prints and the numbers a researcher groups and plots
are the same. ``ibench runs compare --csv`` and ``ibench leaderboard show --csv`` print these.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from .runs import RunFolder, RunFolderError
from .types import Judgment, Prediction, Result, RunResults, SchemaError

RESULT_COLUMNS = [
    "benchmark",
    "protocol",
    "protocol_version",
    "judge",
    "category",
    "mean",
    "n",
    "low",
    "high",
    "valid",
    "invalid",
    "error",
    "total",
    "scale",
    "comparable",
]


def results_frame(results: RunResults) -> pd.DataFrame:
    """One row per protocol x category, then the protocol's ``overall`` row: mean, n, the 95%
    interval (``low``, ``high``) where the result has one, and the protocol's
    valid/invalid/error/total counts."""
    rows: list[dict[str, Any]] = []
    for r in results.results:
        base = {
            "benchmark": r.benchmark,
            "protocol": r.scorer,
            "protocol_version": r.protocol,
            "judge": r.judge,
            **{k: r.counts.get(k) for k in ("valid", "invalid", "error", "total")},
            "scale": r.scale,
            "comparable": r.comparable,
        }
        cats = [(c, v.get("mean"), v.get("n"), v.get("ci")) for c, v in r.by_category.items()]
        cats.append(("overall", r.overall, r.counts.get("valid"), r.intervals.get("overall")))
        for cat, mean, n, ci in cats:
            low, high = ci if isinstance(ci, list | tuple) and len(ci) == 2 else (None, None)
            rows.append({**base, "category": cat, "mean": mean, "n": n, "low": low, "high": high})
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


def category_rows(result: Result) -> list[dict[str, Any]]:
    """The category rows of ``results_frame`` for one result, as plain Python values (None, not
    NaN): what the HTML report's category table prints."""
    frame = results_frame(RunResults(results=[result])).iloc[:-1]  # the last row is overall
    rows = frame.astype(object).where(frame.notna(), None).to_dict("records")
    for row in rows:
        row["n"] = None if row["n"] is None else int(row["n"])
    return rows


class Run:
    """A finished (or partial) run folder, read-only."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise RunFolderError(f"{self.path}: no such run folder")
        self.folder = RunFolder(self.path, "read")

    def results(self) -> RunResults:
        if not (self.path / "results.json").is_file():
            raise RunFolderError(f"{self.path}: no results.json (not a finished eval or score run)")
        try:
            return self.folder.read_results()
        except (SchemaError, ValueError) as e:
            raise RunFolderError(f"{self.path}/results.json: {e}") from None

    def judgments(self) -> list[Judgment]:
        """The judgments of ``judgments.jsonl``; a later record for the same scorer, sample and
        order replaces an earlier one (a retried error), as the runner reads them."""
        last: dict[tuple[str, str, Any], Judgment] = {}
        for i, raw in enumerate(self.folder.read("judgments.jsonl")):
            try:
                j = Judgment.from_dict(raw, f"judgments.jsonl[{i}]")
            except SchemaError as e:
                raise RunFolderError(f"{self.path}/judgments.jsonl line {i + 1}: {e}") from None
            last[(j.scorer, j.sample_id, j.metadata.get("swapped"))] = j
        return list(last.values())

    def predictions(self) -> list[Prediction]:
        out: dict[str, Prediction] = {}
        for i, raw in enumerate(self.folder.read("predictions.jsonl")):
            try:
                p = Prediction.from_dict(raw, f"predictions.jsonl[{i}]")
            except SchemaError as e:
                raise RunFolderError(f"{self.path}/predictions.jsonl line {i + 1}: {e}") from None
            out[p.sample_id] = p
        return list(out.values())

    def results_frame(self) -> pd.DataFrame:
        return results_frame(self.results())

    def judgments_frame(self) -> pd.DataFrame:
        """One row per judgment: status, overall, reason, cost, and one ``score.<aspect>`` column
        per aspect any judgment has."""
        rows = []
        for j in self.judgments():
            row = {
                "sample_id": j.sample_id,
                "protocol": j.scorer,
                "protocol_version": j.protocol_version,
                "status": j.status,
                "overall": j.overall,
                "reason": j.reason,
                "cost": j.cost,
                "cached": j.metadata.get("cached"),
            }
            row.update({f"score.{k}": v for k, v in j.scores.items()})
            rows.append(row)
        base = ["sample_id", "protocol", "protocol_version", "status", "overall", "reason"]
        return pd.DataFrame(rows, columns=None if rows else [*base, "cost", "cached"])

    def predictions_frame(self) -> pd.DataFrame:
        """One row per prediction: model, the output's text, its shape (``TIT``...), image
        count, error and generation seconds."""
        rows = [
            {
                "sample_id": p.sample_id,
                "model": p.model,
                "text": p.output.text,
                "structure": p.output.structure(),
                "images": len(p.output.images),
                "error": p.error,
                "seconds": p.timing.get("seconds"),
            }
            for p in self.predictions()
        ]
        cols = ["sample_id", "model", "text", "structure", "images", "error", "seconds"]
        return pd.DataFrame(rows, columns=cols)


def read_run(path: str | Path) -> Run:
    """The run folder at ``path`` (``runs/<id>/``) for its frames."""
    return Run(path)


def compare_frame(runs: list[Path]) -> pd.DataFrame:
    """``ibench runs compare`` as a frame: one row per run and protocol, a ``cat.<name>`` column
    per category (the mean)."""
    from .compare import categories, read_rows

    rows = read_rows(runs)
    cats = categories(rows)
    records = []
    for r in rows:
        d = asdict(r)
        by_cat = d.pop("by_category")
        counts = d.pop("counts")
        d.update({k: counts.get(k) for k in ("valid", "invalid", "error", "total")})
        d.update({f"cat.{c}": by_cat.get(c) for c in cats})
        records.append(d)
    return pd.DataFrame(records)


def leaderboard_frame(bench: str, folder: str | Path | None = None, sort: str | None = None):
    """A leaderboard as ``ibench leaderboard show --json`` lists it: one row per entry with
    every score column, rank, status and provenance."""
    from .leaderboard.show import flat, sections
    from .leaderboard.store import leaderboards_dir, load_board

    board = load_board(
        bench.partition(":")[0], leaderboards_dir(None if folder is None else Path(folder))
    )
    rows = [flat(board, r, g.rank_of(r)) for g in sections(board, sort) for r in g.rows]
    for row in rows:
        row["not_ranked_because"] = "; ".join(row["not_ranked_because"])
        ci = row.pop("ci_overall") or [None, None]
        row["ci_low"], row["ci_high"] = ci[0], ci[1]
        row.pop("extra", None)
    return pd.DataFrame(rows)
