"""Importers of judgment files published or produced by the official tools, into ``Judgment``s.

- OpenING ``gpt-score_results.json`` (7-criterion scores per model and item)
- OpenING ``*_modelAB_results.json`` (pairwise verdicts; like the official reader, a repeated
  ``{data_id}_{A.id}_{B.id}`` key keeps the last verdict, and we report how many were replaced)
- MMIE's ``eval_result.json`` (raw ``gpt_feedback`` replies, parsed with the official rule)

A bad row is a Problem naming the row and field; the rest of the file is still imported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .aggregate import summarize
from .benchmarks.base import opt, req, typed
from .benchmarks.mmie import category_of
from .benchmarks.problems import Problem, RowError
from .benchmarks.readers import read_json_array
from .scorers.mmie import MMIEScorer, parse_score
from .scorers.opening import (
    CRITERIA,
    WINNERS,
    OpenINGPairwiseScorer,
    OpenINGScoreScorer,
    summarize_criteria,
    win_rates,
)
from .types import Judgment


def formats() -> list[str]:
    """The official judgment-file formats the registered protocols import (``--format``)."""
    from .protocols import importer_formats

    return sorted(importer_formats())


@dataclass
class Imported:
    judgments: list[Judgment]
    problems: list[Problem] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)


def _rows(path: Path):
    for i, raw in enumerate(read_json_array(path)):
        try:
            yield i, typed(raw, dict, "<row>")
        except RowError as e:
            yield i, e


def _model(row: dict[str, Any], key: str) -> dict[str, str]:
    m = req(row, key, dict)
    return {"id": str(req(m, "id", (str, int), key)), "name": req(m, "name", str, key)}


def import_opening_scores(path: Path) -> Imported:
    out = Imported([])
    for i, row in _rows(path):
        try:
            if isinstance(row, RowError):
                raise row
            data_id = str(req(row, "data_id", (str, int)))
            model = _model(row, "model")
            score = req(row, "score", dict)
            scores: dict[str, float | None] = {}
            for c in CRITERIA:
                item = opt(score, c, dict, "score")
                value = None if item is None else opt(item, "Score", (int, float), f"score.{c}")
                scores[c] = None if value is None else float(value)
        except RowError as e:
            out.problems.append(Problem(i, e.field, e.message))
            continue
        out.judgments.append(
            Judgment(
                data_id,
                OpenINGScoreScorer.name,
                OpenINGScoreScorer.protocol_version,
                "ok",
                scores=scores,
                metadata={"model": model["name"], "model_id": model["id"]},
            )
        )
    return out


def import_opening_pairwise(path: Path) -> Imported:
    keyed: dict[str, Judgment] = {}
    out = Imported([])
    replaced = 0
    for i, row in _rows(path):
        try:
            if isinstance(row, RowError):
                raise row
            data_id = str(req(row, "data_id", (str, int)))
            a, b = _model(row, "model_A"), _model(row, "model_B")
            winner = req(row, "winner", str)
            if winner not in WINNERS:
                raise RowError("winner", f"expected one of {', '.join(WINNERS)}, got {winner!r}")
        except RowError as e:
            out.problems.append(Problem(i, e.field, e.message))
            continue
        key = f"{data_id}_{a['id']}_{b['id']}"
        replaced += key in keyed
        value = {"A": 1.0, "B": 0.0}.get(winner, 0.5)
        keyed[key] = Judgment(
            data_id,
            OpenINGPairwiseScorer.name,
            OpenINGPairwiseScorer.protocol_version,
            "ok",
            scores={"A": value},
            overall=value,
            metadata={"model_A": a["name"], "model_B": b["name"], "winner": winner},
        )
    out.judgments = list(keyed.values())
    out.notes["replaced_duplicates"] = replaced
    return out


def import_mmie_feedback(path: Path) -> Imported:
    out = Imported([])
    categories: dict[str, str | None] = {}
    for i, row in _rows(path):
        try:
            if isinstance(row, RowError):
                raise row
            sid = req(row, "id", str)
            feedback = req(row, "gpt_feedback", (str, type(None)))
            model = opt(row, "model", str)
        except RowError as e:
            out.problems.append(Problem(i, e.field, e.message))
            continue
        categories[sid] = category_of(sid)
        score, why = parse_score(feedback)
        meta = {"model": model}
        name, version = MMIEScorer.name, MMIEScorer.protocol_version
        if score is None:
            out.judgments.append(
                Judgment(sid, name, version, "invalid", reason=why, raw=feedback, metadata=meta)
            )
        else:
            out.judgments.append(
                Judgment(
                    sid,
                    name,
                    version,
                    "ok",
                    scores={"score": score},
                    overall=score,
                    raw=feedback,
                    metadata=meta,
                )
            )
    out.notes["categories"] = categories
    return out


def aggregate_opening_scores(path: Path) -> tuple[dict[str, Any], Imported]:
    imp = import_opening_scores(path)
    return summarize_criteria((j.metadata["model"], j.scores) for j in imp.judgments), imp


def aggregate_opening_pairwise(path: Path) -> tuple[dict[str, Any], Imported]:
    imp = import_opening_pairwise(path)
    return win_rates(
        (j.metadata["model_A"], j.metadata["model_B"], j.metadata["winner"]) for j in imp.judgments
    ), imp


def aggregate_mmie_feedback(path: Path) -> tuple[dict[str, Any], Imported]:
    imp = import_mmie_feedback(path)
    models = sorted({str(j.metadata.get("model")) for j in imp.judgments})
    result = summarize(
        imp.judgments,
        imp.notes["categories"],
        benchmark="mmie",
        scorer=MMIEScorer.name,
        protocol=MMIEScorer.protocol_version,
        judge=None,
        scale="0-6",
        decimals=3,
        percent_of=6.0,
        metadata={"models": models, "source_file": path.name},
    )
    return result.to_dict(), imp


def aggregate_file(path: str | Path, fmt: str, **options: Any) -> tuple[dict[str, Any], Imported]:
    """Import ``path`` in format ``fmt`` (declared by a protocol's ``importers``) and compute the
    official aggregate; ``options`` go to the importer (``gt`` for ``isg``)."""
    from .protocols import importer_formats, resolve

    found = importer_formats()
    if fmt not in found:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(sorted(found))}")
    return resolve(found[fmt])(Path(path), **options)
