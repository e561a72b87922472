"""`ibench aggregate --format isg`: the official table of calculate_performance.py (pinned de504cd)
on hand-made edge cases, the honest variant beside it, and the CLI's errors."""

import json

import pytest
from helpers import cli_json, run_cli

from interleave_bench.scorers.isg_aggregate import aggregate_rows

TXT = {"type": "text", "content": "a"}
IMG = {"type": "image", "content": "x.png"}


def score(n):
    return {"VQA_judge_Score": {"Judge": n, "Reason": "r"}, "VQA_judge_Yes_No": {"Judge": "Yes"}}


def yes(v):
    return {"id": 0, "Preliminary": [], "judge": {"Judge": v}}


ROWS = [
    # VQA group ------------------------------------------------------------------------------
    {  # a clean pass: block (8+6)/2, the unasked block question ignored; image 1 yes of 4
        "id": "1",
        "Category": "Object_VQA",
        "output": [TXT, IMG],
        "result": {
            "structure": True,
            "block": [score(8), score(6), {"subject": "<gen_img9>", "object": "<gen_text1>"}],
            "image": [yes("Yes"), yes("no"), {"id": 2, "Preliminary": [0]}, {"judge": None}],
            "holistic": {"overall_score": 9},
        },
    },
    {"id": "2", "Category": "Historical", "output": [TXT]},  # missing result
    {  # structure wrong
        "id": "3",
        "Category": "Object_VQA",
        "output": [IMG],
        "result": {"structure": False, "holistic": {"overall_score": 4}},
    },
    {  # empty output: holistic 1 whatever the judge said
        "id": "4",
        "Category": "Historical",
        "output": [{"type": "text", "content": ""}],
        "result": {"structure": False, "holistic": {"overall_score": 7}},
    },
    # Temporal Prediction --------------------------------------------------------------------
    {  # no image questions
        "id": "5",
        "Category": "Prediction",
        "output": [TXT, IMG],
        "result": {
            "structure": True,
            "block": [score(5)],
            "image": None,
            "holistic": {"overall_score": 6},
        },
    },
    {  # a pass with empty question lists: its block value is not appended at all
        "id": "6",
        "Category": "painting",
        "output": [IMG],
        "result": {"structure": True, "block": [], "image": [], "holistic": None},
    },
    {  # failed calls: a block verdict None (official: 1), an unparsed DSG reply, no overall_score
        "id": "7",
        "Category": "Prediction",
        "output": [TXT],
        "result": {
            "structure": True,
            "block": [{"VQA_judge_Score": None}, score(9)],
            "image": [{"judge": {"error": "Invalid JSON response", "raw_output": "x"}}],
            "holistic": {"error": "Invalid JSON response", "raw_output": "x"},
        },
    },
    {"id": "8", "Category": "painting", "output": [TXT], "result": {"error": "boom"}},
    # 3D Scene: the key older aggregators read ------------------------------------------------
    {
        "id": "9",
        "Category": "3D_object",
        "output": [IMG],
        "result": {
            "structural": True,
            "block": [score(10)],
            "image": [yes("Yes")],
            "holistic": {"overall_score": 10},
        },
    },
    # moved to Image-Text Complementation by --gt (first GT row with its id wins) -------------
    {
        "id": "g1",
        "Category": "Object_VQA",
        "output": [TXT],
        "result": {
            "structure": True,
            "block": [score(2)],
            "image": [yes("YES")],
            "holistic": {"overall_score": 2},
        },
    },
    {"id": "11", "Category": "Not a category", "output": [TXT]},  # ignored by the official table
    {  # a non-numeric overall_score (the official script would stop): counted 1, reported
        "id": "12",
        "Category": "Animation Images",
        "output": [TXT],
        "result": {"structure": False, "holistic": {"overall_score": "8"}},
    },
]
GT = [{"id": "g1", "Category": "HowTo"}, {"id": "g1", "Category": "Scientific"}]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("isgagg")
    judged, gt = d / "model_judge.jsonl", d / "ISG-Bench.jsonl"
    judged.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    gt.write_text("".join(json.dumps(r) + "\n" for r in GT))
    return judged, gt


def test_official_table_on_edge_cases_equals_hand_computation(files):
    judged, gt = files
    code, value = cli_json("aggregate", str(judged), "--format", "isg", "--gt", str(gt))
    assert code == 0, value
    g = value["official"]["groups"]
    # VQA: rows 1-4. structure 1/4; image (1/4 + 0 + 0 + 0) / 4; block (7 + 1 + 1 + 1) / 4;
    # holistic (9 + 1 + 4 + 1) / 4
    assert g["VQA"] == {
        "structure": 0.25,
        "image": 0.0625,
        "block": 2.5,
        "holistic": 3.75,
        "total": 4,
    }
    # Temporal Prediction: rows 5-8. 3 passes of 4; block 5, (row 6: nothing), 1, 1 -> 7/3;
    # image 0 everywhere; holistic 6, 1, 1, 1
    assert g["Temporal Prediction"] == {
        "structure": 0.75,
        "image": 0.0,
        "block": 2.3333,
        "holistic": 2.25,
        "total": 4,
    }
    # row 9 carries only 'structural': not a pass for the pinned aggregator (block 1), but its
    # image and holistic are read as usual
    assert g["3D Scene"] == {
        "structure": 0.0,
        "image": 1.0,
        "block": 1.0,
        "holistic": 10.0,
        "total": 1,
    }
    assert g["Image-Text Complementation"] == {
        "structure": 1.0,
        "image": 1.0,
        "block": 2.0,
        "holistic": 2.0,
        "total": 1,
    }
    assert g["Progressive"] == {
        "structure": 0.0,
        "image": 0.0,
        "block": 1.0,
        "holistic": 1.0,
        "total": 1,
    }
    assert g["Style Transfer"]["total"] == 0 and g["Style Transfer"]["block"] == 0.0
    lines = value["official"]["text"].splitlines()
    assert lines[0] == "Category     structure     image     block     holistic"
    assert "Temporal_Prediction 0.7500     0.0000     2.3333     2.2500" in lines
    assert lines[2] == "Style_Transer 0.0000     0.0000     0.0000     0.0000"
    assert value["counts"] == {
        "rows": 12,
        "grouped": 11,
        "no_result": 2,
        "structure_keys": {"structure": 8, "structural": 1},
    }


def test_honest_variant_counts_failures_instead_of_defaults(files):
    judged, gt = files
    _, value = cli_json("aggregate", str(judged), "--format", "isg", "--gt", str(gt))
    h = value["honest"]
    assert h["comparable"] is False
    vqa = h["groups"]["VQA"]
    assert vqa["structure"] == {"mean": 0.3333, "n": 3, "failed": 1, "not_applicable": 0}
    assert vqa["block"] == {"mean": 3.0, "n": 3, "failed": 1, "not_applicable": 0}
    assert vqa["image"] == {"mean": 0.0, "n": 2, "failed": 2, "not_applicable": 0}
    assert vqa["holistic"] == {"mean": 4.6667, "n": 3, "failed": 1, "not_applicable": 0}
    tp = h["groups"]["Temporal Prediction"]
    assert tp["structure"] == {"mean": 1.0, "n": 3, "failed": 1, "not_applicable": 0}
    assert tp["block"] == {"mean": 5.0, "n": 1, "failed": 2, "not_applicable": 1}
    assert tp["image"] == {"mean": None, "n": 0, "failed": 2, "not_applicable": 2}
    assert tp["holistic"] == {"mean": 6.0, "n": 1, "failed": 3, "not_applicable": 0}
    # the honest variant reads 'structural' too
    assert h["groups"]["3D Scene"]["block"]["mean"] == 10.0
    assert h["groups"]["3D Scene"]["structure"]["mean"] == 1.0
    assert h["failure_reasons"]["structure: no result"] == 1
    assert h["failure_reasons"]["holistic: evaluation error"] == 1


def test_without_gt_rows_keep_their_category_and_problems_are_reported(files):
    value, problems = aggregate_rows([dict(r) for r in ROWS])
    assert value["official"]["groups"]["VQA"]["total"] == 5
    assert value["official"]["groups"]["Image-Text Complementation"]["total"] == 0
    fields = [p.field for p in problems]
    assert "result.holistic.overall_score" in fields and "result.structural" in fields
    judged, _ = files
    text = run_cli("aggregate", str(judged), "--format", "isg")
    assert text.exit_code == 0
    assert "VQA           0.4000     0.2500     2.4000     3.4000" in text.stdout
    assert "not a number" in text.stderr and "'structural'" in text.stderr


def test_cli_errors(files, tmp_path):
    judged, gt = files
    r = run_cli("aggregate", str(judged), "--format", "mmie-feedback", "--gt", str(gt))
    assert r.exit_code == 2 and "--gt applies to --format isg only" in r.stderr
    junk = tmp_path / "junk.jsonl"
    junk.write_text("not json\n[1]\n")
    r = run_cli("aggregate", str(junk), "--format", "isg")
    assert r.exit_code == 1 and "no readable rows" in r.stderr and "Traceback" not in r.output


def test_rows_of_the_wrong_shape_are_problems_naming_row_and_field(files, tmp_path):
    """An ``output`` that is not a list or an ``id`` that is not a string is a problem naming the
    row and the field; the other rows are still aggregated."""
    judged, gt = files
    bad = tmp_path / "judged.jsonl"
    rows = [json.loads(line) for line in judged.read_text().splitlines()]
    odd = [{**rows[0], "id": "x1", "output": {"0": "text"}}, {**rows[1], "id": ["x2"]}]
    bad.write_text("".join(json.dumps(r) + "\n" for r in [*rows, *odd]))
    r = run_cli("aggregate", str(bad), "--format", "isg", "--gt", str(gt), "--json")
    assert r.exit_code == 0 and "Traceback" not in r.output
    _, expected = cli_json("aggregate", str(judged), "--format", "isg", "--gt", str(gt))
    assert json.loads(r.stdout)["official"] == expected["official"]  # the odd rows left out
    assert "row 'x1', field output: expected a list of blocks, got dict" in r.stderr
    assert f"row {len(rows) + 1}, field id: expected a string, got list" in r.stderr  # 0-based
