import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

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
