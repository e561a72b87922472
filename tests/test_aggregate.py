"""Aggregation statistics and the scorer interface used as a reward."""

import asyncio

import pytest

from interleave_bench.aggregate import bootstrap_ci, paired_comparison, sign_test, summarize
from interleave_bench.scorers.structure import StructureScorer
from interleave_bench.types import ImageRef, Interleaved, Judgment, Prediction, Sample, Segment


def j(sid, value, status="ok"):
    if status != "ok":
        return Judgment(sid, "s", "1", status, reason="no score")
    return Judgment(sid, "s", "1", "ok", overall=value)


def test_bootstrap_is_seeded_and_brackets_the_mean():
    values = [float(i % 7) for i in range(200)]
    a = bootstrap_ci(values, seed=1)
    assert a == bootstrap_ci(values, seed=1)
    assert a != bootstrap_ci(values, seed=2)
    m = sum(values) / len(values)
    assert a[0] < m < a[1] and a[1] - a[0] < 1.0
    assert bootstrap_ci([3.0]) is None
    assert bootstrap_ci([2.0, 2.0, 2.0]) == [2.0, 2.0]


def test_summarize_counts_and_never_averages_failures():
    js = [j("a", 4.0), j("b", 2.0), j("c", None, "invalid"), j("d", None, "error"), j("e", 6.0)]
    r = summarize(
        js,
        {"a": "x", "b": "x", "c": "x", "e": None},
        benchmark="b",
        scorer="s",
        protocol="p",
        decimals=3,
        resamples=0,
    )
    assert r.overall == 4.0  # (4 + 2 + 6) / 3: failures excluded, uncategorised item included
    assert r.by_category == {"x": {"mean": 3.0, "n": 2}}
    assert r.counts == {"valid": 3, "invalid": 1, "error": 1, "total": 5}


def test_paired_comparison_hand_computed():
    a = [j("1", 2.0), j("2", 3.0), j("3", 4.0), j("4", 1.0), j("5", None, "invalid")]
    b = [j("1", 3.0), j("2", 3.0), j("3", 5.0), j("5", 6.0), j("6", 1.0)]
    out = paired_comparison(a, b, resamples=200, seed=0)
    assert out["n_common"] == 3 and out["only_a"] == 1 and out["only_b"] == 2  # 5 invalid in a
    assert out["mean_a"] == 3.0 and out["mean_b"] == pytest.approx(11 / 3)
    assert out["mean_diff"] == pytest.approx(2 / 3)
    assert (out["wins_b"], out["ties"], out["wins_a"]) == (2, 1, 0)
    assert out["sign_test_p"] == 0.5  # 2 wins, 0 losses: 2 * (1/4)


def test_sign_test_values():
    assert sign_test(0, 0) is None
    assert sign_test(5, 5) == 1.0
    assert sign_test(10, 0) == pytest.approx(2 / 1024)


def structure_case():
    sample = Sample("s1", "x", Interleaved([Segment.of_text("draw one picture then explain")]))
    pred = Prediction(
        "s1",
        "m",
        Interleaved([Segment.of_image(ImageRef(sha256="ab" * 32)), Segment.of_text("here it is")]),
    )
    return sample, pred


def test_scorer_sync_wrapper_works_inside_a_running_loop():
    scorer = StructureScorer(expected="IT")
    sample, pred = structure_case()

    async def trainer_step():
        # an async trainer calling the sync reward API must not deadlock or raise
        sync = scorer.score([sample], [pred])
        native = await scorer.ascore([sample], [pred])
        return sync, native

    sync, native = asyncio.run(trainer_step())
    assert sync[0].overall == native[0].overall == 1.0


def test_misaligned_inputs_are_refused():
    scorer = StructureScorer(expected="IT")
    sample, pred = structure_case()
    with pytest.raises(ValueError, match="aligned"):
        scorer.score([sample], [Prediction("other", "m", pred.output)])
