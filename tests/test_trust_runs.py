"""Run folders under concurrency and crashes: one process per --out at a time (a killed holder
never blocks a rerun), and record files cut by a kill mid-write resume with a warning while damage
elsewhere is a clear error."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from fake_openai import FakeOpenAI, Reply
from helpers import cli_json, run_cli, write_opening_outputs
from test_score_cli import KEY, mmie_predictions, score_args

from interleave_bench.runs import (
    JsonlLog,
    RunFolderError,
    TornRecordWarning,
    folder_lock,
    read_jsonl,
)

LIMIT = 30.0  # seconds: the bound on every wait below (none is expected to come near it)
CUT_JSON = b'{"sample_id": "a", "tex'
CUT_UTF8 = b'{"sample_id": "a", "text": "caf' + "é".encode()[:1]


def ibench(*args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "interleave_bench", *args],
        env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_until(cond, what: str) -> None:
    deadline = time.monotonic() + LIMIT
    while not cond():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


# ------------------------------------------------------------------------------ the lock


def test_second_score_on_one_out_stops_at_once_naming_the_holder(tmp_path):
    preds, prompts = mmie_predictions(tmp_path)
    out = tmp_path / "out"
    gate = threading.Event()  # holds every judge reply until the second process has given up

    def script(body):
        gate.wait(LIMIT)
        return Reply()

    with FakeOpenAI(script) as server:
        args = [*score_args(server, preds, prompts, out), "--json"]
        first = ibench(*args, OPENAI_API_KEY=KEY)
        second = None
        try:
            wait_until(lambda: server.requests or first.poll() is not None, "the first request")
            assert first.poll() is None, first.communicate()[1][-2000:]
            second = ibench(*args, OPENAI_API_KEY=KEY)
            _, err2 = second.communicate(timeout=LIMIT)  # returns while the first is blocked
            assert not gate.is_set() and first.poll() is None
            gate.set()
            stdout, err1 = first.communicate(timeout=LIMIT)
        finally:
            gate.set()
            for proc in (first, second):
                if proc is not None and proc.poll() is None:
                    proc.kill()
                    proc.wait(LIMIT)
    assert second.returncode == 1
    assert f"in use by pid {first.pid}" in err2 and "ibench score" in err2
    assert "Traceback" not in err2 and len(err2.strip().splitlines()) == 1
    assert first.returncode == 0, err1[-2000:]
    assert json.loads(stdout)["counts"]["total"] == 15
    bodies = [json.dumps(b, sort_keys=True) for b in server.requests]
    assert len(bodies) == 16 and len(set(bodies)) == 16  # preflight + 15 items, each sent once
    records = list(read_jsonl(out / "judgments.jsonl"))
    assert len(records) == 15 and len({r["sample_id"] for r in records}) == 15


def hold_lock(out: Path) -> subprocess.Popen:
    """A process that takes the folder's lock and keeps it until killed."""
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from interleave_bench.runs import folder_lock\n"
        "lock = folder_lock(Path(sys.argv[1]), 'eval')\n"
        "lock.__enter__()\n"
        "print('held', flush=True)\n"
        "time.sleep(120)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def replay_eval_args(tmp_path: Path, out: Path) -> list[str]:
    folder = tmp_path / "Gold_output"
    if not folder.exists():
        write_opening_outputs(folder, limit=3)
    return [
        "eval",
        "--model",
        str(folder),
        "--model-type",
        "replay",
        "--bench",
        "opening:sample",
        "--limit",
        "3",
        "--out",
        str(out),
        "--no-report",
    ]


def pairwise_args(tmp_path: Path, out: Path) -> list[str]:
    for side in ("A", "B"):
        if not (tmp_path / f"{side}_output").exists():
            write_opening_outputs(tmp_path / f"{side}_output", limit=2)
    return [
        "score",
        "--bench",
        "opening:sample",
        "--predictions",
        str(tmp_path / "A_output"),
        "--predictions-b",
        str(tmp_path / "B_output"),
        "--protocol",
        "opening_pairwise",
        "--allow-unofficial",
        "--judge-base-url",
        "http://127.0.0.1:9/v1",  # never reached: the lock refuses first
        "--judge-model",
        "judge",
        "--out",
        str(out),
    ]


def test_every_run_path_refuses_a_held_folder_and_a_killed_holder_never_blocks(tmp_path):
    out = tmp_path / "run"
    holder = hold_lock(out)
    try:
        for args in (replay_eval_args(tmp_path, out), pairwise_args(tmp_path, out)):
            r = run_cli(*args)
            assert r.exit_code == 1, r.output
            assert f"in use by pid {holder.pid}" in r.output and "--out" in r.output
            assert not (out / "manifest.json").exists()  # refused before touching the folder
        with (
            pytest.raises(RunFolderError, match=f"pid {holder.pid} on .*ibench eval"),
            folder_lock(out, "score"),
        ):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(LIMIT)
    assert (out / ".lock").read_text()  # the dead holder's note is still there ...
    code, report = cli_json(*replay_eval_args(tmp_path, out))
    assert code == 0 and report["results"][0]["counts"]["total"] == 3  # ... and blocks nothing


# ------------------------------------------------------------------------------ torn lines


@pytest.mark.parametrize(
    "torn", [CUT_JSON, CUT_UTF8, CUT_JSON + b"\n"], ids=["cut-json", "cut-utf8", "bad-last-line"]
)
def test_log_reopened_after_a_kill_drops_only_the_torn_line(tmp_path, torn):
    path = tmp_path / "judgments.jsonl"
    path.write_bytes(b'{"sample_id": "x"}\n{"sample_id": "y"}\n' + torn)
    with pytest.warns(TornRecordWarning, match=r"judgments\.jsonl, line 3: cut short"):
        assert [r["sample_id"] for r in read_jsonl(path)] == ["x", "y"]
    with pytest.warns(TornRecordWarning, match="line 3"):
        log = JsonlLog(path)
    log.append({"sample_id": "z"})
    log.close()
    assert path.read_bytes() == b'{"sample_id": "x"}\n{"sample_id": "y"}\n{"sample_id": "z"}\n'


def test_bad_line_before_the_last_is_an_error_naming_file_and_line(tmp_path):
    path = tmp_path / "predictions.jsonl"
    before = b'{"sample_id": "x"}\n' + CUT_UTF8 + b'\n{"sample_id": "y"}\n'
    path.write_bytes(before)
    for read in (lambda: list(read_jsonl(path)), lambda: JsonlLog(path)):
        with pytest.raises(RunFolderError, match=r"predictions\.jsonl, line 2: not UTF-8"):
            read()
    assert path.read_bytes() == before  # nothing cut


def test_deeply_nested_record_is_an_error_not_a_recursion_error(tmp_path):
    path = tmp_path / "judgments.jsonl"
    deep = b'{"sample_id": "d", "x": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    path.write_bytes(b'{"sample_id": "x"}\n' + deep + b'\n{"sample_id": "y"}\n')
    with pytest.raises(RunFolderError, match=r"judgments\.jsonl, line 2: JSON nested more than"):
        list(read_jsonl(path))


def first_run(tmp_path: Path) -> tuple[Path, dict]:
    out = tmp_path / "run"
    code, report = cli_json(*replay_eval_args(tmp_path, out))
    assert code == 0
    return out, report


@pytest.mark.parametrize("torn", [CUT_JSON, CUT_UTF8], ids=["cut-json", "cut-utf8"])
def test_eval_resumes_after_a_kill_mid_write(tmp_path, torn):
    out, report = first_run(tmp_path)
    preds = (out / "predictions.jsonl").read_bytes().splitlines(keepends=True)
    judgments = (out / "judgments.jsonl").read_bytes().splitlines(keepends=True)
    assert len(preds) == len(judgments) == 3
    # killed while writing the third prediction: its judgment never happened
    (out / "predictions.jsonl").write_bytes(b"".join(preds[:2]) + torn)
    (out / "judgments.jsonl").write_bytes(b"".join(judgments[:2]) + torn)
    for done in ("results.json", "done"):
        (out / done).unlink()
    proc = ibench(*replay_eval_args(tmp_path, out), "--json")
    stdout, stderr = proc.communicate(timeout=LIMIT * 4)
    assert proc.returncode == 0, stderr[-2000:]
    warned = [line for line in stderr.splitlines() if "cut short" in line]
    assert [w.startswith("warning: ") for w in warned] == [True, True], stderr  # one tidy line each
    assert "predictions.jsonl, line 3: cut short" in warned[0] + warned[1]
    assert "judgments.jsonl, line 3: cut short" in warned[0] + warned[1]
    assert "TornRecordWarning" not in stderr and "warnings.warn" not in stderr
    again = json.loads(stdout)
    for r in again["results"] + report["results"]:
        r["metadata"].pop("seconds", None)
    assert again["results"] == report["results"]
    after = [json.loads(line) for line in (out / "predictions.jsonl").read_bytes().splitlines()]
    assert [p["sample_id"] for p in after] == [json.loads(p)["sample_id"] for p in preds]
    assert len((out / "judgments.jsonl").read_bytes().splitlines()) == 3


def test_eval_with_a_damaged_middle_line_is_a_one_line_error(tmp_path):
    out, _ = first_run(tmp_path)
    lines = (out / "predictions.jsonl").read_bytes().splitlines(keepends=True)
    damaged = lines[0] + b'{"sample_id": "a", "tex\n' + b"".join(lines[2:])
    (out / "predictions.jsonl").write_bytes(damaged)
    proc = ibench(*replay_eval_args(tmp_path, out))
    _, stderr = proc.communicate(timeout=LIMIT * 4)
    assert proc.returncode == 1
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert "predictions.jsonl, line 2: not JSON" in stderr
    assert (out / "predictions.jsonl").read_bytes() == damaged  # nothing lost
