"""``ibench protocols list|fetch``: official prompt files fetched once (from the pinned URL,
served here by a local HTTP server on 127.0.0.1, or from a user's copy), SHA-256 checked, then
used offline by the scorers."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from helpers import run_cli

from interleave_bench.protocols import protocol_names
from interleave_bench.scorers import protocol_files
from interleave_bench.scorers.protocol_files import load_mmie_prompts, sha256_text

PROMPTS_PY = (
    'SA_SYSTEM_PROMPT = "Judge the story. "\n'
    'PBL_SYSTEM_PROMPT = "Judge the steps. "\n'
    'MSR_PROMPT = "Judge the math. "\n'
)
TEXTS = {
    "SA_SYSTEM_PROMPT": "Judge the story. ",
    "PBL_SYSTEM_PROMPT": "Judge the steps. ",
    "MSR_PROMPT": "Judge the math. ",
}


class FileServer:
    """Serves one byte string at every path, counting the requests."""

    def __init__(self, body: bytes) -> None:
        self.body, self.hits = body, 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.hits += 1
                self.send_response(200)
                self.send_header("Content-Length", str(len(server.body)))
                self.end_headers()
                self.wfile.write(server.body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/MMIE/prompts.py"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FileServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def pinned(monkeypatch):
    """Pin our stand-in prompts.py (file and constant hashes) in place of the official one."""
    monkeypatch.setattr(
        protocol_files, "MMIE_FILE_SHA256", hashlib.sha256(PROMPTS_PY.encode()).hexdigest()
    )
    monkeypatch.setattr(
        protocol_files, "MMIE_CONSTANTS", {k: sha256_text(v) for k, v in TEXTS.items()}
    )


def _listed(name: str) -> dict:
    result = run_cli("protocols", "list", "--json")
    assert result.exit_code == 0, result.output
    return {r["name"]: r for r in json.loads(result.stdout)}[name]


def test_fetch_downloads_the_pinned_file_and_scoring_then_runs_offline(pinned, monkeypatch):
    with FileServer(PROMPTS_PY.encode()) as server:
        monkeypatch.setattr(protocol_files, "MMIE_URL", server.url)
        monkeypatch.delenv("HF_HUB_OFFLINE")
        assert _listed("mmie")["prompt_files"][0]["cached"] is False
        result = run_cli("protocols", "fetch", "mmie")
        assert result.exit_code == 0, result.output
        assert "mmie: cached" in result.stdout
        again = run_cli("protocols", "fetch", "mmie")  # a second fetch downloads nothing
        assert again.exit_code == 0 and "already cached" in again.stdout
        assert server.hits == 1
    row = _listed("mmie")
    assert row["prompt"] == "cached" and row["prompt_files"][0]["cached"] is True
    assert row["comparable"] is True
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # server gone, network off: the cache serves
    prompts = load_mmie_prompts()
    assert prompts.official and prompts.texts == TEXTS


def test_fetch_offline_is_one_line_naming_the_url_and_from(pinned):
    result = run_cli("protocols", "fetch", "mmie")
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: offline")
    assert protocol_files.MMIE_URL in lines[0] and "--from FILE" in lines[0]
    assert _listed("mmie")["prompt_files"][0]["cached"] is False


def test_fetch_refuses_a_download_that_is_not_the_pinned_file(pinned, monkeypatch):
    with FileServer(b'SA_SYSTEM_PROMPT = "something else"\n') as server:
        monkeypatch.setattr(protocol_files, "MMIE_URL", server.url)
        monkeypatch.delenv("HF_HUB_OFFLINE")
        result = run_cli("protocols", "fetch", "mmie")
    assert result.exit_code == 1
    assert "is not the pinned" in result.output and server.url in result.output
    assert not _listed("mmie")["prompt_files"][0]["cached"]


def test_fetch_from_a_users_copy_is_checked_the_same_way(pinned, tmp_path):
    wrong = tmp_path / "edited.py"
    wrong.write_text(PROMPTS_PY + "# edited\n")
    result = run_cli("protocols", "fetch", "mmie", "--from", str(wrong))
    assert result.exit_code == 1 and str(wrong) in result.output and "SHA-256" in result.output
    assert not _listed("mmie")["prompt_files"][0]["cached"]
    right = tmp_path / "prompts.py"
    right.write_text(PROMPTS_PY)
    result = run_cli("protocols", "fetch", "mmie", "--from", str(right))
    assert result.exit_code == 0, result.output
    assert load_mmie_prompts().official  # HF_HUB_OFFLINE=1: read from the cache


def test_fetch_usage_errors_exit_2():
    unknown = run_cli("protocols", "fetch", "mmi")
    assert unknown.exit_code == 2 and "did you mean 'mmie'" in unknown.output
    nothing = run_cli("protocols", "fetch", "structure")
    assert nothing.exit_code == 2 and "no official prompt file" in nothing.output
    assert "mmie" in nothing.output


def test_list_shows_every_registered_protocol():
    result = run_cli("protocols", "list", "--json")
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert sorted(rows) == protocol_names()
    assert rows["structure"]["kind"] == "offline" and rows["structure"]["comparable"] is False
    assert rows["interleaved_eval"]["prompt"] == "own rubric"
    assert rows["opening_scores"]["scale"] == "0-10"
    assert rows["opening_scores"]["benchmarks"] == ["opening"]
    assert (
        rows["opening_pairwise"]["prompt_files"][0]["sha256"]
        == (protocol_files.OPENING_FILES["judge_system"][1])
    )
    table = run_cli("protocols", "list")
    assert table.exit_code == 0
    assert all(name in table.stdout for name in rows)
    assert max(len(line) for line in table.stdout.splitlines()) <= 80
