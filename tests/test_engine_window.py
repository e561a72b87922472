"""The bounded window of started judge jobs (``in_window``) and its use by every scorer."""

import asyncio
import gc
import warnings

import pytest

from interleave_bench.judges.client import JudgeConfig, OpenAIJudge
from interleave_bench.judges.engine import JudgeEngine, in_window
from interleave_bench.scorers.base import Scorer
from interleave_bench.types import Judgment


class Probe:
    """Jobs that count how many of them have started and not finished."""

    def __init__(self) -> None:
        self.running = self.peak = self.started = 0

    async def job(self, i: int, delay: float = 0.001) -> int:
        self.started += 1
        self.running += 1
        self.peak = max(self.peak, self.running)
        await asyncio.sleep(delay * (i % 3))
        self.running -= 1
        return i * i


def test_results_in_order_and_at_most_window_started():
    probe = Probe()
    out = asyncio.run(in_window((probe.job(i) for i in range(50)), 7))
    assert out == [i * i for i in range(50)]
    assert probe.peak == 7 and probe.started == 50


def test_window_larger_than_jobs_and_empty():
    probe = Probe()
    assert asyncio.run(in_window([probe.job(i) for i in range(3)], 100)) == [0, 1, 4]
    assert asyncio.run(in_window([], 4)) == []


def test_first_error_cancels_the_rest_and_closes_unstarted_jobs():
    probe = Probe()
    cancelled = []

    async def slow():
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def boom():
        await asyncio.sleep(0.01)
        raise ValueError("bad job")

    jobs = [slow(), boom()] + [probe.job(i) for i in range(20)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "coroutine ... was never awaited" would fail here
        with pytest.raises(ValueError, match="bad job"):
            asyncio.run(in_window(jobs, 2))
        gc.collect()
    assert cancelled == [True] and probe.started == 0


def test_engine_window_is_twice_the_judge_concurrency():
    judge = OpenAIJudge(JudgeConfig(model="m", base_url="http://127.0.0.1:9/v1", concurrency=5))
    assert JudgeEngine(judge).window == 10


class _Windowed(Scorer):
    name = "probe"

    def __init__(self, engine: JudgeEngine, probe: Probe) -> None:
        self.engine, self.probe = engine, probe

    async def ascore(self, samples, predictions):
        async def one(i: int) -> Judgment:
            await self.probe.job(i)
            return self.ok(str(i), float(i))

        return await self.gather(one(i) for i in range(30))


def test_scorers_start_at_most_the_engine_window():
    judge = OpenAIJudge(JudgeConfig(model="m", base_url="http://127.0.0.1:9/v1", concurrency=3))
    probe = Probe()
    seen = []
    scorer = _Windowed(JudgeEngine(judge), probe)
    scorer.on_judgment = seen.append
    out = asyncio.run(scorer.ascore([], []))
    assert [j.sample_id for j in out] == [str(i) for i in range(30)]
    assert probe.peak == 6 and len(seen) == 30


def test_workers_start_a_group_per_loop_turn():
    """Jobs start ``START_GROUP`` per event-loop turn: the first requests can leave before the rest
    of the window has even started (counted with a callback that ticks once per turn)."""
    from collections import Counter

    from interleave_bench.judges.engine import START_GROUP

    async def go():
        loop = asyncio.get_running_loop()
        turn = [0]

        def tick():
            turn[0] += 1
            loop.call_soon(tick)

        loop.call_soon(tick)
        started_at = []

        async def job(i):
            started_at.append(turn[0])
            await asyncio.sleep(0.01)
            return i

        out = await in_window([job(i) for i in range(3 * START_GROUP)], 100)
        return Counter(started_at), out

    turns, out = asyncio.run(go())
    assert out == list(range(3 * START_GROUP))
    assert len(turns) == 3 and set(turns.values()) == {START_GROUP}
