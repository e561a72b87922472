"""Issue 16 item 8: the scale a result shows comes from its protocol spec, OpenING's 7 criteria
and InterleavedEval's 5 aspects are in results.json and the report, report.html is readable like
the other run files, and only comparable full-set published/verified rows are ranked."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from fake_openai import FakeOpenAI, Reply
from helpers import cli_json, write_opening_outputs
from test_leaderboard import REPO_BOARDS, lb, lb_json

from interleave_bench.protocols import get_protocol
from interleave_bench.report.html import render_report, write_report
from interleave_bench.scorers.interleaved_eval import ASPECTS, aggregate_aspects
from interleave_bench.scorers.opening import CRITERIA
from interleave_bench.types import Judgment

# Correctness 9, Completeness 5, the other five 7: overall (9 + 5 + 5 * 7) / 7 = 7
SCORES = {c: 9 if c == "Correctness" else 5 if c == "Completeness" else 7 for c in CRITERIA}


def _opening_run(tmp_path: Path) -> Path:
    folder = tmp_path / "gen_outputs" / "Gold_output"
    write_opening_outputs(folder)
    prompt = tmp_path / "detailed_score_system.txt"
    prompt.write_text("Score with seven criteria.")
    reply = json.dumps({c: {"Score": v, "Justification": "ok"} for c, v in SCORES.items()})
    out = tmp_path / "o"
    with FakeOpenAI(lambda body: Reply(content=reply)) as server:
        code, result = cli_json(
            "score", "--bench", "opening:sample", "--predictions", str(folder),
            "--protocol", "opening_scores", "--protocol-file", str(prompt), "--allow-unofficial",
            "--judge-base-url", server.url, "--judge-model", "gpt-4o", "--out", str(out),
        )  # fmt: skip
    assert code == 0, result
    return out


def test_opening_scores_scale_and_criteria_in_results_and_report(tmp_path):
    out = _opening_run(tmp_path)
    result = json.loads((out / "results.json").read_text())["results"][0]
    assert result["overall"] == 7.0
    assert result["scale"] == get_protocol("opening_scores").scale == "0-10"  # was "0-1"
    assert result["metadata"]["criteria"] == {c: float(v) for c, v in SCORES.items()}
    for entry in result["by_category"].values():
        assert entry["criteria"] == {c: float(v) for c, v in SCORES.items()}
    page = write_report(out).read_text("utf-8")
    assert "<tr><th>Scale</th><td>0-10</td></tr>" in page and "<td>0-1</td>" not in page
    assert "<th>Criterion</th><th>Mean (0-10)</th>" in page
    for c, v in SCORES.items():
        assert f'<tr><td>{c}</td><td class="num">{v}</td></tr>' in page


def test_interleaved_eval_aspects_in_report():
    aspects = dict(zip(ASPECTS, (4.0, 3.0, 2.0, 1.0, 5.0), strict=True))
    js = [Judgment(f"s{i}", "interleaved_eval", "v", "ok", dict(aspects), 3.0) for i in range(2)]
    result = aggregate_aspects(js, {"s0": "t", "s1": "t"}, judge="gpt-4o", protocol="v")
    assert result.scale == get_protocol("interleaved_eval").scale
    page = render_report([], [], js, [result], {}, image_loader=lambda ref: "")
    assert "<th>Aspect</th><th>Mean (0-5)</th>" in page
    for a, v in aspects.items():
        assert f'<tr><td>{a}</td><td class="num">{v:g}</td></tr>' in page
    assert "".join(f"<th>{a}</th>" for a in ASPECTS) in page  # per-task columns too


def test_report_html_is_readable_like_other_run_files(tmp_path):
    out = _opening_run(tmp_path)
    old = os.umask(0o022)
    try:
        path = write_report(out)
        other = out / "readable.txt"
        other.write_text("x")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == other.stat().st_mode & 0o777 == 0o644  # was 0600


def _submission(boards: Path, name: str, overall: float, **fields) -> None:
    """A submission row file as `leaderboard submit` writes it (mmie board, scale 0-100)."""
    row = {
        "model": name, "table": "main", "scale": "0-100", "protocol": "mmie",
        "judge": "MMIE-Score", "source": "test", "date": "2025-01", "provenance": "submission",
        "scores": {"situational_analysis": overall}, "overall": overall, **fields,
    }  # fmt: skip
    folder = boards / "submissions" / "mmie"
    folder.mkdir(parents=True, exist_ok=True)
    doc = {"schema_version": 1, "benchmark": "mmie", "row": row}
    (folder / f"{name}.json").write_text(json.dumps(doc))


def test_only_comparable_full_set_published_or_verified_rows_are_ranked(tmp_path):
    boards = tmp_path / "leaderboards"
    boards.mkdir()
    for f in REPO_BOARDS.glob("*.json"):
        shutil.copy(f, boards / f.name)
    audit = {"n": 5, "agreed": 5, "seed": 1, "judge_model": "MMIE-Score"}
    _submission(boards, "Partial15", 99.0, comparable=False, n=15, coverage=1.0,
                subset="mmie:sample", status="self-reported")  # fmt: skip
    _submission(boards, "SelfRep", 98.0, comparable=True, coverage=100.0, status="self-reported")
    _submission(boards, "Verified", 97.0, comparable=True, coverage=100.0, status="verified",
                audit=audit)  # fmt: skip
    code, rows = lb_json("show", "mmie", "--dir", str(boards))
    assert code == 0
    by = {r["model"]: r for r in rows}
    assert by["Verified"]["rank"] == 1 and by["Verified"]["ranked"]
    assert by["Partial15"]["rank"] is None and not by["Partial15"]["ranked"]
    assert by["Partial15"]["not_ranked_because"] == [
        "not comparable", "subset mmie:sample", "coverage 1% < 99%", "self-reported",
    ]  # fmt: skip
    assert by["SelfRep"]["rank"] is None and by["SelfRep"]["not_ranked_because"] == [
        "self-reported"
    ]
    ranked = [r for r in rows if r["ranked"]]
    assert [r["rank"] for r in ranked] == list(range(1, len(ranked) + 1))
    assert all(r["provenance"] == "published" for r in ranked[1:])
    # the table: the others come after the ranked rows, under their own title, with no rank
    text = lb("show", "mmie", "--dir", str(boards)).stdout
    head = text.index("other rows: not comparable, self-reported or partial")
    assert text.index("Verified") < head < text.index("Partial15")
    assert text.index("SelfRep") > head
    # the site: a ranked table without them, an "other" table with them, best = a ranked row
    site = tmp_path / "site"
    assert lb("build", "--out", str(site), "--dir", str(boards)).exit_code == 0
    page = (site / "mmie.html").read_text("utf-8")
    ranked_t = page[page.index('id="t-main"') : page.index("</table>", page.index('id="t-main"'))]
    other_t = page[page.index('id="t-main-other"') :]
    assert '<td class="num" data-v="1.0">1</td><td class="model" data-v="Verified">' in ranked_t
    assert "Partial15" not in ranked_t and "SelfRep" not in ranked_t
    assert "Partial15" in other_t and "SelfRep" in other_t
    assert "Verified (97)" in (site / "index.html").read_text("utf-8")
