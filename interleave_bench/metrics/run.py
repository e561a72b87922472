"""Scoring records in memory the way ``ibench score`` scores a file: the same registered
scorer, judge engine (cache, budget, preflight), missing-prediction rule and aggregate."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from ..config import JudgeSpec
from ..types import Prediction, Sample


def score_records(
    protocol: str,
    samples: list[Sample],
    preds: list[Prediction],
    judge: JudgeSpec,
    out: Path,
    *,
    protocol_file: Path | None = None,
    allow_unofficial: bool = False,
    clip_model: Path | None = None,
    predictions_b: list[Prediction] | None = None,
    swap: bool = False,
) -> dict[str, Any]:
    """The protocol's ``Result`` (or ``PairwiseResult``) on aligned samples and predictions, as a
    dict; judge answers are cached in ``out/judgments.sqlite``."""
    from ..scorers.base import PairwiseScorer, check_aligned, run_sync
    from ..scoring import (
        ScoreConfig,
        ScoreError,
        aggregate,
        build_engine,
        build_scorer,
        is_missing,
        missing_judgment,
        not_scored,
        preflight,
    )

    if not samples:
        raise ScoreError("no references: pass the samples the predictions answer")
    check_aligned(samples, preds)
    opts = ScoreConfig(
        bench=samples[0].benchmark,
        predictions=Path(f"<{protocol} metric>"),
        protocol=protocol,
        out=out,
        protocol_file=protocol_file,
        allow_unofficial=allow_unofficial,
        judge=judge,
        clip_model=clip_model,
        swap=swap,
    )
    engine = build_engine(opts)
    scorer = build_scorer(opts, engine)
    if engine is not None and judge.preflight:
        run_sync(preflight(engine))
    if isinstance(scorer, PairwiseScorer):
        return _pairwise(scorer, samples, preds, predictions_b, engine, opts)
    answered = [(s, p) for s, p in zip(samples, preds, strict=True) if not is_missing(p)]
    judgments = [missing_judgment(scorer, p) for p in preds if is_missing(p)]
    judgments += scorer.score([a[0] for a in answered], [a[1] for a in answered])
    result = aggregate(scorer, samples, judgments, engine)
    meta = {**result.metadata, "not_scored": not_scored(judgments)}
    if engine is not None:
        meta["judge_stats"] = engine.stats.to_dict()
    return replace(result, metadata=meta).to_dict()


def _pairwise(scorer, samples, preds_a, preds_b, engine, opts) -> dict[str, Any]:
    from ..scorers.base import check_aligned
    from ..scoring import ScoreError, pairwise_result

    if preds_b is None:
        raise ScoreError(f"{opts.protocol} compares two models: pass predictions_b= too")
    check_aligned(samples, preds_b)
    judgments = scorer.score_pairs(samples, preds_a, preds_b)
    models = sorted({preds_a[0].model, preds_b[0].model})
    return pairwise_result(scorer, engine, models, judgments, swap=opts.swap).to_dict()
