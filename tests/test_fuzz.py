"""Hypothesis fuzzing of the row parsers and readers: any input is a Sample, a RowError or a
DataError; nothing else ever escapes."""

from __future__ import annotations

import copy
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from interleave_bench.benchmarks import DataError, RowError, get_benchmark
from interleave_bench.benchmarks.base import MINISET_DIR, RowContext
from interleave_bench.benchmarks.paths import DataRoot
from interleave_bench.benchmarks.readers import iter_jsonl, read_json_array
from interleave_bench.types import Sample

ROOT = Path(__file__).parent

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=30),
    st.sampled_from(
        ["<image>", "<BEGIN> x <image>", "../x.png", "/etc/passwd", "images/a.png", "SA-1", "PBL-2"]
    ),
)
json_values = st.recursive(
    scalars,
    lambda c: st.one_of(
        st.lists(c, max_size=4), st.dictionaries(st.text(max_size=8), c, max_size=4)
    ),
    max_leaves=20,
)


def mostly(valid, times=9):
    """Usually a well-typed value, sometimes anything: fuzzing reaches deep into the parser."""
    return st.one_of(*([valid] * times), json_values)


text_or_null = st.one_of(
    st.none(), st.text(max_size=30), st.sampled_from(["<image>", "a <image> b"])
)
paths = st.sampled_from(["images/a.png", "../x.png", "/etc/passwd", "", "a\x00b", "./images/b.jpg"])
path_or_null = st.one_of(st.none(), paths)
ident = st.one_of(
    st.sampled_from(["SA-1", "PBL-2", "MSR-3", "X-4", "0001"]), st.text(min_size=1, max_size=8)
)
mmie_seg = st.fixed_dictionaries({"text": mostly(text_or_null), "image": mostly(path_or_null)})

ROWS = {
    "mmie": st.fixed_dictionaries(
        {
            "id": mostly(ident),
            "question": mostly(st.lists(mostly(mmie_seg), max_size=4)),
            "answer": mostly(st.one_of(st.text(max_size=10), st.lists(mmie_seg, max_size=3))),
            "model": mostly(st.sampled_from(["gt", None])),
            "gt_answer": mostly(st.lists(mmie_seg, max_size=2)),
        }
    ),
    "interleavedbench": st.fixed_dictionaries(
        {
            "id": mostly(ident),
            "image": mostly(st.lists(mostly(paths), max_size=4)),
            "task_name": mostly(st.text(max_size=10)),
            "conversations": mostly(
                st.lists(
                    mostly(
                        st.fixed_dictionaries(
                            {
                                "from": st.sampled_from(["human", "gpt", "x"]),
                                "value": st.text(max_size=12).map(lambda t: t + " <image> " + t),
                            }
                        )
                    ),
                    max_size=3,
                )
            ),
        }
    ),
    "opening": st.fixed_dictionaries(
        {
            k: mostly(ident)
            for k in (
                "total_uid",
                "meta_task_id",
                "meta_task_name",
                "subtask_id",
                "subtask_name",
                "data_id",
            )
        }
        | {
            "conversations": mostly(
                st.lists(
                    mostly(
                        st.dictionaries(
                            st.sampled_from(["input", "output"]),
                            mostly(
                                st.lists(
                                    mostly(
                                        st.fixed_dictionaries(
                                            {
                                                "image": mostly(path_or_null),
                                                "text": mostly(text_or_null),
                                            }
                                        )
                                    ),
                                    max_size=3,
                                )
                            ),
                        )
                    ),
                    max_size=2,
                )
            )
        }
    ),
    "isg": st.fixed_dictionaries(
        {
            "id": mostly(ident),
            "Category": mostly(st.sampled_from(["HowTo", "nope"])),
            "Query": mostly(
                st.lists(
                    mostly(
                        st.fixed_dictionaries(
                            {
                                "type": st.sampled_from(["text", "image", "audio"]),
                                "content": mostly(paths),
                            }
                        )
                    ),
                    max_size=3,
                )
            ),
            "Golden": mostly(
                st.lists(
                    mostly(
                        st.fixed_dictionaries(
                            {"type": st.sampled_from(["text", "image"]), "content": mostly(paths)}
                        )
                    ),
                    max_size=3,
                )
            ),
        }
    ),
}


def _paths(value, prefix=()):
    """Every location inside a JSON value, as key/index tuples."""
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*prefix, i))


def _replace(value, path, new):
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        out = dict(value)
        if new is _DELETE and not rest:
            out.pop(head, None)
        else:
            out[head] = _replace(value[head], rest, new)
        return out
    out = list(value)
    if new is _DELETE and not rest:
        del out[head]
    else:
        out[head] = _replace(value[head], rest, new)
    return out


_DELETE = object()


def mutated(name):
    """A real bundled row with up to three locations replaced by arbitrary JSON or deleted."""
    data = load_benchmark_rows(name)

    @st.composite
    def build(draw):
        row = copy.deepcopy(draw(st.sampled_from(data)))
        for _ in range(draw(st.integers(0, 3))):
            locations = list(_paths(row))
            where = draw(st.sampled_from(locations))
            row = _replace(row, where, draw(st.one_of(json_values, st.just(_DELETE))))
            if row is _DELETE:
                row = {}
        return row

    return build()


def load_benchmark_rows(name):
    bench, _ = get_benchmark(name)
    root = bench.locate(MINISET_DIR / name)
    return [raw for _, raw, _ in bench.rows(bench.data_file(root))]


def _parse_or_row_error(name, raw, counter=None):
    bench, _ = get_benchmark(name)
    ctx = RowContext(DataRoot([ROOT]), 0)
    try:
        sample = bench.parse_row(raw, ctx)
    except RowError as e:
        assert e.field
        return
    assert isinstance(sample, Sample) and sample.id
    assert all(p.field for p in ctx.problems)
    assert Sample.from_dict(sample.to_dict()) == sample


FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _fuzz(name):
    @FUZZ
    @given(st.one_of(ROWS[name], mutated(name), json_values))
    def run(raw):
        _parse_or_row_error(name, raw)

    run()


def test_fuzz_mmie_rows():
    _fuzz("mmie")


def test_fuzz_interleavedbench_rows():
    _fuzz("interleavedbench")


def test_fuzz_opening_rows():
    _fuzz("opening")


def test_fuzz_isg_rows():
    _fuzz("isg")


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(max_size=200))
def test_fuzz_readers(tmp_path, data):
    f = tmp_path / "x.json"
    f.write_bytes(data)
    try:
        assert isinstance(read_json_array(f), list)
    except DataError as e:
        assert "x.json" in str(e)
    for index, row, problem in iter_jsonl(f):
        if problem is not None:  # a bad line yields no row, and its problem names the line
            assert row is None and problem.message.startswith("line ")
        assert isinstance(index, int)
