"""Issue 16 items 5 and 6: listings, run comparison, several benchmarks per eval, score --limit,
per-aspect tables, judge summaries, consoles that fit 80 columns, the API-key and bare-name
model errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import typer.main
from helpers import cli_json, run_cli

from interleave_bench.cli import app
from interleave_bench.cli.output import judge_line, out, print_result
from interleave_bench.runs import RunFolder
from interleave_bench.types import Result, RunResults


def test_models_list_names_families_capabilities_and_tiny_variants():
    code, rows = cli_json("models", "list")
    assert code == 0
    by = {r["family"]: r for r in rows}
    assert {"janus", "emu3", "text", "replay", "pipeline"} <= set(by)
    assert by["janus"]["tiny"] == "tiny:janus" and "rollout" in by["janus"]["capabilities"]
    assert by["replay"]["tiny"] is None and by["replay"]["capabilities"] == ["generate"]
    table = run_cli("models", "list")
    assert table.exit_code == 0 and "tiny:text" in table.stdout


def test_models_tiny_without_a_folder_builds_what_tiny_name_uses():
    r = run_cli("models", "tiny", "text")
    assert r.exit_code == 0, r.output
    path = r.stdout.split("tiny text:", 1)[1].strip()
    assert os.path.isfile(os.path.join(path, "config.json"))


def _run(folder, benchmark, overall, cats, judge=None, comparable=False):
    folder.mkdir(parents=True)
    result = Result(
        benchmark=benchmark,
        scorer="mmie",
        protocol="mmie-v1",
        overall=overall,
        judge=judge,
        by_category={c: {"mean": m, "n": 2} for c, m in cats.items()},
        counts={"valid": 2, "invalid": 0, "error": 0, "total": 2},
        comparable=comparable,
    )
    RunFolder(folder, "score").write_results(RunResults(results=[result]))
    return folder


def test_runs_compare_table_json_and_escaped_html(tmp_path):
    a = _run(tmp_path / "a", "mmie", 4.123456, {"math": 4.0, "<b>x</b>": 3.5}, judge="gpt-4o")
    b = _run(tmp_path / "b", "mmie", 3.0, {"math": 2.5}, comparable=True)
    code, data = cli_json("runs", "compare", str(a), str(b))
    assert code == 0
    assert [r["overall"] for r in data["runs"]] == [4.123456, 3.0]
    assert data["runs"][0]["judge"] == "gpt-4o" and data["runs"][1]["comparable"] is True
    assert data["runs"][0]["by_category"] == {"math": 4.0, "<b>x</b>": 3.5}
    assert data["runs"][0]["counts"]["total"] == 2
    page = tmp_path / "cmp.html"
    r = run_cli("runs", "compare", str(a), str(b), "--html", str(page))
    assert r.exit_code == 0 and "4.123" in r.stdout and "4.123456" not in r.stdout
    text = page.read_text()
    assert "&lt;b&gt;x&lt;/b&gt;" in text and "<b>x</b>" not in text and "gpt-4o" in text


def test_runs_compare_a_folder_without_results_is_one_line_exit_1(tmp_path):
    (tmp_path / "empty").mkdir()
    r = run_cli("runs", "compare", str(tmp_path / "empty"))
    assert r.exit_code == 1 and "no results.json" in r.stderr and "Traceback" not in r.output


def test_eval_runs_several_benchmarks_one_folder_each(tmp_path, tiny_text):
    r = run_cli(
        "eval", "--model", str(tiny_text), "--bench", "mmie:sample,isg:sample",
        "--limit", "1", "--max-new-tokens", "4", "--out", str(tmp_path / "multi"),
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    for name in ("mmie_sample", "isg_sample"):
        results = RunFolder(tmp_path / "multi" / name, "eval").read_results()
        assert results.results[0].counts["total"] == 1
        assert results.results[0].benchmark == name.split("_")[0]


def test_eval_of_several_benchmarks_runs_them_all_and_exits_with_the_worst(tmp_path, tiny_text):
    r = run_cli(
        "eval", "--model", str(tiny_text), "--bench", "nosuchbench:sample,isg:sample",
        "--limit", "1", "--max-new-tokens", "4", "--out", str(tmp_path / "multi"),
    )  # fmt: skip
    assert r.exit_code == 2, r.output  # the unknown benchmark's usage error
    results = RunFolder(tmp_path / "multi" / "isg_sample", "eval").read_results()
    assert results.results[0].counts["total"] == 1  # the next benchmark still ran


def test_score_limit_scores_the_first_n(tmp_path, tiny_text):
    run = tmp_path / "run"
    r = run_cli(
        "eval", "--model", str(tiny_text), "--bench", "mmie:sample", "--limit", "3",
        "--max-new-tokens", "4", "--out", str(run),
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    code, data = cli_json(
        "score", "--bench", "mmie:sample", "--predictions", str(run), "--protocol", "structure",
        "--limit", "2", "--out", str(tmp_path / "s"),
    )  # fmt: skip
    assert code == 0 and data["counts"]["total"] == 2


def test_aspect_and_criterion_means_are_printed():
    r = Result(
        benchmark="interleavedbench", scorer="interleaved_eval", protocol="v1", overall=3.456789,
        by_category={"t": {"mean": 3.0, "n": 1}}, counts={"valid": 1, "total": 1}, scale="0-5",
        metadata={"aspects": {"text_quality": 4.25, "image_quality": 2.0}},
    )  # fmt: skip
    with out.capture() as cap:
        print_result(r)
    text = cap.get()
    assert "text_quality" in text and "4.25" in text and "image_quality" in text
    assert "3.457" in text and "3.456789" not in text


def test_judge_summary_is_readable_and_rounded():
    line = judge_line(
        {"calls": 12, "cache_hits": 3, "errors": 1, "prompt_tokens": 1000,
         "completion_tokens": 234, "cost": 0.005249999999999999, "over_budget": 0}
    )  # fmt: skip
    assert line == "judge: 12 calls, 3 cache hits, 1 errors, 1,234 tokens, cost $0.0052"


def _help(*cmd: str) -> str:
    env = {**os.environ, "COLUMNS": "80"}
    res = subprocess.run(
        [sys.executable, "-m", "interleave_bench", *cmd, "--help"],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    return res.stdout


@pytest.mark.parametrize("command", ["score", "eval"])
def test_help_at_80_columns_shows_every_option_name_uncut(command):
    text = _help(command)
    assert max(len(line) for line in text.splitlines()) <= 80
    words = set(text.replace(",", " ").replace("/", " ").split())
    params = typer.main.get_command(app).commands[command].params  # type: ignore[attr-defined]
    for p in params:
        for name in p.opts + p.secondary_opts:
            assert name in words, name
    for name in ("--judge-model", "--limit"):
        line = next(ln for ln in text.splitlines() if ln.strip().startswith(name))
        assert len(line.split()) > 2, line  # the option, its metavar, and help text


def test_missing_api_key_on_the_default_endpoint_is_named_first(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    preds = tmp_path / "p.jsonl"
    from interleave_bench.benchmarks import load_benchmark

    first = next(iter(load_benchmark("mmie:sample", None, download=False))).id
    preds.write_text(json.dumps({"sample_id": first, "model": "m", "output": []}) + "\n")
    r = run_cli(
        "score", "--bench", "mmie:sample", "--predictions", str(preds), "--protocol", "mmie",
        "--judge-model", "gpt-4o", "--out", str(tmp_path / "o"),
    )  # fmt: skip
    assert r.exit_code == 1, r.output
    assert r.stderr.strip() == (
        "error: OPENAI_API_KEY is not set: the default judge endpoint (api.openai.com) needs an "
        "API key; export it, or pass --judge-base-url for another server"
    )
    assert not (tmp_path / "o" / "judgments.jsonl").exists()  # no judge request was made


def test_a_bare_model_name_is_not_called_not_a_hub_id(tmp_path):
    r = run_cli("eval", "--model", "gpt2", "--bench", "mmie:sample", "--out", str(tmp_path / "o"))
    assert r.exit_code == 1
    assert "no local folder gpt2 and HF_HUB_OFFLINE is set" in r.stderr
    assert "Hub id" not in r.stderr


def test_local_data_is_data_everywhere_and_path_still_works(tmp_path):
    """`--data` names the local copy in every command; `--path`, the old name in `data inspect`
    and `data validate`, stays an alias."""
    import shutil

    from interleave_bench.benchmarks.base import MINISET_DIR

    copy = tmp_path / "isg"  # validating extracts images.zip: never into the package itself
    shutil.copytree(MINISET_DIR / "isg", copy)
    for command in ("inspect", "validate"):
        for flag in ("--data", "--path"):
            code, data = cli_json("data", command, "isg", flag, str(copy))
            assert code == 0 and data["total"] > 0, (command, flag, data)
    for command in ("score", "eval"):
        assert "--data" in run_cli(command, "--help").output


@pytest.mark.parametrize("bench", ["mmie", "opening", "interleavedbench"])
def test_leaderboard_show_fits_80_columns(bench):
    """Every line within 80 columns, every model name whole, rank, overall, comparable and status
    shown (per-category columns where they fit; --json has everything)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "COLUMNS": "80", "HF_HUB_OFFLINE": "1"}
    r = subprocess.run(
        [sys.executable, "-m", "interleave_bench", "leaderboard", "show", bench],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, r.stdout
    code, rows = cli_json("leaderboard", "show", bench)
    assert code == 0
    text = " ".join(" ".join(line.split()) for line in lines)
    for row in rows:
        assert all(word in text for word in row["model"].split()), row["model"]
    assert "comp." in r.stdout and "status" in r.stdout and "…" not in r.stdout
