import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from fake_openai import FakeOpenAI, Reply
from helpers import cli_json, run_cli

from interleave_bench import __version__
from interleave_bench.benchmarks.base import MINISET_DIR
from interleave_bench.registry import benchmarks

REPO = Path(__file__).resolve().parent.parent


def test_version_via_module_entry_point():
    out = subprocess.run(
        [sys.executable, "-m", "interleave_bench", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == f"interleave-bench {__version__}"


def test_data_list_json():
    code, rows = cli_json("data", "list")
    assert code == 0
    assert {r["name"] for r in rows} == {"mmie", "interleavedbench", "opening", "isg"}
    hubs = {r["name"]: r["hub"] for r in rows}
    assert hubs["mmie"] == "MMIE/MMIE" and hubs["interleavedbench"] == "mqliu/InterleavedBench"


def test_inspect_json_shape_and_counts():
    code, report = cli_json("data", "inspect", "opening:sample")
    assert code == 0
    assert report["total"] == 12 and report["missing_images"] == 0 and report["problems"] == []
    assert sum(report["by_category"].values()) == 12
    assert report["source"]["source"] == "bundled mini set"
    code, report = cli_json("data", "inspect", "mmie:sample", "--limit", "4")
    assert report["total"] == 4


def test_inspect_human_output_escapes_markup(copy_miniset):
    root = copy_miniset("isg")
    f = root / "ISG-Bench.jsonl"
    rows = [json.loads(x) for x in f.read_text().splitlines()]
    rows[0]["Category"] = "[bold red]HowTo[/]"
    f.write_text("\n".join(json.dumps(r) for r in rows))
    result = run_cli("data", "inspect", "isg", "--path", str(root), "--images", "none")
    assert "[bold red]HowTo[/]" in result.stdout


def test_unknown_benchmark_suggests():
    result = run_cli("data", "inspect", "mmei")
    assert result.exit_code == 2 and "did you mean 'mmie'" in result.stderr


def test_download_offline_is_a_clear_error(tmp_path):
    result = run_cli("data", "download", "mmie", "--to", str(tmp_path / "m"))
    assert result.exit_code == 1 and "HF_HUB_OFFLINE" in result.stderr
    assert "Traceback" not in result.output


def test_download_opening_from_archive(tmp_path):
    archive = tmp_path / "OpenING_ALL.zip"
    base = MINISET_DIR / "opening"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted(base.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(base).as_posix())
        zf.writestr("../outside.txt", "no")
    dest = tmp_path / "OpenING"
    code, report = cli_json(
        "data", "download", "opening", "--archive", str(archive), "--to", str(dest)
    )
    assert code == 0 and report["total"] == 12
    assert report["source"]["source"] == "archive OpenING_ALL.zip"
    assert report["source"]["revision"].startswith("sha256:")
    assert [p["field"] for p in report["problems"]] == ["../outside.txt"]
    assert not (tmp_path / "outside.txt").exists()
    again = run_cli("data", "inspect", "opening", "--path", str(dest), "--json")
    assert json.loads(again.stdout)["source"]["source"] == "archive OpenING_ALL.zip"


def test_validate_needs_a_path():
    assert run_cli("data", "validate", "mmie").exit_code == 2


def test_console_script_installed():
    exe = Path(sys.executable).parent / "ibench"
    out = subprocess.run(
        [str(exe), "data", "inspect", "isg:sample", "--json"],
        capture_output=True,
        text=True,
        env={**os.environ},
    )
    assert out.returncode == 0 and json.loads(out.stdout)["total"] == 12


def test_every_benchmark_has_a_data_card():
    for name in benchmarks.names():
        card = (REPO / "data_cards" / f"{name}.md").read_text()
        for section in (
            "Hosting",
            "Licence",
            "Size",
            "## Schema",
            "## How we map it",
            "## Scoring protocol in brief",
            "## Citation",
            "## Known pitfalls",
        ):
            assert section in card, f"{name}: {section}"


# ------------------------------------------------------------ judge options of `score` and `eval`


@pytest.fixture
def judge_configs(monkeypatch):
    """Every JudgeConfig a command builds its API judge from."""
    from interleave_bench import scoring

    seen = []

    class Recording(scoring.OpenAIJudge):
        def __init__(self, config):
            seen.append(config)
            super().__init__(config)

    monkeypatch.setattr(scoring, "OpenAIJudge", Recording)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    return seen


JUDGE_OPTIONS = [
    "--rpm", "100", "--tpm", "5000", "--deadline", "30", "--max-retries", "1",
    "--max-retry-wait", "0", "--judge-timeout", "7",
]  # fmt: skip


def _assert_options_reached(config, prices):
    assert config.requests_per_minute == 100 and config.tokens_per_minute == 5000
    assert config.deadline == 30 and config.max_retries == 1
    assert config.max_retry_wait == 0 and config.timeout == 7
    assert config.prices["j"] == (1.0, 2.0), prices


def test_eval_takes_the_judge_options_of_score(tmp_path, judge_configs):
    """eval's --rpm/--tpm/--deadline/--max-retries/--max-retry-wait/--judge-timeout/--price-table
    reach the judge client as score's do (the judge refuses the key: exit 1 before generating)."""
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"j": [1, 2]}))
    with FakeOpenAI(lambda body: Reply(status=401, message="bad key")) as server:
        result = run_cli(
            "eval", "--bench", "mmie:sample", "--limit", "1", "--protocol", "interleaved_eval",
            "--judge-base-url", server.url, "--judge-model", "j", "--out", str(tmp_path / "run"),
            "--price-table", str(prices), *JUDGE_OPTIONS,
        )  # fmt: skip
    assert result.exit_code == 1 and "not usable" in result.stderr, result.stderr
    assert len(judge_configs) == 1
    _assert_options_reached(judge_configs[0], prices)


def test_score_takes_max_retry_wait_and_judge_timeout(tmp_path, judge_configs):
    from test_score_cli import mmie_predictions

    preds, prompts = mmie_predictions(tmp_path)
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"j": [1, 2]}))
    with FakeOpenAI(lambda body: Reply(status=401, message="bad key")) as server:
        result = run_cli(
            "score", "--bench", "mmie", "--predictions", str(preds), "--protocol", "mmie",
            "--protocol-file", str(prompts), "--allow-unofficial", "--judge-base-url", server.url,
            "--judge-model", "j", "--out", str(tmp_path / "out"), "--price-table", str(prices),
            *JUDGE_OPTIONS,
        )  # fmt: skip
    assert result.exit_code == 1 and "not usable" in result.stderr, result.stderr
    _assert_options_reached(judge_configs[-1], prices)


def test_eval_retry_options_bound_a_rate_limited_judge(tmp_path, monkeypatch):
    """A judge that asks for an hour's pause on every call: eval --max-retries 1
    --max-retry-wait 0 gives up after two requests at once instead of sleeping."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    hour = Reply(status=429, headers={"Retry-After": "3600"})
    with FakeOpenAI(lambda body: hour) as server:
        result = run_cli(
            "eval", "--bench", "mmie:sample", "--limit", "1", "--protocol", "interleaved_eval",
            "--judge-base-url", server.url, "--judge-model", "j", "--out", str(tmp_path / "run"),
            "--max-retries", "1", "--max-retry-wait", "0",
        )  # fmt: skip
        sent = len(server.requests)
    assert result.exit_code == 1 and "429" in result.stderr, result.stderr
    assert sent == 2
