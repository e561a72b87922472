import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from interleave_bench.types import (
    SCHEMA_VERSION,
    ImageRef,
    Interleaved,
    Judgment,
    Prediction,
    Result,
    Sample,
    SchemaError,
    Segment,
)

SHA = "ab" * 32

texts = st.text(max_size=40)
refs = st.builds(
    ImageRef,
    sha256=st.one_of(st.none(), st.just(SHA)),
    path=st.one_of(st.none(), st.text(min_size=1, max_size=20)),
    source=st.one_of(st.none(), texts),
    missing=st.booleans(),
).filter(lambda r: r.sha256 or r.path or r.missing)
segments = st.one_of(st.builds(Segment.of_text, texts), st.builds(Segment.of_image, refs))
interleaved = st.lists(segments, max_size=6).map(Interleaved)


def roundtrip(obj):
    return type(obj).from_dict(json.loads(json.dumps(obj.to_dict())))


@given(interleaved, st.one_of(st.none(), interleaved), st.one_of(st.none(), texts))
def test_sample_roundtrip(inp, gold, category):
    s = Sample(
        id="x-1", benchmark="mmie", input=inp, gold=gold, category=category, metadata={"k": [1, 2]}
    )
    back = roundtrip(s)
    assert back == s
    assert back.to_dict()["schema_version"] == SCHEMA_VERSION


def test_prediction_judgment_result_roundtrip():
    out = Interleaved([Segment.of_text("a"), Segment.of_image(ImageRef(sha256=SHA))])
    p = Prediction("s1", "janus", out, settings={"temperature": 0.0}, timing={"seconds": 1.5})
    assert roundtrip(p) == p
    j = Judgment(
        "s1",
        "mmie",
        "1",
        "ok",
        scores={"score": 4.0},
        overall=4.0,
        raw="### Score\n4",
        cost=0.001,
        usage={"prompt_tokens": 10},
    )
    assert roundtrip(j) == j
    bad = Judgment("s2", "mmie", "1", "invalid", reason="no score", raw="garbage")
    assert roundtrip(bad) == bad
    r = Result(
        "mmie",
        "mmie",
        "1",
        3.5,
        judge="MMIE-Score",
        by_category={"sa": {"mean": 3.0, "n": 2}},
        counts={"valid": 2},
        invalid_reasons={"no score": 1},
        scale="0-6",
        comparable=True,
        intervals={"overall": [3.0, 4.0]},
        overall_percent=58.333,
    )
    assert roundtrip(r) == r


def test_structure_and_text_helpers():
    x = Interleaved(
        [Segment.of_text("a"), Segment.of_image(ImageRef(path="p")), Segment.of_text("b")]
    )
    assert x.structure() == "TIT"
    assert x.text == "a\nb"
    assert len(x.images) == 1


def test_failed_judgment_cannot_carry_a_score():
    with pytest.raises(ValueError):
        Judgment("s", "mmie", "1", "invalid", overall=0.0, reason="x")
    with pytest.raises(ValueError):
        Judgment("s", "mmie", "1", "error")


@pytest.mark.parametrize(
    "record, cls, field",
    [
        ({"id": "a", "benchmark": "b"}, Sample, "input"),
        ({"id": 3, "benchmark": "b", "input": []}, Sample, "id"),
        ({"id": "a", "benchmark": "b", "input": [{"type": "video"}]}, Sample, "input[0].type"),
        (
            {"id": "a", "benchmark": "b", "input": [{"type": "image", "image": {}}]},
            Sample,
            "input[0].image",
        ),
        (
            {"id": "a", "benchmark": "b", "input": [{"type": "image", "image": {"sha256": "zz"}}]},
            Sample,
            "input[0].image.sha256",
        ),
        (
            {"schema_version": 99, "id": "a", "benchmark": "b", "input": []},
            Sample,
            "schema_version",
        ),
        (
            {"sample_id": "a", "scorer": "s", "protocol_version": "1", "status": "maybe"},
            Judgment,
            "status",
        ),
        (
            {
                "sample_id": "a",
                "scorer": "s",
                "protocol_version": "1",
                "status": "ok",
                "scores": {"x": "high"},
            },
            Judgment,
            "scores.x",
        ),
        (
            {
                "sample_id": "a",
                "scorer": "s",
                "protocol_version": "1",
                "status": "ok",
                "overall": True,
            },
            Judgment,
            "overall",
        ),
        (
            {
                "benchmark": "b",
                "scorer": "s",
                "protocol": "1",
                "overall": None,
                "counts": {"ok": 1.5},
            },
            Result,
            "counts.ok",
        ),
        (
            {
                "benchmark": "b",
                "scorer": "s",
                "protocol": "1",
                "overall": None,
                "by_category": {"sa": {"mean": 1.0}},
            },
            Result,
            "by_category.sa.n",
        ),
    ],
)
def test_schema_errors_name_the_field(record, cls, field):
    with pytest.raises(SchemaError) as e:
        cls.from_dict(record)
    assert e.value.field == field
