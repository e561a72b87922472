"""``ibench score --estimate``: what a scoring run would send and what it could cost, before any
request leaves. The scorer runs exactly as it would (the same requests, the same cache lookups)
against a stand-in backend that counts instead of sending; replies already in the run's cache are
free. Input tokens are estimated (4 characters a token, 765 an image); output is bounded by each
request's ``max_tokens``, so the cost comes as a range: input only, and input plus every judge
writing its maximum.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .judges.cache import JudgmentCache
from .judges.engine import JudgeEngine
from .judges.request import JudgeReply, JudgeRequest
from .scorers.base import run_sync


@dataclass
class CostEstimate:
    judge: str
    items: int  # judgments the run would produce
    cached: int  # of the requests, answered from the run's cache already
    requests: int  # requests that would be sent (before any retry or JSON repair)
    prompt_tokens: int
    max_output_tokens: int
    cost_input: float  # USD for the input alone
    cost_max: float  # USD if every reply used its max_tokens
    priced: bool  # False: the API judge is not in the price table (costs show as 0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Counting:
    """A judge backend that records what it is asked and sends nothing; ``api`` is the API judge
    whose price table it applies (None: a local judge, free)."""

    def __init__(self, model: str, api: Any = None) -> None:
        self.model = model
        self.parallelism = 16
        self.api = api
        self.requests = self.prompt_tokens = self.max_output_tokens = 0
        self.cost_input = self.cost_max = 0.0

    async def complete(self, request: JudgeRequest) -> JudgeReply:
        self.requests += 1
        prompt = request.approx_prompt_tokens()
        self.prompt_tokens += prompt
        self.max_output_tokens += request.max_tokens
        if self.api is not None:
            self.cost_input += self.api.cost({"prompt_tokens": prompt})
            self.cost_max += self.api.estimate_cost(request)
        return JudgeReply("error", error="not sent: estimate only")

    async def preflight(self) -> JudgeReply:
        return JudgeReply("ok", text="")


def estimate_score(opts: Any) -> CostEstimate:
    """The estimate for ``ibench score`` with these options (nothing is written or sent)."""
    from .scorers.base import PairwiseScorer
    from .scoring import (
        ScoreError,
        build_engine,
        build_scorer,
        load_inputs,
        pair_inputs,
        protocol_spec,
    )

    if not protocol_spec(opts.protocol).uses_judge:
        raise ScoreError(f"--estimate is for judge protocols; {opts.protocol} calls no judge")
    cache_file = opts.out / "judgments.sqlite"
    cache = JudgmentCache(cache_file) if cache_file.is_file() else None
    if opts.judge.judge_local is not None:  # named as the run would name it; never loaded
        counting = _Counting(str(opts.judge.judge_local))
    else:  # the API client opens no connection until a call
        api = build_engine(opts, with_cache=False)
        assert api is not None
        counting = _Counting(api.model, api.backend)
    engine = JudgeEngine(counting, cache)
    scorer = build_scorer(opts, engine)

    async def go() -> list[Any]:
        try:
            if isinstance(scorer, PairwiseScorer):
                samples, preds_a, preds_b, _ = pair_inputs(opts)
                return await scorer.ascore_pairs(samples, preds_a, preds_b)
            samples, preds, _, _ = load_inputs(opts)
            limit = getattr(opts, "limit", None)
            return await scorer.ascore(samples[:limit], preds[:limit])
        finally:
            await scorer.aclose()

    judgments = run_sync(go())
    api = counting.api
    return CostEstimate(
        judge=counting.model,
        items=len(judgments),
        cached=engine.stats.cache_hits,
        requests=counting.requests,
        prompt_tokens=counting.prompt_tokens,
        max_output_tokens=counting.max_output_tokens,
        cost_input=round(counting.cost_input, 6),
        cost_max=round(counting.cost_max, 6),
        priced=api is None or api.model in api.config.prices,  # a local judge is free
    )
