"""Self-consistency of a judge: re-judge a sample of a finished ``ibench score`` run's items K
times, each repeat with its own request seed and no cache, and measure how much the score moves.

The run's manifest says what was scored and how (benchmark, predictions, protocol, prompt file,
judge); the same scorer is rebuilt from it, so the repeats send the very requests of the run
except for the seed. One judge engine serves every repeat, so ``--max-cost`` bounds them all;
an item the budget or the judge left without a verdict is counted, not scored.
"""

from __future__ import annotations

import json
import random
import statistics as st
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..benchmarks.problems import DataError
from ..config import JudgeSpec
from ..types import Judgment
from .request import JudgeReply, JudgeRequest


@dataclass
class ConsistencyConfig:
    """One ``ibench judge consistency`` run."""

    run: Path
    repeats: int
    sample: int
    seed: int = 1  # repeat k sends request seed ``seed + k``; the run itself used seed 0
    judge: JudgeSpec | None = None  # None: the run's own judge (model, endpoint, local path)
    predictions: Path | None = None  # where the run's predictions are now, if moved
    data: Path | None = None


class Seeded:
    """A judge backend that sends every request with the seed of the current repeat."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.model = backend.model
        self.parallelism = getattr(backend, "parallelism", 16)
        self.seed: int | None = None
        self.temperatures: set[float] = set()

    async def complete(self, request: JudgeRequest) -> JudgeReply:
        self.temperatures.add(request.temperature)
        return await self.backend.complete(replace(request, seed=self.seed))

    async def preflight(self) -> JudgeReply:
        return await self.backend.preflight()

    def estimate_cost(self, request: JudgeRequest) -> float:
        estimate = getattr(self.backend, "estimate_cost", None)
        return 0.0 if estimate is None else float(estimate(request))

    async def aclose(self) -> None:
        close = getattr(self.backend, "aclose", None)
        if close is not None:
            await close()


def score_config(cfg: ConsistencyConfig) -> Any:
    """The ``ScoreConfig`` of the run, from its manifest (the judge from ``cfg`` if given)."""
    from ..scoring import ScoreConfig

    path = cfg.run / "manifest.json"
    if not path.is_file():
        raise DataError(f"{cfg.run}: no manifest.json; pass a folder made by `ibench score`")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise DataError(f"{path}: invalid JSON ({e})") from None
    if manifest.get("command") != "score":
        raise DataError(
            f"{cfg.run} holds a `{manifest.get('command')}` run; consistency re-judges `ibench "
            "score` runs: score it first with `ibench score --predictions RUN ...`"
        )
    ident = manifest.get("identity") or {}
    if not isinstance(ident, dict) or not all(k in ident for k in ("bench", "protocol")):
        raise DataError(f"{path}, field identity: bench and protocol are missing")
    if ident.get("predictions_b") is not None:
        raise DataError(
            f"{cfg.run}: a pairwise run; measure its judge with `ibench score --swap` and "
            "`ibench judge position-bias`"
        )
    judge = cfg.judge
    if judge is None or (judge.judge_model is None and judge.judge_local is None):
        base = judge or JudgeSpec()
        # every judge setting the run's identity holds (model, endpoint, local path, ...)
        update = {k: v for k, v in ident.items() if k in JudgeSpec.model_fields}
        if update.get("judge_local") is not None:
            update["judge_local"] = Path(update["judge_local"])
        if base.judge_base_url:  # a new address for the same judge
            update["judge_base_url"] = base.judge_base_url
        judge = base.model_copy(update=update)
    predictions = cfg.predictions or Path(str(ident.get("predictions")))
    if not predictions.exists():
        raise DataError(
            f"{path}, field identity.predictions: {predictions} is gone; pass --predictions "
            "with where the run's predictions are now"
        )
    return ScoreConfig(
        bench=str(ident["bench"]),
        predictions=predictions,
        protocol=str(ident["protocol"]),
        out=cfg.run,
        data=cfg.data or (Path(ident["data"]) if ident.get("data") else None),
        protocol_file=Path(ident["protocol_file"]) if ident.get("protocol_file") else None,
        allow_unofficial=bool(ident.get("allow_unofficial")),
        judge=judge,
        extra=dict(ident.get("extra") or {}),  # e.g. ISG's dependency rule: judged as the run was
    )


def pick(ids: list[str], n: int, seed: int) -> list[str]:
    """``n`` of ``ids`` drawn with ``random.Random(seed)``, in the run's order."""
    chosen = set(random.Random(seed).sample(ids, min(n, len(ids))))
    return [i for i in ids if i in chosen]


def _inputs(opts: Any, cfg: ConsistencyConfig) -> tuple[list[Any], list[Any]]:
    from ..scoring import ScoreError, is_missing, load_inputs, protocol_spec

    spec = protocol_spec(opts.protocol)
    if not spec.uses_judge or spec.kind == "pairwise":
        raise ScoreError(
            f"{opts.protocol}: consistency re-judges a pointwise judge protocol "
            f"({'no judge' if not spec.uses_judge else 'pairwise: use --swap'})"
        )
    samples, preds, _, _ = load_inputs(opts)
    answered = {
        p.sample_id: (s, p) for s, p in zip(samples, preds, strict=True) if not is_missing(p)
    }
    if not answered:
        raise DataError(f"{opts.predictions}: nothing usable: no prediction answers a sample")
    chosen = pick(list(answered), cfg.sample, cfg.seed)
    return [answered[i][0] for i in chosen], [answered[i][1] for i in chosen]


def estimate(cfg: ConsistencyConfig) -> dict[str, Any]:
    """What the repeats would send and cost, sending nothing: one pass over the chosen items
    through the counting backend of ``ibench score --estimate``, times ``repeats`` (no cache)."""
    from ..estimate import _Counting
    from ..scorers.base import run_sync
    from ..scoring import build_scorer, engine_for
    from .engine import JudgeEngine

    opts = score_config(cfg)
    samples, preds = _inputs(opts, cfg)
    if opts.judge.judge_local is not None:  # named, never loaded; a local judge is free
        counting = _Counting(str(opts.judge.judge_local))
    else:  # the API client opens no connection until a call
        api = engine_for(opts.judge, None)
        counting = _Counting(api.model, api.backend)
    scorer = build_scorer(opts, JudgeEngine(counting, None))

    async def go() -> None:
        try:
            await scorer.ascore(samples, preds)
        finally:
            await scorer.aclose()

    run_sync(go())
    k, api = cfg.repeats, counting.api
    return {
        "judge": counting.model,
        "items": len(samples),
        "repeats": k,
        "requests": counting.requests * k,
        "prompt_tokens": counting.prompt_tokens * k,
        "max_output_tokens": counting.max_output_tokens * k,
        "cost_input": round(counting.cost_input * k, 6),
        "cost_max": round(counting.cost_max * k, 6),
        "priced": api is None or api.model in api.config.prices,
    }


def run_consistency(cfg: ConsistencyConfig, on_judgment: Any = None) -> dict[str, Any]:
    """Re-judge ``cfg.sample`` items ``cfg.repeats`` times and summarise the spread."""
    from ..scorers.base import run_sync
    from ..scoring import build_scorer, check_judge_key, engine_for

    opts = score_config(cfg)
    samples, preds = _inputs(opts, cfg)
    check_judge_key(opts.judge)
    engine = engine_for(opts.judge, None)  # no cache: every repeat is a fresh call
    seeded = Seeded(engine.backend)
    engine.backend = seeded
    scorer = build_scorer(opts, engine)
    scorer.on_judgment = on_judgment
    seeds = [cfg.seed + k for k in range(cfg.repeats)]

    async def go() -> list[list[Judgment]]:
        rounds = []
        try:
            for s in seeds:
                seeded.seed = s
                rounds.append(await scorer.ascore(samples, preds))
        finally:
            await scorer.aclose()
        return rounds

    rounds = run_sync(go())
    original = _original(cfg.run, scorer.name)
    out = summarize(rounds, seeds, original)
    out.update(
        run=str(cfg.run),
        protocol=opts.protocol,
        judge=engine.model,
        temperature=sorted(seeded.temperatures),
        judge_stats=engine.stats.to_dict(),
    )
    return out


def _original(run: Path, scorer: str) -> dict[str, float | None]:
    """The run's own verdicts (seed 0) by sample, shown beside the repeats."""
    from ..runs import read_jsonl

    got: dict[str, float | None] = {}
    for rec in read_jsonl(run / "judgments.jsonl"):
        if rec.get("scorer") == scorer and isinstance(rec.get("sample_id"), str):
            got[rec["sample_id"]] = rec.get("overall")
    return got


def summarize(
    rounds: list[list[Judgment]], seeds: list[int], original: dict[str, float | None] | None = None
) -> dict[str, Any]:
    """Per item: the K scores (None where not ok), their population variance and whether they
    differ; overall: the share of items whose score changed and the mean variance, over items
    with at least two valid scores."""
    from ..scoring import not_scored

    items = []
    by_id = [{j.sample_id: j for j in r} for r in rounds]  # aligned by sample, not position
    for first in rounds[0] if rounds else []:
        js = [r[first.sample_id] for r in by_id]
        scores = [j.overall if j.status == "ok" else None for j in js]
        valid = [s for s in scores if s is not None]
        items.append(
            {
                "sample_id": first.sample_id,
                "scores": scores,
                "statuses": [j.status for j in js],
                "original": (original or {}).get(first.sample_id),
                "variance": st.pvariance(valid) if len(valid) >= 2 else None,
                "changed": len(set(valid)) > 1 if len(valid) >= 2 else None,
            }
        )
    measured = [it for it in items if it["variance"] is not None]
    statuses = Counter(s for it in items for s in it["statuses"])
    return {
        "items": items,
        "repeats": len(seeds),
        "seeds": seeds,
        "n": len(measured),
        "share_changed": sum(it["changed"] for it in measured) / len(measured)
        if measured
        else None,
        "mean_variance": st.fmean([it["variance"] for it in measured]) if measured else None,
        "max_variance": max((it["variance"] for it in measured), default=None),
        "counts": {k: statuses.get(k, 0) for k in ("ok", "invalid", "error")},
        "not_scored": not_scored(j for r in rounds for j in r),
    }
