"""Leaderboards: the published boards, `show`, a real `ibench eval` run submitted and shown, and one
test per kind of bad submission (each must be refused with a precise message)."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import pickle
import re
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from interleave_bench.cli.leaderboard import leaderboard_app
from interleave_bench.leaderboard import intake
from interleave_bench.leaderboard.specs import SPECS
from interleave_bench.leaderboard.store import leaderboards_dir, load_board

REPO_BOARDS = Path(__file__).resolve().parents[1] / "leaderboards"
PROMPTS = {"SA_SYSTEM_PROMPT": "S. ", "PBL_SYSTEM_PROMPT": "P. ", "MSR_PROMPT": "M. "}
HASHES = {k: hashlib.sha256(v.encode()).hexdigest() for k, v in PROMPTS.items()}

app = typer.Typer()
app.add_typer(leaderboard_app, name="leaderboard")  # as cli.py registers it


def lb(*args: str):
    result = CliRunner().invoke(app, ["leaderboard", *args], env={"COLUMNS": "250"})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def lb_json(*args: str):
    result = lb(*args, "--json")
    return result.exit_code, json.loads(result.stdout)


@pytest.fixture
def boards(tmp_path) -> Path:
    """A writable copy of the repository's leaderboards (submissions never touch the real one)."""
    dest = tmp_path / "leaderboards"
    dest.mkdir()
    for f in REPO_BOARDS.glob("*.json"):
        shutil.copy(f, dest / f.name)
    return dest


@pytest.fixture(scope="module")
def eval_run(tiny_janus, tmp_path_factory) -> Path:
    """A real run: the tiny Janus on three MMIE samples, judged over HTTP by a fake MMIE-Score
    (one reply unparseable, so the run holds an invalid judgment as real runs do)."""
    from fake_openai import FakeOpenAI, Reply
    from helpers import cli_json

    base = tmp_path_factory.mktemp("lb_eval")
    prompts = base / "prompts.py"
    prompts.write_text("".join(f"{k} = {v!r}\n" for k, v in PROMPTS.items()))
    replies = itertools.cycle(
        ["### Feedback\nGood.\n### Score\n5", "### Feedback\nhm", "### Score\n4"]
    )
    with pytest.MonkeyPatch.context() as mp, FakeOpenAI(lambda b: Reply(next(replies))) as srv:
        mp.setenv("IBENCH_HOME", str(base / "home"))
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("OPENAI_API_KEY", "sk-test")
        code, report = cli_json(
            "eval", "--model", str(tiny_janus), "--bench", "mmie:sample", "--limit", "3",
            "--max-new-tokens", "16", "--out", str(base / "run"), "--protocol", "mmie",
            "--protocol-file", str(prompts), "--allow-unofficial", "--judge-model", "MMIE-Score",
            "--judge-base-url", srv.url,
        )  # fmt: skip
    assert code == 0, report
    # eval does not record prompt hashes: the submitter declares them (see leaderboards/README)
    (base / "run" / "submission.json").write_text(json.dumps({"prompt_sha256": HASHES}))
    return base / "run"


@pytest.fixture
def run(eval_run, tmp_path) -> Path:
    """A private copy of the real run that a test may damage."""
    return Path(shutil.copytree(eval_run, tmp_path / "run"))


def submit(run_path: Path, boards: Path, *extra: str) -> tuple[int, dict]:
    return lb_json("submit", str(run_path), "--bench", "mmie", "--dir", str(boards), *extra)


def problems_of(outcome: dict) -> str:
    assert outcome["ok"] is False and outcome["row"] is None
    return "\n".join(outcome["problems"])


def edit_lines(path: Path, fn) -> None:
    """Rewrite a JSONL file: ``fn(records) -> lines`` (strings, written as they are)."""
    records = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    path.write_text("".join(line + "\n" for line in fn(records)))


def mmie_records(run_path: Path) -> list[tuple[int, dict]]:
    """(0-based line index, record) of every mmie judgment, in file order."""
    lines = (run_path / "judgments.jsonl").read_text().splitlines()
    return [(i, r) for i, r in enumerate(map(json.loads, lines)) if r["scorer"] == "mmie"]


def first_ok(run_path: Path) -> tuple[int, dict]:
    return next((i, r) for i, r in mmie_records(run_path) if r["status"] == "ok")


# --------------------------------------------------------------------------- published boards


def test_show_mmie_json_lists_every_published_row(boards):
    code, rows = lb_json("show", "mmie", "--dir", str(boards))
    assert code == 0 and len(rows) == 22
    cols = ("situational_analysis", "project_based_learning", "multi_step_reasoning")
    for r in rows:
        assert r["model"] and r["source"] and isinstance(r["comparable"], bool)
        assert all(isinstance(r[c], float) for c in cols) and r["scale"] == "0-100"
    site = [r for r in rows if r["source"].startswith("mmie-bench.github.io")]
    seed = [r for r in rows if r["source"].startswith("arXiv 2603.09538")]
    assert len(site) == 20 and all(r["comparable"] for r in site)
    assert len(seed) == 2 and not any(r["comparable"] for r in seed)
    assert all(r["provenance"] == "reading-note" for r in seed)
    assert rows[0]["model"] == "GPT-4o | SD-XL" and rows[0]["overall"] == 65.47  # best first
    code, by_msr = lb_json("show", "mmie", "--dir", str(boards), "--sort", "Multi-step reasoning")
    assert [r["multi_step_reasoning"] for r in by_msr][:4] == [60.05] * 4
    bad = lb("show", "mmie", "--dir", str(boards), "--sort", "speed")
    assert bad.exit_code == 2 and "unknown column 'speed'" in bad.stderr
    text = lb("show", "interleavedbench", "--dir", str(boards))
    assert (
        text.exit_code == 0 and "Human ratings" in text.stdout and "GPT-4o + DALLE3" in text.stdout
    )


def test_published_numbers_agree_with_their_own_aggregation_rules():
    """Catches transcription slips: each overall must follow from its columns by the benchmark's
    rule (MMIE: micro-average over 5,005/11,482/3,616 items; the others: mean of the columns)."""
    root = leaderboards_dir(REPO_BOARDS)
    sizes = {"situational_analysis": 5005, "project_based_learning": 11482}
    sizes["multi_step_reasoning"] = 3616
    counts = {}
    for bench, spec in SPECS.items():
        board = load_board(bench, root, submissions=False)
        assert board.official["protocol"] == spec.protocol
        assert spec.table in board.tables and not board.problems
        counts[bench] = len(board.rows)
        for r in board.rows:
            s = r["scores"]
            if bench == "mmie":
                expect = sum(s[k] * n for k, n in sizes.items()) / sum(sizes.values())
            else:
                expect = sum(s.values()) / len(s)
            assert abs(expect - r["overall"]) < 0.02, (bench, r["model"], expect)
    assert counts == {"mmie": 22, "interleavedbench": 12, "opening": 11}


# --------------------------------------------------------------------------- a real submission


def test_eval_run_is_accepted_and_appears_in_show_and_site(run, boards, tmp_path):
    code, outcome = submit(run, boards, "--subset", "mmie-sample-3", "--name", "Tiny Janus")
    assert code == 0, outcome
    row = outcome["row"]
    assert row["subset"] == "mmie-sample-3" and row["comparable"] is False
    assert row["evidence"]["counts"] == {"valid": 2, "invalid": 1, "total": 3}
    assert row["evidence"]["prompt_sha256"] == HASHES and row["n"] == 2
    results = json.loads((run / "results.json").read_text())["results"]
    mmie = next(r for r in results if r["scorer"] == "mmie")
    assert row["overall"] == mmie["overall_percent"]  # the same number the run reported
    assert row["scores"]["situational_analysis"] == mmie["overall_percent"]
    assert row["ci"]["overall"][0] <= row["overall"] <= row["ci"]["overall"][1]
    written = [Path(p) for p in outcome["written"]]
    assert [p.parent for p in written] == [boards / "submissions" / "mmie"] * 2
    assert written[1].name == row["report"] and written[1].read_text().count("<article") == 3
    # the same run as an archive gives the same evidence, hence the same file
    archive = tmp_path / "run.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(run, arcname="run")
    code, again = submit(archive, boards, "--subset", "mmie-sample-3", "--name", "Tiny Janus")
    assert code == 0 and again["written"] == outcome["written"]
    code, rows = lb_json("show", "mmie", "--dir", str(boards))
    mine = [r for r in rows if r["model"] == "Tiny Janus"]
    assert len(rows) == 23 and len(mine) == 1 and mine[0]["subset"] == "mmie-sample-3"
    assert mine[0]["ci_overall"] == row["ci"]["overall"] and mine[0]["provenance"] == "submission"
    table = lb("show", "mmie", "--dir", str(boards))
    assert "Tiny Janus [subset: mmie-sample-3]" in table.stdout
    code, built = lb_json("build", "--out", str(tmp_path / "site"), "--dir", str(boards))
    assert code == 0 and built["warnings"] == []
    page = (tmp_path / "site" / "mmie.html").read_text()
    assert "Tiny Janus" in page and f'href="reports/mmie/{row["report"]}"' in page
    assert (tmp_path / "site" / "reports" / "mmie" / row["report"]).is_file()
    # 20 ranked published rows; the subset run and the 2 reading notes listed apart, unranked
    assert page.count('<tr data-i="') == 23 and page.count('<svg class="chart"') == 2
    others = [m for m, _ in _rows(page, "main-other")]
    assert len(_rows(page)) == 20 and len(others) == 3 and "Tiny Janus" in others


# --------------------------------------------------------------------------- bad submissions


def test_missing_files_and_bad_schema_are_refused(run, boards):
    (run / "judgments.jsonl").rename(run / "judgments.bak.jsonl")
    code, outcome = submit(run, boards, "--subset", "s")
    assert code == 1 and "missing judgments.jsonl" in problems_of(outcome)
    (run / "judgments.bak.jsonl").rename(run / "judgments.jsonl")
    first = mmie_records(run)[0][0]

    def corrupt(records):
        records[first]["status"] = "great"
        records[0]["scorer"] = 7
        return [json.dumps(r) for r in records]

    edit_lines(run / "judgments.jsonl", corrupt)
    (run / "results.json").write_text(json.dumps({"results": [{"benchmark": "mmie"}]}))
    code, outcome = submit(run, boards, "--subset", "s")
    text = problems_of(outcome)
    assert code == 1
    assert "judgments.jsonl line 1: scorer: expected str, got int" in text
    assert f"judgments.jsonl line {first + 1}: status: expected one of" in text
    assert "results.json: results[0].scorer: missing required key" in text


def test_incomplete_coverage_is_refused(run, boards):
    code, outcome = submit(run, boards)  # a mini-set run submitted as if it were all of MMIE
    assert code == 1
    assert (
        "coverage: the run covers the bundled mini set mmie:sample, limited to its first 3 "
        "samples (--limit), not the full mmie benchmark; pass --subset NAME" in problems_of(outcome)
    )
    second, gone = mmie_records(run)[1]
    edit_lines(
        run / "judgments.jsonl",
        lambda rs: [json.dumps(r) for i, r in enumerate(rs) if i != second],
    )
    code, outcome = submit(run, boards, "--subset", "s")
    assert code == 1
    expected = (
        f"coverage: 1 of 3 sample ids of mmie:sample have no mmie judgment: {gone['sample_id']}"
    )
    assert expected in problems_of(outcome)


def test_duplicate_sample_ids_are_refused(run, boards):
    first, rec = mmie_records(run)[0]
    edit_lines(
        run / "judgments.jsonl",
        lambda rs: [json.dumps(r) for r in rs] + [json.dumps(rs[first])],
    )
    code, outcome = submit(run, boards, "--subset", "s")
    assert code == 1
    assert f"duplicates: more than one mmie judgment for {rec['sample_id']} (lines" in (
        problems_of(outcome)
    )


def test_score_out_of_scale_is_refused(run, boards):
    first, rec = first_ok(run)

    def seven(records):
        records[first].update(overall=7.0, scores={"score": 7.0})
        return [json.dumps(r) for r in records]

    edit_lines(run / "judgments.jsonl", seven)
    code, outcome = submit(run, boards, "--subset", "s")
    text = problems_of(outcome)
    assert code == 1
    where = f"judgments.jsonl line {first + 1} ({rec['sample_id']})"
    assert f"scale: {where}: overall 7.0 is outside the protocol scale 0-6" in text
    assert f"parse rule reads {rec['overall']} from the raw reply" in text


def test_nan_and_infinity_are_refused(run, boards):
    first = first_ok(run)[0]
    second = next(i for i, _ in mmie_records(run) if i != first)

    def poison(records):
        records[first]["overall"] = "@NAN@"
        records[second]["cost"] = "@INF@"
        lines = [json.dumps(r) for r in records]
        return [x.replace('"@NAN@"', "NaN").replace('"@INF@"', "1e999") for x in lines]

    edit_lines(run / "judgments.jsonl", poison)
    code, outcome = submit(run, boards, "--subset", "s")
    text = problems_of(outcome)
    assert code == 1
    assert f"judgments.jsonl line {first + 1}: NaN is not allowed" in text
    assert f"judgments.jsonl line {second + 1}: cost is not a finite number" in text
    results = (run / "results.json").read_text()
    (run / "results.json").write_text(
        results.replace('"results": [', '"x": Infinity, "results": [')
    )
    assert "results.json: Infinity is not allowed" in problems_of(submit(run, boards)[1])


def test_claimed_aggregate_must_recompute(run, boards):
    doc = json.loads((run / "results.json").read_text())
    mmie = next(r for r in doc["results"] if r["scorer"] == "mmie")
    real = mmie["overall"]
    mmie["overall"] = 6.0
    mmie["by_category"]["situational_analysis"]["n"] = 3
    (run / "results.json").write_text(json.dumps(doc))
    code, outcome = submit(run, boards, "--subset", "s")
    text = problems_of(outcome)
    assert code == 1
    assert (
        f"aggregate: results.json claims overall 6.0 but the per-sample judgments recompute "
        f"to {real}" in text
    )
    assert "aggregate: by_category['situational_analysis'].n claimed 3, recomputed 2" in text


def test_comparable_claim_needs_declared_official_hashes(run, boards):
    # eval runs declare their prompt hashes in results.json; take them out to test the check
    doc = json.loads((run / "results.json").read_text())
    for r in doc["results"]:
        r["metadata"].pop("prompt_sha256", None)
    (run / "results.json").write_text(json.dumps(doc))
    (run / "submission.json").write_text(json.dumps({"comparable": True}))
    code, outcome = submit(run, boards)
    text = problems_of(outcome)
    assert code == 1
    assert "declaration: no prompt-template SHA-256 declared" in text
    assert "comparable: claimed, but official prompt hashes are required and none are declared" in (
        text
    )
    (run / "submission.json").write_text(json.dumps({"comparable": True, "prompt_sha256": HASHES}))
    text = problems_of(submit(run, boards, "--subset", "s")[1])
    assert (
        "comparable: claimed, but the declared prompt hashes are not the official ones "
        "(MSR_PROMPT, PBL_SYSTEM_PROMPT, SA_SYSTEM_PROMPT)" in text
    )
    (run / "submission.json").unlink()  # no declaration at all is refused too
    assert "no prompt-template SHA-256 declared" in problems_of(
        submit(run, boards, "--subset", "s")[1]
    )


def _zip(run_path: Path, dest: Path, extra: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(dest, "w") as zf:
        for f in sorted(run_path.rglob("*")):
            if f.is_file():
                zf.write(f, f"run/{f.relative_to(run_path)}")
        for name, data in extra.items():
            zf.writestr(name, data)
    return dest


def test_archive_with_zip_slip_entry_is_refused(run, boards, tmp_path):
    (tmp_path / "sub").mkdir()
    archive = _zip(run, tmp_path / "sub" / "run.zip", {})
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr("../escaped.txt", b"gotcha")
        zf.writestr("run/../../escaped2.txt", b"gotcha")
    code, outcome = submit(archive, boards, "--subset", "s")
    text = problems_of(outcome)
    assert code == 1
    assert "archive entry '../escaped.txt' refused: entry '../escaped.txt' escapes" in text
    assert "archive entry 'run/../../escaped2.txt' refused" in text
    assert not list(tmp_path.rglob("escaped*.txt"))


def test_archive_over_the_size_limits_is_refused(run, boards, tmp_path, monkeypatch):
    archive = tmp_path / "run.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(run, arcname="run")
        blob = b"\0" * 300_000  # compresses to almost nothing: a small bomb
        info = tarfile.TarInfo("run/padding.txt")
        info.size = len(blob)
        tf.addfile(info, io.BytesIO(blob))
    small = intake.Limits(max_archive=archive.stat().st_size - 1)
    monkeypatch.setattr(intake, "DEFAULT_LIMITS", small)
    code, outcome = submit(archive, boards, "--subset", "s")
    assert code == 1
    assert f"run.tar.gz: archive is {archive.stat().st_size} bytes; the limit is" in (
        problems_of(outcome)
    )
    monkeypatch.setattr(intake, "DEFAULT_LIMITS", intake.Limits(max_total=200_000))
    code, outcome = submit(archive, boards, "--subset", "s")
    assert code == 1
    assert "archive rejected: run.tar.gz: more than 200000 bytes uncompressed (archive bomb?)" in (
        problems_of(outcome)
    )


def test_pickle_in_archive_is_refused(run, boards, tmp_path):
    payload = pickle.dumps({"weights": [1, 2, 3]})
    archive = _zip(
        run, tmp_path / "run.zip", {"run/extra/model.pkl": payload, "run/notes.json": payload}
    )
    code, outcome = submit(archive, boards, "--subset", "s")
    text = problems_of(outcome)
    assert code == 1
    assert "extra/model.pkl: pickle or binary model files are refused" in text
    assert "notes.json: pickle or binary model files are refused" in text  # caught by content
    (run / "hook.py").write_text("print('never run')\n")
    assert "hook.py: file type not accepted" in problems_of(submit(run, boards, "--subset", "s")[1])


# --------------------------------------------------------------------------- the site in Chromium


def _rows(dom: str, table_id: str = "main") -> list[tuple[str, str]]:
    """(model data-v, first score data-v) of each row of a table, in page order."""
    table = re.search(rf'<table class="lb" id="t-{table_id}">(.*?)</table>', dom, re.S)
    assert table is not None
    return re.findall(
        r'<tr data-i="\d+"><td class="num" data-v="[^"]*">[^<]*</td>'
        r'<td class="model" data-v="([^"]*)">.*?</td><td class="num" data-v="([^"]*)"',
        table.group(1),
        re.S,
    )


def test_site_renders_sorts_and_never_runs_injected_text(run, boards, tmp_path):
    # helpers of the report's browser test: headless flags, a local server that records hits
    from test_report import _browse, _chromium, _dump, _pay, _Site

    exe = _chromium()
    name = f'<script>{_pay(1)}</script><img src=x onerror="{_pay(2)}">'
    subset = f'"><svg onload="{_pay(3)}">'
    code, outcome = submit(run, boards, "--subset", subset, "--name", name)
    assert code == 0, outcome
    site = tmp_path / "site"
    assert lb("build", "--out", str(site), "--dir", str(boards)).exit_code == 0
    html = (site / "mmie.html").read_text("utf-8")
    assert name not in html and subset not in html and html.count("<script") == 1
    assert "&lt;script&gt;window.__pwned=1;" in html and "&quot;&gt;&lt;svg onload=" in html
    shot = tmp_path / "shot.png"
    page = (site / "mmie.html").resolve().as_uri()
    _browse(exe, tmp_path / "p0", f"--screenshot={shot}", "--window-size=1200,1600", page)
    with Image.open(shot) as img:
        colors = img.convert("RGB").getcolors(maxcolors=1 << 16)
    assert colors is None or len(colors) > 1  # not blank
    no_csp = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", html)
    (site / "nocsp.html").write_text(no_csp, encoding="utf-8")
    raw = f"<script>{_pay(99)}</script></body>"
    (site / "control.html").write_text(no_csp.replace("</body>", raw), encoding="utf-8")
    with _Site(site) as srv:
        sorted_dom = _dump(
            exe, tmp_path / "p1", srv.url("mmie.html#sort=situational_analysis&dir=asc")
        )
        plain_dom = _dump(exe, tmp_path / "p2", srv.url("nocsp.html"))
        assert srv.hits == ["/mmie.html", "/nocsp.html"]  # nothing injected ran or fetched
        _dump(exe, tmp_path / "p3", srv.url("control.html"))
        assert "/pwned?99" in srv.hits[2:]  # the detector sees a script that does run
    for dom in (sorted_dom, plain_dom):
        assert 'data-js="ready"' in dom and not re.search(r"<[a-z][^<>]*\sdata-pwned=", dom)
    # sorted by situational analysis, low first: EMU-2 (39.65) leads, the order is ascending
    rows = _rows(sorted_dom)
    values = [float(v) for _, v in rows]
    assert len(rows) == 20 and values == sorted(values) and rows[0][0] == "EMU-2"
    assert 'data-key="situational_analysis" data-type="num" aria-sort="ascending"' in sorted_dom
    built = [v for _, v in _rows(html)]
    assert [v for _, v in _rows(plain_dom)] == built != values  # no #sort: the built order
