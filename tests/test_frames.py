"""Runs, comparisons and leaderboards as pandas frames (and the --csv tables made from them)."""

import io
import json

import pandas as pd
import pytest
from helpers import cli_json, run_cli

import interleave_bench
from interleave_bench.benchmarks import load_benchmark
from interleave_bench.media import ImageStore
from interleave_bench.types import Interleaved, Judgment, Prediction, Segment


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two structure runs of the same predictions-file shape, different answers."""
    tmp = tmp_path_factory.mktemp("frames")
    data = load_benchmark("interleavedbench:sample")
    store = ImageStore(tmp / "images")

    def kept(seg):
        return seg if seg.image is None else Segment.of_image(store.put_file(seg.image.path))

    runs = []
    for keep in (1, 2):
        preds = [
            Prediction(s.id, f"m{keep}", Interleaved(kept(g) for g in s.gold[: keep + i % 3]))
            for i, s in enumerate(data)
        ]
        preds[0] = Prediction(data[0].id, f"m{keep}", Interleaved(), error="timeout")
        file = tmp / f"p{keep}.jsonl"
        file.write_text("".join(json.dumps(p.to_dict()) + "\n" for p in preds))
        out = tmp / f"run{keep}"
        code, result = cli_json(
            "score",
            "--bench",
            "interleavedbench:sample",
            "--predictions",
            str(file),
            "--protocol",
            "structure",
            "--out",
            str(out),
        )
        assert code == 3 and result["counts"]["error"] == 1  # the failed generation, counted
        runs.append((out, result))
    return runs


def test_results_frame_matches_the_run_results(two_runs):
    out, result = two_runs[0]
    frame = interleave_bench.read_run(out).results_frame()
    assert isinstance(frame, pd.DataFrame)
    assert list(frame["category"]) == [*result["by_category"], "overall"]
    for cat, entry in result["by_category"].items():
        row = frame[frame["category"] == cat].iloc[0]
        assert (row["mean"], row["n"]) == (entry["mean"], entry["n"])
        assert [row["low"], row["high"]] == entry["ci"]
    overall = frame[frame["category"] == "overall"].iloc[0]
    assert overall["mean"] == result["overall"]
    assert [overall["low"], overall["high"]] == result["intervals"]["overall"]
    counts = {k: int(overall[k]) for k in ("valid", "invalid", "error", "total")}
    assert counts == result["counts"]
    assert set(frame["protocol"]) == {"structure"}


def test_judgments_and_predictions_frames(two_runs):
    out, result = two_runs[0]
    run = interleave_bench.read_run(out)
    j = run.judgments_frame()
    lines = [
        Judgment.from_dict(json.loads(x))
        for x in (out / "judgments.jsonl").read_text().splitlines()
    ]
    assert len(j) == result["counts"]["total"] == len(lines)
    assert j["status"].value_counts().to_dict() == {"ok": 11, "error": 1}
    ok = j[j["status"] == "ok"]
    assert list(ok["overall"]) == [x.overall for x in lines if x.status == "ok"]
    assert round(sum(ok["overall"]) / len(ok), 3) == result["overall"]  # results keep 3 decimals
    assert "score.type_sequence" in j.columns
    p = run.predictions_frame()
    assert len(p) == 12 and p["error"].notna().sum() == 1
    assert set(p["model"]) == {"m1"}


def test_read_run_of_a_folder_without_results_is_one_error(tmp_path):
    from interleave_bench.runs import RunFolderError

    with pytest.raises(RunFolderError, match="no results.json"):
        interleave_bench.read_run(tmp_path).results_frame()


def test_runs_compare_csv(two_runs):
    (a, ra), (b, rb) = two_runs
    result = run_cli("runs", "compare", str(a), str(b), "--csv")
    assert result.exit_code == 0
    frame = pd.read_csv(io.StringIO(result.stdout))
    assert list(frame["overall"]) == [ra["overall"], rb["overall"]]
    assert ra["overall"] != rb["overall"]
    cats = list(ra["by_category"])
    assert list(frame[f"cat.{cats[0]}"]) == [
        ra["by_category"][cats[0]]["mean"],
        rb["by_category"][cats[0]]["mean"],
    ]


def test_leaderboard_show_csv_lists_the_json_rows():
    code, rows = cli_json("leaderboard", "show", "mmie")
    assert code == 0 and rows
    result = run_cli("leaderboard", "show", "mmie", "--csv")
    assert result.exit_code == 0
    frame = pd.read_csv(io.StringIO(result.stdout))
    assert list(frame["model"]) == [r["model"] for r in rows]
    assert [None if pd.isna(x) else x for x in frame["overall"]] == [r["overall"] for r in rows]


def test_report_category_table_shows_the_frame(two_runs):
    from interleave_bench.report.svg import fmt_num

    out, _ = two_runs[1]
    assert run_cli("report", str(out)).exit_code == 0
    page = (out / "report.html").read_text(encoding="utf-8")
    frame = interleave_bench.read_run(out).results_frame()
    for row in frame[frame["category"] != "overall"].itertuples():
        cells = (
            f'<tr><td>{row.category}</td><td class="num">{fmt_num(row.mean)}</td>'
            f'<td class="num">{row.n}</td><td>[{fmt_num(row.low)}, {fmt_num(row.high)}]</td>'
        )
        assert cells in page
