"""Downloads through the real huggingface_hub client against a Hub served on 127.0.0.1."""

from pathlib import Path

import huggingface_hub.constants
import pytest
from fake_hub import COMMIT, FakeHub
from helpers import cli_json, run_cli

from interleave_bench import load_benchmark
from interleave_bench.benchmarks.base import MINISET_DIR


def files_of(name: str) -> dict[str, bytes]:
    base = MINISET_DIR / name
    return {p.relative_to(base).as_posix(): p.read_bytes() for p in base.rglob("*") if p.is_file()}


@pytest.fixture
def hub(monkeypatch):
    repos = {
        ("dataset", "MMIE/MMIE"): files_of("mmie"),
        ("model", "mqliu/InterleavedBench"): files_of("interleavedbench")
        | {"src/interleavedeval_gpt4o.py": b"# not fetched"},
        ("dataset", "shuaishuaicdp/ISG-Bench"): files_of("isg") | {"Task_0001/out.json": b"{}"},
        ("dataset", "MMIE/Gated"): {},
    }
    with FakeHub(repos, gated={"MMIE/Gated"}) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        yield server


def test_download_mmie_pins_commit_and_extracts(hub, tmp_path):
    dest = tmp_path / "MMIE"
    code, report = cli_json("data", "download", "mmie", "--to", str(dest))
    assert code == 0, report
    assert report["total"] == 15 and report["missing_images"] == 1
    assert report["source"]["source"] == "hf://datasets/MMIE/MMIE"
    assert report["source"]["revision"] == COMMIT
    assert (dest / "images").is_dir() and (dest / "images.tar.gz").is_file()
    assert any(f"/resolve/{COMMIT}/data.json" in r for r in hub.requests)
    # a later load reads the local copy and still knows where it came from
    again = load_benchmark("mmie", dest)
    assert again.info.revision == COMMIT and len(again) == 15


def test_download_model_repo_only_wanted_files(hub, tmp_path):
    dest = tmp_path / "IB"
    code, report = cli_json("data", "download", "interleavedbench", "--to", str(dest))
    assert code == 0 and report["total"] == 12
    assert not (dest / "src").exists()
    assert (dest / "zipped_images" / "wiki_images_test").is_dir()
    assert any(r.startswith("HEAD /mqliu/InterleavedBench/resolve/") for r in hub.requests)


def test_default_location_downloads_on_first_load(hub):
    data = load_benchmark("isg")
    assert len(data) == 12 and data.info.source == "hf://datasets/shuaishuaicdp/ISG-Bench"
    assert not (Path(data.info.root) / "Task_0001").exists()
    n = len(hub.requests)
    load_benchmark("isg")
    assert len(hub.requests) == n  # the second load is local


def test_missing_and_gated_repos_are_clear(hub, tmp_path, monkeypatch):
    from interleave_bench.benchmarks import mmie

    monkeypatch.setattr(mmie.MMIE, "hub", mmie.HubSpec("MMIE/Gated", "dataset", ("*.json",)))
    result = run_cli("data", "download", "mmie", "--to", str(tmp_path / "x"))
    assert result.exit_code == 1
    assert "MMIE/Gated is gated: accept its terms" in result.stderr
    assert "Traceback" not in result.output
    monkeypatch.setattr(mmie.MMIE, "hub", mmie.HubSpec("MMIE/Nope", "dataset", ("*.json",)))
    result = run_cli("data", "download", "mmie", "--to", str(tmp_path / "y"))
    assert result.exit_code == 1 and "MMIE/Nope not found on the Hub" in result.stderr
